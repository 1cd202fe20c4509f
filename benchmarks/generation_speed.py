"""Greedy generation speed of `generate_batch`: today's path (transformers' generate) vs the new one.

Both paths run in one process on the same prompts, alternating, so a busy machine slows both
alike; the report gives their ratio, how many replies are token-identical, and the row-steps each
path computed (a deterministic count: rows in the batch summed over decoding steps).
Prompts: the nordvik ladder's policy and structured tasks (their system prompt, the test
questions; then as the `prompt` rung shows them, with few-shot examples, and as the `rag` rung
shows them, with retrieved excerpts, both built by the ladder's own code) and the core retention
suite, at the max_new_tokens each uses.

    python benchmarks/generation_speed.py --items 16 --rounds 2
    python benchmarks/generation_speed.py --model PATH --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import yaml

from specialize.evaluate import runner
from specialize.evaluate.suites import core_items
from specialize.models.generation import GenerationSettings

NORDVIK = Path(__file__).resolve().parents[1] / "examples" / "nordvik"


def workloads(items: int) -> dict[str, tuple[list, int, int]]:
    """{name: (prompts, max_new_tokens, batch size today)} for the ladder tasks and core retention."""
    ladder = yaml.safe_load((NORDVIK / "ladder.yaml").read_text())
    rows = [json.loads(line) for line in (NORDVIK / "data" / "test.jsonl").read_text().splitlines()]
    out = {}
    for task in ladder["tasks"]:
        questions = [r for r in rows if r["category"] == task["category"]][:items]
        prompts = [
            [
                {"role": "system", "content": task["system"]},
                {
                    "role": "user",
                    "content": next(m for m in r["messages"] if m["role"] == "user")["content"],
                },
            ]
            for r in questions
        ]
        out[f"ladder {task['name']}"] = (prompts, task["max_new_tokens"], 16)
    out |= rung_workloads(items)
    core = core_items()
    step = max(1, len(core) // (2 * items))
    out["retention core"] = ([i.prompt for i in core[::step][: 2 * items]], 32, 64)
    return out


def rung_workloads(items: int) -> dict[str, tuple[list, int, int]]:
    """The ladder's `prompt` and `rag` rungs' messages for the same questions (longer prompts
    of varied length: few-shot examples, retrieved excerpts)."""
    from specialize.data.retrieval import DocumentRetriever
    from specialize.evaluate.tasks import load_eval_items
    from specialize.ladder.config import load_ladder
    from specialize.ladder.prompts import ExamplePool, RungPrompts
    from specialize.ladder.run import item_field

    config = load_ladder(NORDVIK / "ladder.yaml")
    pool = ExamplePool(config.prompt.examples)
    retriever = DocumentRetriever(config.rag.documents, max_words=config.rag.chunk_words)
    out = {}
    for task in config.tasks:
        chosen = [
            i
            for i in load_eval_items(task.data)
            if str(item_field(i, "category")) == str(task.category)
        ][:items]
        prompts = RungPrompts(task, pool, config.prompt.shots, retriever, config.rag.top_k)
        for rung in ("prompt", "rag"):
            messages = [prompts.build(rung, item) for item in chosen]
            out[f"ladder {task.name} {rung} rung"] = (messages, task.max_new_tokens, 16)
    return out


def run(model, tokenizer, prompts, settings, batch_size, new: bool) -> tuple[list[str], float]:
    """Replies and seconds of one path (new: the greedy loop; old: transformers' generate)."""
    keep = runner._plain_greedy
    runner._plain_greedy = keep if new else (lambda *_: False)
    try:
        started = time.perf_counter()
        replies = runner.generate_batch(model, tokenizer, prompts, settings, batch_size=batch_size)
        return replies, time.perf_counter() - started
    finally:
        runner._plain_greedy = keep


def row_steps(model, tokenizer, prompts, settings, batch_size: int) -> tuple[int, int]:
    """Rows x steps decoded: old (every row until the chunk's longest reply) vs new (own length)."""
    chunks: list[list[int]] = []
    keep = runner._greedy_chunk

    def counted(*args, **kwargs):
        outputs = keep(*args, **kwargs)
        chunks.append([len(o) for o in outputs])
        return outputs

    runner._greedy_chunk = counted
    try:
        runner.generate_batch(model, tokenizer, prompts, settings, batch_size=batch_size)
    finally:
        runner._greedy_chunk = keep
    return sum(len(c) * max(c) for c in chunks), sum(sum(c) for c in chunks)


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path.home() / ".specialize" / "models" / "smollm2-135m-instruct"
    parser.add_argument("--model", type=Path, default=default)
    parser.add_argument("--items", type=int, default=16, help="questions per ladder task")
    parser.add_argument("--rounds", type=int, default=2, help="old/new alternations")
    parser.add_argument("--batch-size", type=int, help="new path's batch (default: today's)")
    parser.add_argument(
        "--old-batch-size",
        type=int,
        help="generate's batch (default: today's); the new path's batch gives generate's best case",
    )
    parser.add_argument("--only", help="workloads whose name contains this (e.g. policy)")
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    print(f"threads {torch.get_num_threads()}, model {args.model}")
    for name, (prompts, new_tokens, today) in workloads(args.items).items():
        if args.only and args.only not in name:
            continue
        settings = GenerationSettings(max_new_tokens=new_tokens)
        shared = runner._shared_prefix([runner.prompt_ids(tokenizer, p) for p in prompts])
        old_batch = args.old_batch_size or today
        times = {"old": 0.0, "new": 0.0}
        replies = {}
        for _ in range(args.rounds):
            for path in ("old", "new"):
                size = old_batch if path == "old" else (args.batch_size or today)
                replies[path], seconds = run(
                    model, tokenizer, prompts, settings, size, path == "new"
                )
                times[path] += seconds
        same = sum(a == b for a, b in zip(replies["old"], replies["new"], strict=True))
        old_steps, new_steps = row_steps(model, tokenizer, prompts, settings, old_batch)
        n = len(prompts) * args.rounds
        print(
            f"{name}: n={len(prompts)} max_new_tokens={new_tokens} shared prefix {shared} tokens; "
            f"old {n / times['old']:.2f} items/s, new {n / times['new']:.2f} items/s, "
            f"ratio {times['old'] / times['new']:.2f}x; identical replies {same}/{len(prompts)}; "
            f"row-steps old {old_steps} new {new_steps}",
            flush=True,
        )


if __name__ == "__main__":
    main()
