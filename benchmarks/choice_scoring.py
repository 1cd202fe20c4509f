"""Multiple-choice scoring speed: each context with its choices in one row vs whole sequences.

The plain path is what lm-evaluation-harness's HFLM does: every (context, choice) pair runs as
one whole sequence (right-padded batches of 16, sorted by length) and the log-softmax is taken
over every position. `specialize`'s path (`evaluate/runner.continuation_logprobs`) runs each
distinct context once with all its choices in the same row under a 4D mask, and puts only the
scored positions through the LM head. Both run in one process on the standard suite's seeded
items, one after the other; the report gives seconds, their ratio, the largest difference between
the two paths' log-likelihoods and whether every item's prediction (acc and acc_norm) agrees.

    python benchmarks/choice_scoring.py                         # hellaswag, arc_easy, arc_challenge
    python benchmarks/choice_scoring.py --task hellaswag --items 50
"""

from __future__ import annotations

import argparse
import time

from specialize.evaluate import runner
from specialize.evaluate.suites import standard_tasks
from specialize.evaluate.tasks import length_normalised
from specialize.models.loading import load_model


def whole_sequences(model, tokenizer, pairs, batch_size: int) -> list[float]:
    """The plain path: each context + choice as one sequence, tokenised as lm-eval does."""
    items = []
    for context, continuation in pairs:
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
        items.append((whole, max(1, min(start, len(whole) - 1))))
    return runner._score(model, items, tokenizer.pad_token_id, batch_size, None)


def predictions(items, scores) -> list[tuple[int, int]]:
    out, at = [], 0
    for item in items:
        own = scores[at : at + len(item.choices)]
        at += len(item.choices)
        norm = length_normalised(own, item.choices)
        out.append((own.index(max(own)), norm.index(max(norm))))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument(
        "--task", action="append", help="standard-suite task (repeatable); default: three"
    )
    parser.add_argument("--items", type=int, default=None, help="first N items of each task")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    model, tokenizer = load_model(args.model)[:2]
    model.eval()
    tasks = standard_tasks()
    names = args.task or ["hellaswag", "arc_easy", "arc_challenge"]
    print(
        "| task | n | whole sequences s | specialize s | speed-up | max abs logprob diff "
        "| predictions agree |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in names:
        items = tasks[name][: args.items]
        pairs = [(item.context, choice) for item in items for choice in item.choices]
        started = time.perf_counter()
        plain = whole_sequences(model, tokenizer, pairs, args.batch_size)
        plain_s = time.perf_counter() - started
        started = time.perf_counter()
        ours = runner.continuation_logprobs(model, tokenizer, pairs, batch_size=args.batch_size)
        ours_s = time.perf_counter() - started
        diff = max(abs(a - b) for a, b in zip(plain, ours, strict=True))
        agree = sum(
            a == b for a, b in zip(predictions(items, plain), predictions(items, ours), strict=True)
        )
        print(
            f"| {name} | {len(items)} | {plain_s:.1f} | {ours_s:.1f} | {plain_s / ours_s:.2f}x "
            f"| {diff:.1e} | {agree}/{len(items)} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
