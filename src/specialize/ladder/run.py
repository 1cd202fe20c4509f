"""Climb the ladder: every rung answers the same held-out items; scores, cost, latency, a decision.

Each (rung, task) result is cached under a key made of everything that decides it (model and
adapter content hashes, the items, the prompts' ingredients, generation settings), so a second
ladder that shares rungs with a first, as the demo's final ladder does with its baseline,
re-uses them; the model is only loaded when something is left to compute.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from specialize.artifacts import (
    LadderRecord,
    atomic_write_json,
    atomic_write_text,
    sha256_file,
)
from specialize.config import dump_config
from specialize.data.retrieval import DocumentRetriever
from specialize.evaluate.metrics import BINARY_METRICS, GENERATIVE_METRICS
from specialize.evaluate.runner import generate_batch, prompt_ids
from specialize.evaluate.skew import (
    check_skew,
    conform,
    training_format,
)
from specialize.evaluate.stats import estimate
from specialize.evaluate.tasks import EvalItem, load_eval_items
from specialize.home import cache_dir
from specialize.ladder.config import RUNG_ORDER, LadderConfig, TaskConfig
from specialize.ladder.decision import recommend
from specialize.ladder.prompts import ExamplePool, RungPrompts
from specialize.ladder.rungs import Adapter, LazyModels, adapter_from_spec
from specialize.models.generation import GenerationSettings
from specialize.models.loading import content_hash, resolve_model

log = logging.getLogger(__name__)
LADDER_SCHEMA_VERSION = LadderRecord.schema_version


@dataclass
class Rung:
    name: str  # base, prompt, rag, tuned, tuned+rag; tuned rungs get :NAME with several adapters
    kind: str
    adapter: Adapter | None = None
    one_time_seconds: float = 0.0


@dataclass
class Ingredients:
    """What the rungs are built from, loaded once per ladder."""

    tasks: dict[str, list[EvalItem]]
    pool: ExamplePool | None
    retriever: DocumentRetriever | None
    index_seconds: float
    fingerprint: dict = field(default_factory=dict)
    documents: str | None = None
    speech: dict = field(default_factory=dict)  # spoken questions: model and per-task question WER
    _by_words: dict = field(default_factory=dict)

    def retriever_for(self, chunk_words: int) -> DocumentRetriever | None:
        """The documents chunked at `chunk_words` (a RAFT adapter may have trained on other chunks)."""
        if self.retriever is None or chunk_words == self.retriever.max_words:
            return self.retriever
        if chunk_words not in self._by_words:
            self._by_words[chunk_words] = DocumentRetriever(self.documents, max_words=chunk_words)
        return self._by_words[chunk_words]


def run_ladder(
    config: LadderConfig, out: str | Path, *, cache: Path | None = None, progress: bool = True
) -> dict:
    """Evaluate every rung on every task; write ladder.json, rungs/*/eval.json and ladder.html."""
    out = Path(out)
    cache = cache or cache_dir() / "ladder"
    base_hash = content_hash(resolve_model(config.model).path)
    ingredients = _ingredients(config)
    rungs = _rungs(config, ingredients)
    for adapter in {id(r.adapter): r.adapter for r in rungs if r.adapter}.values():
        adapter.training = training_format(adapter.source, config.model)
    skew = _skew_checks(config, rungs, ingredients)
    models = LazyModels(config.model, [r.adapter for r in rungs if r.adapter])
    results: dict[str, dict[str, dict]] = {}
    for rung in rungs:
        results[rung.name] = {}
        for task in config.tasks:
            key = _result_key(config, task, rung, ingredients, base_hash)
            cached = cache / f"{key}.json"
            if cached.is_file():
                results[rung.name][task.name] = json.loads(cached.read_text())
                log.info("ladder: %s / %s from cache", rung.name, task.name)
                continue
            result = _evaluate(models, rung, task, ingredients, config, progress)
            atomic_write_json(cached, result)
            results[rung.name][task.name] = result
    report = _report(config, rungs, results, ingredients, base_hash, out)
    report["prompt_format"] = skew
    report["speech"] = ingredients.speech
    LadderRecord.from_dict(report).write(out / "ladder.json")
    from specialize.ladder.report import ladder_page

    atomic_write_text(out / "ladder.html", ladder_page(report))
    return report


def _ingredients(config: LadderConfig) -> Ingredients:
    tasks = {task.name: _task_items(task, config.limit) for task in config.tasks}
    speech = _hear(config, tasks) if config.speech is not None else {}
    wanted = set(config.rungs)
    pool = (
        ExamplePool(config.prompt.examples)
        if "prompt" in wanted and config.prompt.examples and config.prompt.shots
        else None
    )
    started = time.monotonic()
    retriever = (
        DocumentRetriever(config.rag.documents, max_words=config.rag.chunk_words)
        if {"rag", "tuned+rag"} & wanted
        else None
    )
    fingerprint = {
        "examples": sha256_file(config.prompt.examples) if pool else None,
        "documents": _documents_hash(retriever),
    }
    return Ingredients(
        tasks,
        pool,
        retriever,
        time.monotonic() - started,
        fingerprint,
        config.rag.documents,
        speech,
    )


def _hear(config: LadderConfig, tasks: dict[str, list[EvalItem]]) -> dict:
    """Replace every task's typed questions by what the speech model heard in their recordings
    (in place); return the speech model and each task's question WER with its CI and n. The
    result cache keys on the items' prompts, so heard and typed answers are never confused."""
    from specialize.evaluate.cascade import heard_items
    from specialize.models.speech import load_speech_model

    speech = load_speech_model(config.speech.model, adapter=config.speech.adapter)
    wer = {}
    for task in config.tasks:
        heard, wer[task.name], _ = heard_items(
            speech, tasks[task.name], task.data, progress=f"hearing {task.name}"
        )
        tasks[task.name] = heard
    del speech
    return {"model": config.speech.model, "adapter": config.speech.adapter, "question_wer": wer}


def _task_items(task: TaskConfig, limit: int | None) -> list[EvalItem]:
    from specialize.errors import DataError

    items = load_eval_items(task.data)
    wanted = dict(task.where)
    if task.category is not None:
        wanted["category"] = task.category
    for name in [*wanted, *([task.breakdown] if task.breakdown else [])]:
        _check_field(task, items, name)
    items = [i for i in items if all(str(item_field(i, k)) == str(v) for k, v in wanted.items())]
    if not items:
        raise DataError(
            f"task {task.name!r} has no items"
            + (f" with {', '.join(f'{k}={v!r}' for k, v in wanted.items())}" if wanted else ""),
            where=task.data,
            fix="check the task's data file, category and where",
        )
    if any(i.choices is not None for i in items):
        from specialize.errors import DataError

        raise DataError(
            f"task {task.name!r} has multiple-choice items; ladder rungs are compared on generated answers",
            where=task.data,
        )
    return items[:limit] if limit else items


def item_field(item: EvalItem, name: str):
    """The value of one of an item's row fields (id, category or any other scalar field), or None."""
    if name == "id":
        return item.id
    if name == "category":
        return item.category
    return item.meta.get(name)


def _check_field(task: TaskConfig, items: list[EvalItem], name: str) -> None:
    if any(item_field(i, name) is not None for i in items):
        return
    from specialize.errors import DataError

    fields = sorted({"id", "category"} | {k for i in items for k in i.meta})
    raise DataError(
        f"task {task.name!r}: no row has the field {name!r}",
        where=task.data,
        fix=f"use one of the rows' fields: {', '.join(fields)}",
    )


def _documents_hash(retriever: DocumentRetriever | None) -> str | None:
    if retriever is None:
        return None
    return hashlib.sha256(
        json.dumps([[c.source, c.text] for c in retriever.chunks]).encode()
    ).hexdigest()


def _rungs(config: LadderConfig, ingredients: Ingredients) -> list[Rung]:
    adapters = [adapter_from_spec(spec) for spec in config.tuned.adapters]
    several = len(adapters) > 1
    rungs = []
    for kind in RUNG_ORDER:
        if kind not in config.rungs:
            continue
        if kind in ("tuned", "tuned+rag"):
            for adapter in adapters:
                name = f"{kind}:{adapter.name}" if several else kind
                cost = (adapter.training_seconds or 0.0) + (
                    ingredients.index_seconds if kind == "tuned+rag" else 0.0
                )
                rungs.append(Rung(name, kind, adapter, cost))
        else:
            rungs.append(
                Rung(kind, kind, None, ingredients.index_seconds if kind == "rag" else 0.0)
            )
    return rungs


def _skew_checks(config: LadderConfig, rungs: list[Rung], ingredients: Ingredients) -> dict:
    """Per tuned rung: do the prompts it will send look like its adapter's training rows?"""
    checks = {}
    for rung in rungs:
        if rung.adapter is None:
            continue
        context = _context_settings(config, rung)
        retriever = ingredients.retriever_for(context["chunk_words"])
        requests = []
        for task in config.tasks:
            prompts = RungPrompts(task, None, 0, retriever, context["top_k"])
            requests += [
                _messages(config, rung, prompts, item) for item in ingredients.tasks[task.name]
            ]
        check = check_skew(
            rung.adapter.source, requests, config.model, training=rung.adapter.training
        ).as_dict()
        checks[rung.name] = {**check, "conformed": _conforms(config, rung)}
    return checks


def _conforms(config: LadderConfig, rung: Rung) -> bool:
    training = rung.adapter.training if rung.adapter else None
    return bool(config.tuned.conform_layout and training and training.layout)


def _messages(config: LadderConfig, rung: Rung, prompts: RungPrompts, item: EvalItem):
    """The rung's prompt for item, laid out as the adapter trained when tuned.conform_layout."""
    messages = prompts.build(rung.kind, item)
    if _conforms(config, rung):
        return conform(messages, rung.adapter.training.layout)
    return messages


def _context_settings(config: LadderConfig, rung: Rung) -> dict:
    """How many chunks of how many words a rag rung shows: a RAFT adapter's own training settings."""
    raft = rung.adapter.raft if rung.adapter and rung.kind == "tuned+rag" else None
    if raft:
        return {
            "top_k": raft["top_k"] + raft["distractors"],
            "chunk_words": raft["chunk_words"],
            "from": "the adapter's data.raft (top_k + distractors, as in training)",
        }
    return {"top_k": config.rag.top_k, "chunk_words": config.rag.chunk_words, "from": "rag"}


def _result_key(
    config, task: TaskConfig, rung: Rung, ingredients: Ingredients, base_hash: str
) -> str:
    items = ingredients.tasks[task.name]
    kind = rung.kind
    recipe = {
        "rung": kind,
        "base": base_hash,
        "adapter": rung.adapter.content_hash if rung.adapter else None,
        "task": task.model_dump(mode="json", exclude={"name", "data", "category", "where"}),
        "items": [[i.id, i.prompt, i.answers] + ([i.images] if i.images else []) for i in items],
        "prompt": config.prompt.model_dump(mode="json", exclude={"examples"})
        if kind == "prompt"
        else None,
        "examples": ingredients.fingerprint["examples"] if kind == "prompt" else None,
        "rag": config.rag.model_dump(mode="json", exclude={"documents"}) if "rag" in kind else None,
        "context": _context_settings(config, rung) if "rag" in kind else None,
        "conform": asdict(rung.adapter.training.layout) if _conforms(config, rung) else None,
        "documents": ingredients.fingerprint["documents"] if "rag" in kind else None,
        "batch_size": config.batch_size,  # left padding in a batch can move greedy output slightly
        "schema": LADDER_SCHEMA_VERSION,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:24]


def _evaluate(
    models: LazyModels, rung: Rung, task: TaskConfig, ingredients: Ingredients, config, progress
) -> dict:
    items = ingredients.tasks[task.name]
    shown = _context_settings(config, rung)
    prompts = RungPrompts(
        task,
        ingredients.pool,
        config.prompt.shots,
        ingredients.retriever_for(shown["chunk_words"]),
        shown["top_k"],
    )
    messages = [_messages(config, rung, prompts, item) for item in items]
    model, tokenizer, context = models.get(rung.adapter)
    started = time.monotonic()
    with context:
        if rung.adapter and _sees_images(rung.adapter, items):
            outputs = _vision_outputs(model, tokenizer, rung.adapter, items, messages, task, config)
        else:  # image items reach text-only rungs as their text alone
            outputs = generate_batch(
                model,
                tokenizer,
                messages,
                GenerationSettings(max_new_tokens=task.max_new_tokens),
                batch_size=config.batch_size,
                progress=f"{rung.name} / {task.name}" if progress else None,
            )
    seconds = time.monotonic() - started
    metric = GENERATIVE_METRICS[task.metric]
    rows = []
    for item, prompt, output in zip(items, messages, outputs, strict=True):
        row = {
            "id": item.id,
            "prompt": prompt,
            "output": output,
            "references": item.answers,
            "score": metric(output, item.answers),
            "prompt_tokens": len(prompt_ids(tokenizer, prompt)),
            "meta": item.meta,
            "fields": {"id": item.id, "category": item.category, **item.meta},
        }
        if "rag" in rung.kind:
            row["retrieved"] = prompts.sources(item)
        shots = prompts.shots_for(item) if rung.kind == "prompt" else None
        if shots is not None:
            row["few_shot"] = shots.note()
        rows.append(row)
    result = {
        "rung": rung.name,
        "task": task.name,
        "metric": task.metric,
        "seconds": round(seconds, 2),
        "items": rows,
    }
    if rung.kind == "prompt":
        result["few_shot"] = _few_shot_summary(task, rows)
    if "rag" in rung.kind:
        result["context"] = shown
    return result


def _few_shot_summary(task: TaskConfig, rows: list[dict]) -> dict:
    """How many items got few-shot examples with their own system prompt, and how many fell back."""
    fallback = sum(1 for r in rows if r.get("few_shot", "").startswith("fallback"))
    with_shots = sum(1 for r in rows if "few_shot" in r)
    summary = {"items": len(rows), "with_examples": with_shots, "fallback": fallback}
    if fallback:
        summary["note"] = (
            f"{fallback} of {len(rows)} items: no few-shot example shares the item's system prompt, "
            "so the nearest examples regardless of system prompt were used; give prompt.examples "
            "rows with the eval items' system prompt to compare like with like"
        )
        log.warning("ladder: prompt / %s: %s", task.name, summary["note"])
    return summary


def _sees_images(adapter: Adapter, items: list[EvalItem]) -> bool:
    from specialize.models.vision import is_vision_adapter

    return is_vision_adapter(adapter.path) and any(i.images for i in items)


def _vision_outputs(model, tokenizer, adapter: Adapter, items, messages, task, config) -> list[str]:
    """A vision adapter's answers: each item's pictures go before its last user turn's text."""
    from specialize.data.media import load_image
    from specialize.models.vision import generate_answers, load_vision_adapter

    vlm = load_vision_adapter(model, tokenizer, adapter.path)
    prompts = [
        [
            *m[:-1],
            {
                "role": "user",
                "content": [{"type": "image"}] * len(i.images)
                + [{"type": "text", "text": m[-1]["content"]}],
            },
        ]
        for i, m in zip(items, messages, strict=True)
    ]
    pictures = [[load_image(ref) for ref in i.images] for i in items]
    return generate_answers(
        vlm,
        tokenizer,
        prompts,
        pictures,
        max_new_tokens=task.max_new_tokens,
        batch_size=config.batch_size,
    )


def _report(
    config: LadderConfig, rungs: list[Rung], results, ingredients, base_hash, out: Path
) -> dict:
    order = [r.name for r in rungs]
    eval_files = {r.name: _write_rung_eval(out, r, results[r.name]) for r in rungs}
    tasks = {}
    for task in config.tasks:
        per_rung = {
            r.name: _rung_summary(task, r, results[r.name][task.name], eval_files[r.name])
            for r in rungs
        }
        scores = {r: [row["score"] for row in results[r][task.name]["items"]] for r in order}
        decision = recommend(scores, order, config.alpha)
        tasks[task.name] = {
            "metric": task.metric,
            "n": len(ingredients.tasks[task.name]),
            "rungs": per_rung,
            "decision": decision.as_dict(),
        }
    pooled = {
        r: [row["score"] for t in config.tasks for row in results[r][t.name]["items"]]
        for r in order
    }
    return {
        "schema_version": LADDER_SCHEMA_VERSION,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {"ref": config.model, "content_hash": base_hash},
        "config": json.loads(json.dumps(_config_dict(config))),
        "order": order,
        "rule": (
            "recommended = the cheapest rung (in the order above) whose score is not significantly "
            f"worse than the best rung's on the same items (paired test, alpha={config.alpha}); "
            "McNemar's exact test for 0/1 scores, a sign-flip permutation test otherwise"
        ),
        "tasks": tasks,
        "overall": recommend(pooled, order, config.alpha).as_dict(),
        "adapters": {
            r.name: {"path": str(r.adapter.path), "content_hash": r.adapter.content_hash}
            for r in rungs
            if r.adapter
        },
    }


def _config_dict(config: LadderConfig) -> dict:
    import yaml

    return yaml.safe_load(dump_config(config))


def _rung_summary(task: TaskConfig, rung: Rung, result: dict, eval_file: Path) -> dict:
    rows = result["items"]
    binary = task.metric in BINARY_METRICS
    summary = {
        "score": estimate([r["score"] for r in rows], binary).as_dict(),
        "seconds_per_item": result["seconds"] / max(1, len(rows)),
        "prompt_tokens_per_item": sum(r["prompt_tokens"] for r in rows) / max(1, len(rows)),
        "one_time_seconds": round(rung.one_time_seconds, 2),
        "eval_file": str(eval_file),
    }
    if "few_shot" in result:
        summary["few_shot"] = result["few_shot"]
    if task.breakdown:
        groups: dict[str, list[float]] = {}
        for row in rows:
            value = row.get("fields", row["meta"]).get(task.breakdown)
            groups.setdefault("(missing)" if value is None else str(value), []).append(row["score"])
        summary["breakdown"] = {
            value: estimate(scores, binary).as_dict() for value, scores in sorted(groups.items())
        }
    return summary


def _write_rung_eval(out: Path, rung: Rung, per_task: dict[str, dict]) -> Path:
    path = out / "rungs" / rung.name.replace(":", "-").replace("+", "-plus-") / "eval.json"
    atomic_write_json(
        path,
        {
            "rung": rung.name,
            "adapter": str(rung.adapter.path) if rung.adapter else None,
            "tasks": per_task,
        },
    )
    return path
