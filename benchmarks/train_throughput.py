"""Training speed and memory: specialize's SFT path beside plain TRL SFTTrainer paths, same model, data and LoRA.

Every path sees the same prepared chat rows once (one epoch, same batch size, same LoRA r/alpha/
targets, same max_length) and is then scored on the same held-out rows. Real tokens/s counts only
non-padding tokens: the same total for every path, divided by each path's train_runtime. Each path
runs in its own process so peak RSS (taken when training ends) is its own.

    python benchmarks/train_throughput.py                 # the default model, 192 rows
    python benchmarks/train_throughput.py --model DIR --rows 64

Paths, all in one run so their ratios share the machine's state:
- specialize (its defaults: auto precision, padding-free, selected-position loss), the same with
  `training.gradient_checkpointing: true` and `checkpoint_every: 3` (a third of the layers
  recomputed), and with every layer recomputed, its memory configuration (every method);
- TRL's best CPU configuration: fp32, gradient checkpointing off, padded and padding-free, and the
  same two in bf16 where the CPU runs bf16 natively (AVX512-BF16 or AMX): the fastest is the
  anchor of the speed ratio;
- TRL's defaults in fp32 (gradient checkpointing on), and where the CPU runs bf16 natively TRL's
  defaults as its docs show them (bf16=True): the latter, else the former, is the anchor of the
  memory ratio;
- with --bf16-default on a CPU without native bf16, TRL's bf16 defaults too, which are very slow
  there, so they run only --trl-default-steps steps;
- TRL's memory anchor and its best path in the CPU's fastest precision (the fastest TRL path in
  every run recorded in benchmarks/README.md) again with the CPU memory settings specialize makes
  on import (`specialize/cpu_memory.py`: page-aligned large blocks, a bounded oneDNN kernel
  cache): what those settings alone give TRL. Every other TRL path runs in the environment the
  benchmark was started in.
Validation loss: mean cross-entropy over the assistant tokens of the held-out rows, the same code
for every path (TRL trains on the whole conversation by default, specialize on the assistant's turns).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

# the environment as the benchmark was started, before importing specialize makes its CPU memory
# settings in it: TRL's paths run in this one, as a TRL user's would
START_ENV = dict(os.environ)
MEMORY_SETTINGS = "specialize's memory settings"

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


def synthesize(path: Path, rows: int, seed: int = 0, method: str = "sft") -> None:
    """Write rows with varied lengths (the case where padding costs most) in `method`'s layout:
    chat (sft), raw text (cpt), or preference pairs whose rejected answer is another row's (dpo, reward)."""
    rng = random.Random(seed)

    def answer() -> str:
        sentences = rng.randint(1, 12)
        return (
            ". ".join(" ".join(rng.choices(WORDS, k=rng.randint(6, 14))) for _ in range(sentences))
            + "."
        )

    with open(path, "w") as handle:
        for index in range(rows):
            question = " ".join(rng.choices(WORDS, k=rng.randint(5, 20))) + f" (case {index})?"
            reply = answer()
            if method == "cpt":
                row = {"text": f"{question} {reply}"}
            elif method in ("dpo", "reward"):
                row = {"prompt": question, "chosen": reply, "rejected": answer()}
            else:
                row = {
                    "messages": [
                        {"role": "user", "content": question},
                        {"role": "assistant", "content": reply},
                    ]
                }
            handle.write(json.dumps(row) + "\n")


SPECIALIZE_PATH = """
    import json, os
    from specialize.config import build_config
    from specialize.train.config import RecipeConfig
    from specialize.train.run import train
    recipe = build_config(RecipeConfig, {{
        "model": "{model}", "method": "{method}", "data": {{"train": ["{data}"]}},
        "adaptation": {{"kind": "lora", "lora": {{"r": 16, "alpha": 32, "dropout": 0.0}}}},
        "training": {{"epochs": 1, "max_steps": {steps}, "batch_size": {batch}, "max_length": {max_length},
                      "learning_rate": 2e-4, "warmup_ratio": 0.0, "precision": "{precision}",
                      "gradient_checkpointing": {checkpointing}, "checkpoint_every": {every}}},
        "eval": {{"every_steps": 100000, "patience": None}}, "output": {{"dir": "{out}"}},
        "retention": {{"suite": "none"}}}})  # training only: the TRL path measures no retention either
    run = train(recipe, progress=False)
    RESULT = {{"runtime_s": run.record().outcome["runtime_s"], "steps": run.record().outcome["steps"]}}
    PEAK = peak_rss_mib()
    if "{method}" == "sft":  # the held-out rows are scored for SFT only
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        from specialize.models.loading import load_tokenizer
        MODEL = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained("{model_dir}"), str(run.adapter))
        TOKENIZER = load_tokenizer("{model}")
"""

TRL_PATH = """
    import json, torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    rows = [json.loads(l) for l in open("{data}/train.jsonl")]
    rows = [{{k: r[k] for k in ("messages", "text", "prompt", "chosen", "rejected") if k in r}} for r in rows]
    tokenizer = AutoTokenizer.from_pretrained("{model_dir}")
    common = dict(output_dir="{out}", per_device_train_batch_size={batch}, max_steps={steps}, learning_rate=2e-4,
                  report_to=[], save_strategy="no", disable_tqdm=True, {extra})
    task = "SEQ_CLS" if "{method}" == "reward" else "CAUSAL_LM"
    peft = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type=task)
    if "{method}" in ("sft", "cpt"):
        from trl import SFTConfig, SFTTrainer
        model = AutoModelForCausalLM.from_pretrained("{model_dir}")
        packing = dict(packing=True) if "{method}" == "cpt" else {{}}
        args = SFTConfig(max_length={trl_max_length}, **packing, **common)
        trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft)
    elif "{method}" == "dpo":
        from trl import DPOConfig, DPOTrainer
        model = AutoModelForCausalLM.from_pretrained("{model_dir}")
        args = DPOConfig(beta=0.1, max_length={max_length}, **common)
        trainer = DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft)
    else:
        from trl import RewardConfig, RewardTrainer
        model = AutoModelForSequenceClassification.from_pretrained("{model_dir}", num_labels=1)
        model.config.pad_token_id = tokenizer.pad_token_id
        args = RewardConfig(max_length={max_length}, **common)
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer, peft_config=peft)
    metrics = trainer.train().metrics
    RESULT = {{"runtime_s": metrics["train_runtime"], "steps": trainer.state.global_step}}
    PEAK = peak_rss_mib()
    MODEL, TOKENIZER = trainer.model, tokenizer
"""

PREAMBLE = """
    import resource
    def peak_rss_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

VALIDATION = """
    import json, torch
    from specialize.train.datasets import tokenize_for_sft
    val = [json.loads(l) for l in open("{heldout}")]
    total, count = 0.0, 0
    MODEL.eval()
    with torch.inference_mode():
        for row in tokenize_for_sft(TOKENIZER, val, {max_length}):
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            logits = MODEL(input_ids=ids).logits[0, :-1].float()
            targets = labels[0, 1:]
            keep = targets != -100
            total += torch.nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum").item()
            count += int(keep.sum())
    RESULT["val_loss"] = total / count
    RESULT["val_tokens"] = count
"""


DEFAULTS = "TRL defaults in fp32 (ckpt on, padded)"
# TRL's documented defaults (bf16=True) where this CPU runs bf16 natively: then they are the
# memory anchor, as on a GPU; elsewhere bf16 is ~100x slower and fp32 with TRL's other defaults is.
NATIVE_DEFAULTS = "TRL defaults, native bf16 (ckpt on, padded)"
BF16 = "bf16=True, use_cpu=not torch.cuda.is_available()"  # transformers wants use_cpu for CPU bf16


def run_path(code: str, fields: dict, env: dict, timeout: float | None = None) -> dict | None:
    """Run one path in a fresh interpreter with `env`; return its RESULT plus peak RSS (and GPU
    peak) in MiB.

    None when it did not finish within `timeout` seconds.
    """
    script = (
        textwrap.dedent(PREAMBLE)
        + textwrap.dedent(code.format(**fields))
        + (textwrap.dedent(VALIDATION.format(**fields)) if fields["method"] == "sft" else "")
        + textwrap.dedent("""
        import torch
        RESULT["peak_rss_mib"] = PEAK
        RESULT["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
        print("RESULT", json.dumps(RESULT))
    """)
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None
    line = next((x for x in result.stdout.splitlines() if x.startswith("RESULT ")), None)
    if result.returncode or line is None:
        raise SystemExit(result.stderr[-4000:])
    return json.loads(line[len("RESULT ") :])


def real_tokens(tokenizer, rows: list[dict], max_length: int, method: str = "sft") -> int:
    """Non-padding tokens a pass over `rows` trains on (both answers of a preference pair)."""
    from specialize.data.templates import render_ids

    def count(text: str) -> int:
        return len(tokenizer(text).input_ids)

    if method == "cpt":
        return sum(count(r["text"]) + 1 for r in rows)  # + the end-of-document token
    if method in ("dpo", "reward"):
        return sum(
            min(count(r["prompt"]) + count(r[answer]), max_length)
            for r in rows
            for answer in ("chosen", "rejected")
        )
    return sum(min(len(render_ids(tokenizer, r["messages"])), max_length) for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--rows", type=int, default=192, help="Training chat rows (a fifth as many held out)."
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="specialize's training.precision (auto: bf16 where the CPU runs it natively)",
    )
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument(
        "--bf16-default", action="store_true", help="Also run TRL's bf16 default (slow on CPU)."
    )
    parser.add_argument("--trl-default-steps", type=int, default=1)
    parser.add_argument(
        "--trl-default-timeout", type=float, default=600, help="Seconds allowed for that path."
    )
    parser.add_argument(
        "--only",
        help="Run only the paths whose name starts with this (specialize, TRL, TRL best CPU: bf16, ...).",
    )
    parser.add_argument(
        "--method",
        choices=["sft", "cpt", "dpo", "reward"],
        default="sft",
        help="Training method; held-out validation loss is scored for sft only.",
    )
    args = parser.parse_args()

    import torch

    from specialize.data.config import DataConfig, SourceConfig, SplitConfig
    from specialize.data.prepare import prepare
    from specialize.models.loading import load_tokenizer, resolve_model
    from specialize.train.precision import bf16_is_fast

    model_dir = resolve_model(args.model).path
    with tempfile.TemporaryDirectory() as tmp:
        raw, data = Path(tmp) / "raw.jsonl", Path(tmp) / "data"
        synthesize(raw, args.rows, method=args.method)
        heldout = Path(tmp) / "heldout.jsonl"
        synthesize(heldout, max(8, args.rows // 5), seed=1)
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
        val_rows = len(heldout.read_text().splitlines())
        steps = len(rows) // args.batch
        rows_seen = steps * args.batch
        tokenizer = load_tokenizer(args.model)
        tokens_per_row = real_tokens(tokenizer, rows, args.max_length, args.method) / len(rows)
        common = dict(
            model=args.model,
            model_dir=model_dir,
            data=data,
            batch=args.batch,
            max_length=args.max_length,
            steps=steps,
            heldout=heldout,
            trl_max_length=args.max_length,
            method=args.method,
            precision=args.precision,
        )
        # Where the CPU runs bf16 natively, TRL's best configuration may be bf16 (its default)
        native_bf16 = bf16_is_fast()[0] and not torch.cuda.is_available()
        precisions = ("fp32", "bf16") if native_bf16 else ("fp32",)
        paths = {
            "specialize (defaults)": (
                SPECIALIZE_PATH,
                dict(out=f"{tmp}/s", checkpointing=False, every=1),
            ),
            # between the two: a third of the layers recompute (`training.checkpoint_every: 3`)
            "specialize (checkpointing every 3rd layer)": (
                SPECIALIZE_PATH,
                dict(out=f"{tmp}/s3", checkpointing=True, every=3),
            ),
            # the memory configuration: one switch in the recipe
            "specialize (gradient checkpointing)": (
                SPECIALIZE_PATH,
                dict(out=f"{tmp}/sc", checkpointing=True, every=1),
            ),
        }
        for precision in precisions:
            best = (
                BF16 if precision == "bf16" else "bf16=False"
            ) + ", gradient_checkpointing=False"
            paths[f"TRL best CPU: {precision}, no ckpt, padded"] = (
                TRL_PATH,
                dict(out=f"{tmp}/t1{precision}", extra=best),
            )
            paths[f"TRL best CPU: {precision}, no ckpt, padding-free"] = (
                TRL_PATH,
                # TRL refuses max_length with padding-free and no packing; rows are shorter anyway
                dict(
                    out=f"{tmp}/t2{precision}",
                    extra=best + ", padding_free=True",
                    trl_max_length=None,
                ),
            )
        paths[DEFAULTS] = (TRL_PATH, dict(out=f"{tmp}/t3", extra="bf16=False"))
        if native_bf16:  # TRL's own defaults here: bf16 (ckpt on), run in full like any path
            paths[NATIVE_DEFAULTS] = (TRL_PATH, dict(out=f"{tmp}/t4", extra=BF16))
        if args.method != "sft":
            # one TRL best-CPU path per precision: cpt packs (TRL's packing is padding-free),
            # dpo/reward pad pairs
            layout = "packed" if args.method == "cpt" else "padded"
            paths = {
                name.replace(", padded", f", {layout}"): path
                for name, path in paths.items()
                if "padding-free" not in name
            }
        paths |= memory_settings_variants(paths, native_bf16, args.method)
        if args.bf16_default and not native_bf16:
            paths["TRL defaults (bf16=True)"] = (
                TRL_PATH,
                dict(
                    out=f"{tmp}/t4",
                    extra=BF16,
                    steps=args.trl_default_steps,
                ),
            )
        print(
            f"model {args.model}; {len(rows)} {args.method} train rows (~{tokens_per_row:.0f} real tokens/row), "
            f"{val_rows} held out; batch {args.batch}; LoRA r16 all-linear, dropout 0; max_length {args.max_length}"
        )
        results = {}
        for name, (code, fields) in paths.items():
            if args.only and not name.lower().startswith(args.only.lower()):
                continue
            bf16 = name.startswith("TRL defaults (bf16")
            results[name] = run_path(
                code,
                common | fields,
                environment_of(name),
                timeout=args.trl_default_timeout if bf16 else None,
            )
            print(f"  {name}: {json.dumps(results[name])}", flush=True)  # raw, as each path ends
        report(results, tokens_per_row * args.batch, args)
        print(
            f"rows per full pass {rows_seen}; speed ratio = the path's real tokens/s over the fastest TRL "
            "best-CPU path's; memory ratio = the path's peak RSS over TRL defaults'; val ratio = the "
            "path's validation loss over specialize's"
        )


def memory_settings_variants(paths: dict, native_bf16: bool, method: str) -> dict:
    """TRL's memory anchor and its best path in the CPU's fastest precision, to run again with
    specialize's CPU memory settings."""
    layout = {"sft": "padding-free", "cpt": "packed"}.get(method, "padded")
    best = f"TRL best CPU: {'bf16' if native_bf16 else 'fp32'}, no ckpt, {layout}"
    anchor = NATIVE_DEFAULTS if native_bf16 else DEFAULTS
    variants = {}
    for name, (code, fields) in paths.items():
        again = (code, fields | {"out": fields["out"] + "-settings"})
        if name == best:
            variants[f"{name}, {MEMORY_SETTINGS}"] = again
        elif name.split(" (")[0] == anchor.split(" (")[0]:  # the layout in brackets varies
            stem, _, rest = name.partition(" (")
            variants[f"{stem}, {MEMORY_SETTINGS} ({rest}"] = again
    return variants


def environment_of(name: str) -> dict:
    """specialize's paths run as specialize sets itself up; TRL's as the benchmark was started,
    or with specialize's CPU memory settings where the path's name says so."""
    if name.startswith("specialize"):
        return dict(os.environ)
    if MEMORY_SETTINGS in name:
        from specialize import cpu_memory

        return START_ENV | {k: os.environ[k] for k in cpu_memory.SETTINGS if k in os.environ}
    return START_ENV


def report(results: dict[str, dict | None], tokens_per_step: float, args) -> None:
    rates = {
        name: tokens_per_step * r["steps"] / r["runtime_s"] for name, r in results.items() if r
    }
    best = [n for n in rates if n.startswith("TRL best")]
    anchor = max(best, key=rates.get) if best else None
    # the layout in brackets differs by method (padded, packed): match the names before it
    memory_anchor = next(
        (
            n
            for stem in (NATIVE_DEFAULTS, DEFAULTS)
            for n in results
            if n.split(" (")[0] == stem.split(" (")[0]
        ),
        None,
    )
    memory = results.get(memory_anchor) if memory_anchor else None
    ours = results.get("specialize (defaults)")
    print(
        f"{'path':76} {'steps':>5} {'seconds':>8} {'real tok/s':>10} {'speed':>6} {'peak RSS MiB':>12} "
        f"{'memory':>6} {'val loss':>8} {'val':>6}"
    )
    for name, r in results.items():
        if r is None:
            print(
                f"{name:76} did not finish {args.trl_default_steps} step(s) in {args.trl_default_timeout:.0f} s"
            )
            continue
        speed = f"{rates[name] / rates[anchor]:5.2f}x" if anchor else "-"
        mem = f"{r['peak_rss_mib'] / memory['peak_rss_mib']:5.2f}x" if memory else "-"
        has_val = ours and "val_loss" in r and "val_loss" in ours
        val = f"{r['val_loss'] / ours['val_loss']:5.3f}x" if has_val else "-"
        val_loss = f"{r['val_loss']:8.4f}" if "val_loss" in r else "-"
        mark = " *" if name == anchor else " m" if name == memory_anchor else ""
        print(
            f"{name + mark:76} {r['steps']:5d} {r['runtime_s']:8.1f} {rates[name]:10,.0f} {speed:>6} "
            f"{r['peak_rss_mib']:12,.0f} {mem:>6} {val_loss:>8} {val:>6}"
        )
    if ours and "val_tokens" in ours:
        print(f"validation: {ours['val_tokens']} assistant tokens")
    print(
        "* = the speed anchor (fastest TRL best-CPU path); m = the memory anchor (TRL's defaults)"
    )


if __name__ == "__main__":
    main()
