"""Where the time of a few LoRA SFT steps goes: a torch.profiler table of specialize's training path.

    python benchmarks/profile_train.py                          # default model, 3 steps of batch 8
    python benchmarks/profile_train.py --model DIR --steps 2 --rows 16

The same synthetic chat rows as train_throughput.py; the model load and data preparation run before
the profiler starts, so the table holds training steps (forward, backward, optimizer) only.
Sorted by self CPU time: the ops that dominate are the ones to work on.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from train_throughput import synthesize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--dropout", type=float, default=0.05, help="LoRA dropout (the recipes' 0.05)"
    )
    parser.add_argument("--by-shape", action="store_true", help="one row per op and input shapes")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    args = parser.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    from specialize.config import build_config
    from specialize.data.config import DataConfig, SourceConfig, SplitConfig
    from specialize.data.prepare import prepare
    from specialize.train.config import RecipeConfig
    from specialize.train.run import train

    class Profile(TrainerCallback):
        """Profile from the first step's start to the end of training."""

        def __init__(self, shapes: bool):
            self.profiler = profile(activities=[ProfilerActivity.CPU], record_shapes=shapes)

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self.profiler.__enter__()

        def on_train_end(self, args, state, control, **kwargs):
            self.profiler.__exit__(None, None, None)

    probe = Profile(args.by_shape)
    with tempfile.TemporaryDirectory() as tmp:
        raw, data = Path(tmp) / "raw.jsonl", Path(tmp) / "data"
        synthesize(raw, args.rows)
        prepare(
            DataConfig(
                sources=[SourceConfig(path=str(raw))],
                model=args.model,
                max_length=512,
                split=SplitConfig(val=0, test=0),
            ),
            data,
            progress=False,
        )
        recipe = build_config(
            RecipeConfig,
            {
                "model": args.model,
                "method": "sft",
                "data": {"train": [str(data)]},
                "adaptation": {
                    "kind": "lora",
                    "lora": {"r": 16, "alpha": 32, "dropout": args.dropout},
                },
                "training": {
                    "epochs": 1,
                    "max_steps": args.steps,
                    "batch_size": args.batch,
                    "max_length": 512,
                    "warmup_ratio": 0.0,
                    "precision": args.precision,
                },
                "eval": {"every_steps": 100000, "patience": None},
                "output": {"dir": f"{tmp}/out"},
                "retention": {"suite": "none"},
            },
        )
        from specialize.train import trainer as trainer_module

        build = trainer_module.build_trainer

        def with_probe(*a, **kw):
            bundle = build(*a, **kw)
            bundle.trainer.add_callback(probe)
            return bundle

        trainer_module.build_trainer = (
            with_probe  # benchmark-only hook: the profiler joins the callbacks
        )
        train(recipe, progress=False)
    print(
        f"model {args.model}; {args.steps} steps of batch {args.batch}; threads {torch.get_num_threads()}"
    )
    print(
        probe.profiler.key_averages(group_by_input_shape=args.by_shape).table(
            sort_by="self_cpu_time_total", row_limit=args.top
        )
    )
    print(json.dumps({"threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
