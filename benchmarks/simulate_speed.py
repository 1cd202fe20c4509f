"""Seconds per conversation of `specialize simulate` on the nordvik scenarios and the default model.

Every chosen contestant meets every chosen scenario; conversations of one contestant advance
together, one batched generation per turn. With --compare-unbatched the same subset runs again
with batch_size 1 (one conversation at a time, what a loop over the scenarios would do).

    python benchmarks/simulate_speed.py                                  # the whole set
    python benchmarks/simulate_speed.py --scenarios 4 --contestants base,prompt
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from specialize.simulate.config import load_scenarios
from specialize.simulate.run import run_simulation

SCENARIOS = Path(__file__).resolve().parents[1] / "examples" / "nordvik" / "scenarios.yaml"


def measure(
    path: Path, scenarios: int | None, contestants: list[str] | None, batch_size: int, sets: list
) -> dict:
    overrides = [*sets, f"batch_size={batch_size}"] + ([f"limit={scenarios}"] if scenarios else [])
    config = load_scenarios(path, overrides)
    if contestants:
        config.contestants = [c for c in config.contestants if c.name in contestants]
    # A fresh folder each time (a resumed run would time nothing); kept, so a run cut short still
    # leaves its finished conversations, each with its share of the time, in transcripts.jsonl.
    out = Path(tempfile.mkdtemp(prefix=f"simulate-speed-b{batch_size}-"))
    print(f"transcripts: {out / 'transcripts.jsonl'}", flush=True)
    started = time.monotonic()
    report = run_simulation(config, out, scenario_file=path, progress=True)
    seconds = time.monotonic() - started
    lines = (out / "transcripts.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    turns = sum(len(r["turns"]) for r in rows)
    held = sum(r["seconds"] for r in rows)  # turns, generation and checks; no loading
    return {
        "batch_size": batch_size,
        "conversations": len(rows),
        "assistant_turns": turns,
        "seconds": round(seconds, 1),
        "seconds_per_conversation": round(seconds / max(1, len(rows)), 2),
        "setup_seconds": round(seconds - held, 1),
        "held_seconds_per_conversation": round(held / max(1, len(rows)), 2),
        "pass_rates": {
            name: {"mean": info["pass_rate"]["mean"], "n": info["pass_rate"]["n"]}
            for name, info in report["contestants"].items()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=SCENARIOS)
    parser.add_argument("--scenarios", type=int, default=None, help="Only the first N scenarios.")
    parser.add_argument("--contestants", default=None, help="Comma-separated names (default: all).")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--compare-unbatched", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="Override a field: a.b=value.")
    args = parser.parse_args()
    names = args.contestants.split(",") if args.contestants else None
    results = [measure(args.file, args.scenarios, names, args.batch_size, args.set)]
    if args.compare_unbatched:
        results.append(measure(args.file, args.scenarios, names, 1, args.set))
    full = len(load_scenarios(args.file).scenarios) * 4
    for result in results:
        result["projected_seconds_for_full_set_4_contestants"] = round(
            result["setup_seconds"] + result["held_seconds_per_conversation"] * full
        )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
