"""Rows/s and peak memory of `data check` and `data prepare` (with near-dup) on synthetic chat rows.

Beside them, the plain path with no checks at all: `datasets.load_dataset("json")`, as TRL users
load their data. Each measurement runs in its own process so peak RSS is its own.

    python benchmarks/data_throughput.py --rows 200000
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

WORDS = [
    "account",
    "card",
    "loan",
    "fee",
    "transfer",
    "savings",
    "mortgage",
    "branch",
    "interest",
    "limit",
    "payment",
    "app",
    "login",
    "salary",
    "swish",
    "pin",
    "block",
    "travel",
    "student",
    "joint",
    "overdraft",
    "dispute",
    "deposit",
    "rate",
    "statement",
]


def synthesize(path: Path, rows: int, seed: int = 0) -> None:
    """Write chat rows with ~2% exact duplicates, ~2% near duplicates and ~1% defects."""
    rng = random.Random(seed)
    made = []
    with open(path, "w") as handle:
        for index in range(rows):
            roll = rng.random()
            if made and roll < 0.02:
                line = rng.choice(made)
            elif made and roll < 0.04:
                line = rng.choice(made).replace("?", " ?", 1)
            elif roll < 0.05:
                line = '{"messages": [{"role": "bot", "content": "x"}]}'
            else:
                question = " ".join(rng.choices(WORDS, k=rng.randint(6, 14))) + f" {index}?"
                answer = " ".join(rng.choices(WORDS, k=rng.randint(15, 40))) + "."
                line = json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": question},
                            {"role": "assistant", "content": answer},
                        ]
                    }
                )
                if len(made) < 5000:
                    made.append(line)
            handle.write(line + "\n")


def measure(code: str) -> tuple[float, float]:
    """Run `code` in a fresh interpreter; return (seconds, peak RSS in MiB)."""
    script = (
        "import time, resource; t=time.perf_counter()\n"
        + code
        + "\nprint(time.perf_counter()-t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise SystemExit(result.stderr)
    seconds, peak_kib = result.stdout.strip().splitlines()[-1].split()
    return float(seconds), int(peak_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chat.jsonl"
        synthesize(data, args.rows)
        config = Path(tmp) / "data.yaml"
        config.write_text(f"sources:\n  - path: {data}\nmodel: null\n")
        cases = {
            "datasets.load_dataset (no checks)": f"""
                import datasets; datasets.disable_progress_bars()
                datasets.load_dataset("json", data_files="{data}", split="train", cache_dir="{tmp}/hf")""",
            "specialize data check": f"""
                from specialize.data.validate import check_files
                check_files(["{data}"])""",
            "specialize data prepare (exact + near dedup)": f"""
                from specialize.data.config import load_data_config
                from specialize.data.prepare import prepare
                prepare(load_data_config("{config}"), "{tmp}/out", progress=False)""",
        }
        print(f"{args.rows:,} synthetic chat rows, {data.stat().st_size / 2**20:.0f} MiB")
        print(f"{'path':48} {'seconds':>8} {'rows/s':>10} {'peak MiB':>9}")
        baseline = None
        for name, code in cases.items():
            seconds, peak = measure(textwrap.dedent(code))
            rate = args.rows / seconds
            baseline = baseline or rate
            print(
                f"{name:48} {seconds:8.1f} {rate:10,.0f} {peak:9.0f}   ({rate / baseline:.2f}x the plain load)"
            )


if __name__ == "__main__":
    main()
