"""Interference check: an adapter served among others must answer exactly as when served alone,
on its own validation chats and on retention (core) items. Greedy decoding makes this a strict
comparison of texts; scores are shown beside it. The batching engine is checked the same way:
every adapter's items go through it at once, rows of different adapters in the same forward
passes, and each answer must equal the adapter's answer alone."""

from __future__ import annotations

import json
from pathlib import Path

from specialize.adapters import registry as adapters
from specialize.adapters.engine import Engine, Job
from specialize.adapters.host import ModelHost
from specialize.evaluate.suites import core_items
from specialize.evaluate.tasks import EvalItem, evaluate_items


def interference(
    model_ref: str, names: list[str], *, core_items_count: int = 20, own_items: int = 10
) -> dict:
    core = _spread(core_items(), core_items_count)
    own = {name: _own_items(adapters.get(name), own_items) for name in names}
    alone = {}
    for name in names:
        host = ModelHost(model_ref, [name])
        alone[name] = {
            kind: _answers(host, name, items)
            for kind, items in (("own", own[name]), ("core", core))
        }
    together = ModelHost(model_ref, names)
    report, identical = {}, True
    for name in names:
        row = {}
        for kind, items in (("own", own[name]), ("core", core)):
            among = _answers(together, name, items)
            before = alone[name][kind]
            same = sum(
                a["output"] == b["output"]
                for a, b in zip(before["items"], among["items"], strict=True)
            )
            identical &= same == len(items)
            row[kind] = {
                "n": len(items),
                "same": same,
                "alone": before["score"],
                "among": among["score"],
            }
        report[name] = row
    for name, (same, n) in _through_engine(together, alone, own, core).items():
        report[name]["engine"] = {"n": n, "same": same}
        identical &= same == n
    verdict = (
        "no interference: every answer is identical alone and among the others"
        if identical
        else "INTERFERENCE: some answers differ when the adapters are served together"
    )
    return {"adapters": report, "identical": identical, "verdict": verdict}


def _answers(host: ModelHost, name: str, items: list[EvalItem]) -> dict:
    if not items:
        return {"items": [], "score": 0.0}
    with host.selected(name) as model:
        result = evaluate_items(
            model, host.tokenizer, items, ["contains"], max_new_tokens=48, progress=None
        )
    return {"items": result.items, "score": result.summary["contains"]["mean"]}


def _through_engine(host: ModelHost, alone: dict, own: dict, core: list[EvalItem]) -> dict:
    """Every adapter's items through the engine at once; (same as alone, n) per adapter."""
    from specialize.evaluate.runner import prompt_ids
    from specialize.models.generation import GenerationSettings

    engine = Engine(host, max_batch=64, max_in_flight=10_000)
    settings = GenerationSettings(max_new_tokens=48)
    try:
        jobs = [
            (
                name,
                before["output"],
                engine.submit(Job(name, prompt_ids(host.tokenizer, item.prompt), settings)),
            )
            for name in alone
            for kind, items in (("own", own[name]), ("core", core))
            for item, before in zip(items, alone[name][kind]["items"], strict=True)
        ]
        counts = {name: [0, 0] for name in alone}
        for name, before, job in jobs:
            engine.wait(job)
            counts[name][0] += job.text.strip() == before
            counts[name][1] += 1
    finally:
        engine.stop()
    return {name: tuple(count) for name, count in counts.items()}


def _spread(items: list[EvalItem], count: int) -> list[EvalItem]:
    step = max(1, len(items) // count)
    return items[::step][:count]


def _own_items(entry: dict, count: int) -> list[EvalItem]:
    """The first validation chats of the adapter's run, when it came from one."""
    run = Path(entry["path"]).parent
    items = []
    for val in sorted(run.glob("data/*/val.jsonl")):
        for line in val.read_text().splitlines():
            row = json.loads(line)
            messages = row.get("messages")
            if messages and messages[-1]["role"] == "assistant" and len(items) < count:
                items.append(
                    EvalItem(
                        f"{val.parent.name}-{len(items)}", messages[:-1], [messages[-1]["content"]]
                    )
                )
    return items
