"""Where a decoding step of the serving engine goes: batch 1 against batch 8, engine against the
bare model, with torch.profiler's op table.

    .venv/bin/python benchmarks/engine_step.py [--model smollm2-135m-instruct] [--batch 1 --batch 8]
        [--repeats 5] [--steps 3] [--threads 1] [--profile 8] [--max-tokens 32] [--context 1500]
        [--dora]

It makes three random LoRA adapters (r=8 on q_proj,v_proj, as `serve_load.py` does) in a
temporary home, loads them on a `ModelHost`, and builds an `Engine` whose scheduler thread is
stopped at once, so this script drives its steps itself. Then, --repeats times, interleaved over
the --batch sizes (rows cycle over base and the three adapters, prompts of different lengths):
    engine   `Engine._step` decoding steps of the running rows (after their prefill), i.e. what a
             server step costs: the forward with every row's adapter, sampling, detokenising,
             streaming and the cache bookkeeping; linear layers through `decode_linear`'s kernel
    torch-lin  the same engine steps with torch's own linear layers (the kernel switched off)
    model    the bare `model(...)` forward of one new token per row on a KV cache of the same
             prompts, adapters disabled: what the weights cost, without the engine
    prefill  the engine's prefill step of that many new rows (every row's prompt, left-padded)
    copying  with --dora (the third adapter is then DoRA, which runs as its own group on PEFT's
             path): the engine steps with the groups' rows left where they joined, so every step
             runs each group on a copy of its cache rows (the engine before rows were grouped)
Each line gives the median and min over --repeats x --steps steps (n) of the CPU time of this
thread (with --threads 1 every op runs on it, so time stolen by other processes on a shared
machine does not count), and the wall-clock median. Ratios between batch sizes come from the
same process, interleaved. --profile B prints torch.profiler's op table (top rows by self CPU
time) for --steps engine decoding steps at batch B. --context N puts about N tokens of the
Nordvik example's documents ahead of each question (a chat with retrieved text in its prompt), so
the steps run on a long KV cache.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch", type=int, action="append", default=[])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="decoding steps timed per repeat")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", type=int, default=8, help="batch size to profile (0: none)")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument(
        "--context", type=int, default=0, help="tokens of documents ahead of each question"
    )
    parser.add_argument("--dora", action="store_true", help="make the third adapter DoRA")
    args = parser.parse_args()
    batches = args.batch or [1, 8]
    home = tempfile.mkdtemp(prefix="engine-step-")
    # The default model materialises into this home (~500 MB): removed at exit, as each run
    # left one behind in /tmp before.
    atexit.register(shutil.rmtree, home, True)
    os.environ.setdefault("SPECIALIZE_HOME", home)

    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from serve_load import (  # the same prompts and adapters as the load test
        PROMPTS,
        _random_adapters,
    )

    from specialize.adapters import decode_linear, registry
    from specialize.adapters.engine import Engine, Job
    from specialize.adapters.host import ModelHost
    from specialize.models.generation import GenerationSettings, render_prompt_ids

    torch.set_num_threads(args.threads)
    names = []
    for spec in _random_adapters(args.model, dora=args.dora):
        name, _, path = spec.partition("=")
        registry.register(name, path, base_model=args.model, replace=True)
        names.append(name)
    host = ModelHost(args.model, names)
    engine = Engine(host, max_batch=max(batches), max_in_flight=10 * max(batches))
    engine.stop()  # this script drives the steps from its own thread
    models = ["base", *names]
    settings = GenerationSettings(max_new_tokens=args.max_tokens)
    preamble = _documents(host.tokenizer, args.context)
    prompt_ids = [
        render_prompt_ids(host.tokenizer, [{"role": "user", "content": preamble + p}])
        for p in PROMPTS
    ]
    print(
        f"{args.model} + {len(names)} adapters, {args.threads} thread(s), "
        f"prompts of {min(map(len, prompt_ids))}-{max(map(len, prompt_ids))} tokens; "
        f"CPU time of this thread per step, median (min) over n, and wall median",
        flush=True,
    )

    def jobs(batch: int) -> list[Job]:
        return [
            Job(models[i % len(models)], prompt_ids[i % len(prompt_ids)], settings)
            for i in range(batch)
        ]

    def engine_steps(
        batch: int, steps: int, record: dict, kernel: bool = True, grouped: bool = True
    ) -> None:
        engine.decode_kernel = kernel
        kind = "copying" if not grouped else "engine" if kernel else "torch-lin"
        if not grouped:
            engine._group_rows = lambda: None
        engine._active, engine._batch = [], None
        new = jobs(batch)
        with _timer(record if kind == "engine" else {}, ("prefill", batch)):
            engine._step(new)
        for _ in range(steps):
            with _timer(record, (kind, batch)):
                engine._step([])
        engine._drop(list(engine._active))
        engine.decode_kernel = True
        vars(engine).pop("_group_rows", None)

    def model_steps(batch: int, steps: int, record: dict) -> None:
        from transformers import DynamicCache

        model = host.model
        rows = [prompt_ids[i % len(prompt_ids)] for i in range(batch)]
        width = max(map(len, rows))
        ids = torch.full((batch, width), engine._pad, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for row, prompt in enumerate(rows):
            ids[row, width - len(prompt) :] = torch.tensor(prompt)
            mask[row, width - len(prompt) :] = 1
        cache = DynamicCache()
        with torch.inference_mode(), model.disable_adapter():
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            for _ in range(steps):
                positions = mask.sum(-1, keepdim=True)
                mask = torch.cat([mask, torch.ones((batch, 1), dtype=mask.dtype)], dim=1)
                with _timer(record, ("model", batch)):
                    out = model(
                        input_ids=token,
                        attention_mask=mask,
                        position_ids=positions,
                        past_key_values=cache,
                        use_cache=True,
                        logits_to_keep=1,
                    )
                    token = out.logits[:, -1].argmax(-1, keepdim=True)

    record: dict = {}
    kernel = decode_linear.why_not() or "on"
    print(f"decode kernel: {kernel}", flush=True)
    kinds = ["engine", "torch-lin", "model", "prefill"] + (["copying"] if args.dora else [])
    for batch in batches:  # warm-up, not recorded
        engine_steps(batch, 1, {})
        engine_steps(batch, 1, {}, kernel=False)
        model_steps(batch, 1, {})
    for _ in range(args.repeats):
        for batch in batches:
            engine_steps(batch, args.steps, record)
            engine_steps(batch, args.steps, record, kernel=False)
            model_steps(batch, args.steps, record)
            if args.dora:
                engine_steps(batch, args.steps, record, grouped=False)
    for kind in kinds:
        for batch in batches:
            cpu, wall = zip(*record[(kind, batch)], strict=True)
            print(
                f"{kind:8} batch {batch:2}: {statistics.median(cpu) * 1e3:7.1f} ms "
                f"({min(cpu) * 1e3:.1f}) n={len(cpu)}, wall {statistics.median(wall) * 1e3:.1f} ms",
                flush=True,
            )
    if len(batches) >= 2:
        low, high = min(batches), max(batches)
        for kind in ("engine", "torch-lin", "model"):
            ratio = _median_cpu(record[(kind, high)]) / _median_cpu(record[(kind, low)])
            print(f"{kind}: batch {high} step / batch {low} step = {ratio:.2f}x (CPU time)")
    for batch in batches:
        ratio = _median_wall(record[("torch-lin", batch)]) / _median_wall(record[("engine", batch)])
        print(
            f"batch {batch}: engine step with torch's linear / with the kernel = {ratio:.2f}x (wall)"
        )
        if args.dora:
            ratio = _median_wall(record[("copying", batch)]) / _median_wall(
                record[("engine", batch)]
            )
            print(
                f"batch {batch}: engine step copying each group's rows / in place = {ratio:.2f}x (wall)"
            )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        engine._active, engine._batch = [], None
        engine._step(jobs(args.profile))
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                engine._step([])
        engine._drop(list(engine._active))
        print(f"\nprofile of {args.steps} engine decoding steps at batch {args.profile}:")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def _documents(tokenizer, tokens: int) -> str:
    """About `tokens` tokens of the Nordvik documents (repeated as needed), or nothing."""
    if not tokens:
        return ""
    docs = Path(__file__).resolve().parents[1] / "examples" / "nordvik" / "docs"
    text = "\n\n".join(f.read_text() for f in sorted(docs.glob("*.md")))
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    ids = (ids * (tokens // len(ids) + 1))[:tokens]
    return tokenizer.decode(ids) + "\n\nQuestion: "


class _timer:
    """Adds (thread CPU seconds, wall seconds) of the block to record[key]."""

    def __init__(self, record: dict, key):
        self.record, self.key = record, key

    def __enter__(self):
        self.cpu, self.wall = time.thread_time(), time.perf_counter()

    def __exit__(self, *exc):
        spent = (time.thread_time() - self.cpu, time.perf_counter() - self.wall)
        self.record.setdefault(self.key, []).append(spent)


def _median_cpu(rows) -> float:
    return statistics.median(cpu for cpu, _ in rows)


def _median_wall(rows) -> float:
    return statistics.median(wall for _, wall in rows)


if __name__ == "__main__":
    main()
