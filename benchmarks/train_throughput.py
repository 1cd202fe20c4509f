"""Training speed and memory: specialize's SFT path beside a plain TRL SFTTrainer, same model, data and LoRA.

Both paths see the same prepared chat rows once (one epoch, same batch size, same LoRA r/alpha/
targets, same max_length). Real tokens/s counts only non-padding tokens: the same total for both,
divided by each path's train_runtime. Each path runs in its own process so peak memory is its own.

    python benchmarks/train_throughput.py                 # the default model, 192 rows
    python benchmarks/train_throughput.py --model DIR --rows 64

"TRL defaults" is SFTTrainer as its docs show it: bf16=True (TRL's default), padded batches, plus
use_cpu=True on a CPU (without it transformers refuses bf16 there). On a CPU without native bf16
that default is very slow, so that path runs only --trl-default-steps steps, measured over those.
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
    "customer",
    "adviser",
]


def synthesize(path: Path, rows: int, seed: int = 0) -> None:
    """Write chat rows with varied lengths (the case where padding costs most)."""
    rng = random.Random(seed)
    with open(path, "w") as handle:
        for index in range(rows):
            question = " ".join(rng.choices(WORDS, k=rng.randint(5, 20))) + f" (case {index})?"
            answer = (
                ". ".join(
                    " ".join(rng.choices(WORDS, k=rng.randint(6, 14)))
                    for _ in range(rng.randint(1, 12))
                )
                + "."
            )
            handle.write(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": question},
                            {"role": "assistant", "content": answer},
                        ]
                    }
                )
                + "\n"
            )


SPECIALIZE_PATH = """
    import json, os
    from specialize.config import build_config
    from specialize.train.config import RecipeConfig
    from specialize.train.run import train
    recipe = build_config(RecipeConfig, {{
        "model": "{model}", "method": "sft", "data": {{"train": ["{data}"]}},
        "adaptation": {{"kind": "lora", "lora": {{"r": 16, "alpha": 32, "dropout": 0.0}}}},
        "training": {{"epochs": 1, "max_steps": {steps}, "batch_size": {batch}, "max_length": {max_length},
                      "learning_rate": 2e-4, "warmup_ratio": 0.0}},
        "eval": {{"every_steps": 100000, "patience": None}}, "output": {{"dir": "{out}"}},
        "retention": {{"suite": "none"}}}})  # training only: the TRL path measures no retention either
    run = train(recipe, progress=False)
    RESULT = {{"runtime_s": run.record().outcome["runtime_s"], "steps": run.record().outcome["steps"]}}
"""

TRL_PATH = """
    import json, torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    rows = [{{"messages": [m for m in json.loads(l)["messages"]]}} for l in open("{data}/train.jsonl")]
    tokenizer = AutoTokenizer.from_pretrained("{model_dir}")
    model = AutoModelForCausalLM.from_pretrained("{model_dir}")
    args = SFTConfig(output_dir="{out}", per_device_train_batch_size={batch}, max_steps={steps}, max_length={max_length},
                     learning_rate=2e-4, report_to=[], save_strategy="no", disable_tqdm=True, {extra})
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft)
    metrics = trainer.train().metrics
    RESULT = {{"runtime_s": metrics["train_runtime"], "steps": trainer.state.global_step}}
"""


def run_path(code: str, timeout: float | None = None) -> dict | None:
    """Run one path in a fresh interpreter; return its RESULT plus peak RSS (and GPU peak) in MiB.

    None when it did not finish within `timeout` seconds.
    """
    script = textwrap.dedent(code) + textwrap.dedent("""
        import resource, torch
        RESULT["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        RESULT["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        print("RESULT", json.dumps(RESULT))
    """)
    try:
        result = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return None
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    if result.returncode or line is None:
        raise SystemExit(result.stderr[-4000:])
    return json.loads(line[len("RESULT ") :])


def real_tokens(tokenizer, rows: list[dict], max_length: int) -> int:
    from specialize.data.templates import render_ids

    return sum(min(len(render_ids(tokenizer, r["messages"])), max_length) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rows", type=int, default=192)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--trl-default-steps", type=int, default=1)
    parser.add_argument(
        "--only", choices=["specialize", "trl"], help="Run only one side (the other is skipped)."
    )
    parser.add_argument(
        "--trl-default-timeout", type=float, default=600, help="Seconds allowed for that path."
    )
    args = parser.parse_args()

    from specialize.data.config import DataConfig, SourceConfig, SplitConfig
    from specialize.data.prepare import prepare
    from specialize.models.loading import load_tokenizer, resolve_model

    model_dir = resolve_model(args.model).path
    with tempfile.TemporaryDirectory() as tmp:
        raw, data = Path(tmp) / "raw.jsonl", Path(tmp) / "data"
        synthesize(raw, args.rows)
        prepare(
            DataConfig(
                sources=[SourceConfig(path=str(raw))],
                model=args.model,
                max_length=args.max_length,
                split=SplitConfig(val=0, test=0),
            ),
            data,
            progress=False,
        )
        rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
        steps = len(rows) // args.batch
        rows_seen = steps * args.batch
        tokens_per_row = real_tokens(load_tokenizer(args.model), rows, args.max_length) / len(rows)
        common = dict(
            model=args.model,
            model_dir=model_dir,
            data=data,
            batch=args.batch,
            max_length=args.max_length,
        )
        paths = {
            "specialize (auto precision, padding-free)": SPECIALIZE_PATH.format(
                **common, steps=steps, out=f"{tmp}/s"
            ),
            "TRL SFTTrainer, fp32, padded batches": TRL_PATH.format(
                **common, steps=steps, out=f"{tmp}/t1", extra="bf16=False"
            ),
            "TRL SFTTrainer defaults (bf16=True)": TRL_PATH.format(
                **common,
                steps=args.trl_default_steps,
                out=f"{tmp}/t2",
                extra="bf16=True, use_cpu=not torch.cuda.is_available()",
            ),
        }
        print(
            f"model {args.model}; {len(rows)} chat rows, ~{tokens_per_row:.0f} real tokens/row; batch {args.batch}; "
            f"LoRA r16 all-linear; max_length {args.max_length}"
        )
        print(
            f"{'path':44} {'steps':>5} {'seconds':>8} {'real tok/s':>10} {'peak RSS MiB':>12} {'ratio':>7}"
        )
        ours = None
        for name, code in paths.items():
            if args.only and not name.lower().startswith(args.only):
                continue
            slow_default = name.startswith("TRL SFTTrainer defaults")
            result = run_path(code, timeout=args.trl_default_timeout if slow_default else None)
            if result is None:
                bound = (
                    tokens_per_row * args.batch * args.trl_default_steps / args.trl_default_timeout
                )
                print(
                    f"{name:44} did not finish {args.trl_default_steps} step(s) in {args.trl_default_timeout:.0f} s: "
                    f"< {bound:,.0f} real tok/s, > {ours / bound:.0f}x slower"
                )
                continue
            rate = tokens_per_row * args.batch * result["steps"] / result["runtime_s"]
            ours = ours or rate
            gpu = f" (GPU peak {result['peak_gpu_mib']:.0f} MiB)" if result["peak_gpu_mib"] else ""
            print(
                f"{name:44} {result['steps']:5d} {result['runtime_s']:8.1f} {rate:10,.0f} {result['peak_rss_mib']:12,.0f} "
                f"{ours / rate:6.2f}x{gpu}"
            )
        print(
            f"ratio = specialize's real tokens/s divided by that path's ({rows_seen} rows per full pass)"
        )


if __name__ == "__main__":
    main()
