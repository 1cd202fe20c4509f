"""Seconds per conversation of `specialize simulate` on the nordvik scenarios and the default model,
and the whole set's time against its target (24 scenarios x 4 contestants in under 6 minutes).

The four contestants are the scenario file's base, prompt and rag rungs plus a tuned adapter: the
one given by --adapter (a run or adapter folder), or else a LoRA of the shipped recipe's shape
(r 16, all linear layers: sft.yaml) built with random weights, which costs what a trained one costs
per token. Conversations of one contestant advance together: each turn is one batched generation
across all its scenarios (--compare-unbatched runs the same subset again one conversation at a
time, as a loop over scenarios would).

    python benchmarks/simulate_speed.py                     # the whole set: 24 scenarios x 4
    python benchmarks/simulate_speed.py --limit 2           # a smoke run (2 scenarios x 4)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from specialize.simulate.config import Contestant, load_scenarios
from specialize.simulate.run import run_simulation

SCENARIOS = Path(__file__).resolve().parents[1] / "examples" / "nordvik" / "scenarios.yaml"
TARGET_SECONDS = 6 * 60  # the target for 24 scenarios x 4 contestants
FULL_SCENARIOS = 24
FULL_CONTESTANTS = 4


def random_adapter(model_ref: str, folder: Path) -> Path:
    """A LoRA of the shipped recipe's shape with random weights: the speed of a tuned adapter."""
    import torch
    from peft import LoraConfig, get_peft_model

    from specialize.models.loading import load_model

    torch.manual_seed(0)
    model, _ = load_model(model_ref)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def measure(args, batch_size: int, adapter: str) -> dict:
    overrides = [*args.set, f"batch_size={batch_size}", f"limit={args.limit}"]
    config = load_scenarios(args.file, overrides)
    config.contestants = [c for c in config.contestants if c.kind != "tuned"] + [
        Contestant(name="tuned", kind="tuned", adapter=adapter)
    ]
    if args.contestants:
        config.contestants = [c for c in config.contestants if c.name in args.contestants]
    # A fresh folder each time (a resumed run would time nothing); kept, so a run cut short still
    # leaves its finished conversations, each with its share of the time, in transcripts.jsonl.
    out = Path(tempfile.mkdtemp(prefix=f"simulate-speed-b{batch_size}-"))
    print(f"transcripts: {out / 'transcripts.jsonl'}", flush=True)
    started, cpu = time.monotonic(), time.process_time()
    report = run_simulation(config, out, scenario_file=args.file, progress=True)
    seconds, cpu = time.monotonic() - started, time.process_time() - cpu
    rows = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    held = sum(r["seconds"] for r in rows)  # turns, generation and checks; no loading
    per_contestant = {
        c.name: [r for r in rows if r["contestant"] == c.name] for c in config.contestants
    }
    conversations = len(rows)
    result = {
        "batch_size": batch_size,
        "scenarios": len(config.scenarios[: args.limit]),
        "contestants": [c.name for c in config.contestants],
        "conversations": conversations,
        "assistant_turns": sum(len(r["turns"]) for r in rows),
        "most_user_turns": max((len(r["turns"]) for r in rows), default=0),
        "seconds": round(seconds, 1),
        "seconds_per_conversation": round(seconds / max(1, conversations), 2),
        # CPU seconds of this process (every thread): on a machine shared with other jobs, wall
        # time measures the neighbours; this measures the work
        "cpu_seconds": round(cpu, 1),
        "cpu_seconds_per_conversation": round(cpu / max(1, conversations), 2),
        "setup_seconds": round(seconds - held, 1),
        "held_seconds_per_conversation": round(held / max(1, conversations), 2),
        "per_contestant": {
            name: {
                "conversations": len(found),
                "held_seconds_per_conversation": round(
                    sum(r["seconds"] for r in found) / max(1, len(found)), 2
                ),
                "pass_rate": report["contestants"][name]["pass_rate"],
            }
            for name, found in per_contestant.items()
        },
    }
    full = FULL_SCENARIOS * FULL_CONTESTANTS
    if conversations == full:
        result["whole_set_seconds"] = result["seconds"]
    else:  # a smaller run: setup once plus the measured time per conversation, for 96 of them
        # (pessimistic: a smaller run's batches are smaller, so each conversation costs more)
        result["whole_set_seconds_projected"] = round(
            result["setup_seconds"] + result["held_seconds_per_conversation"] * full
        )
    whole = result.get("whole_set_seconds", result.get("whole_set_seconds_projected"))
    result["target_seconds"] = TARGET_SECONDS
    result["meets_target"] = whole < TARGET_SECONDS
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=SCENARIOS)
    parser.add_argument(
        "--limit",
        "--scenarios",
        type=int,
        default=FULL_SCENARIOS,
        help=f"The first N scenarios (default {FULL_SCENARIOS}, the benchmark's set).",
    )
    parser.add_argument(
        "--contestants",
        default=None,
        help="Comma-separated names (default: base,prompt,rag,tuned).",
    )
    parser.add_argument("--adapter", default=None, help="The tuned contestant's run or adapter.")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--compare-unbatched", action="store_true")
    parser.add_argument("--set", action="append", default=[], help="Override a field: a.b=value.")
    parser.add_argument(
        "--out", type=Path, default=None, help="Also write the results here (JSON)."
    )
    args = parser.parse_args()
    args.contestants = args.contestants.split(",") if args.contestants else None
    adapter = args.adapter
    if adapter is None:
        model = load_scenarios(args.file, args.set).model
        adapter = str(random_adapter(model, Path(tempfile.mkdtemp(prefix="simulate-lora-"))))
    results = [measure(args, args.batch_size, adapter)]
    if args.compare_unbatched:
        results.append(measure(args, 1, adapter))
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
