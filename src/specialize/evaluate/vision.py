"""Image items: the tuned VLM against the base text model (text only) and a blind control.

Three systems answer the same items:
  tuned      the VLM (projector + LoRA) with the item's image
  text_only  the base LM with the adapter off and the image removed (what the text alone gives)
  blind      the VLM with the item's image swapped for another item's image (from a blind file
             with the same rows, or drawn here); near chance when the answers come from the image
Scores are `contains` over the item's key answers (its "answer"/"answers" field, else the
reference turn), with Wilson intervals; the paired differences use McNemar's exact test.
"""

from __future__ import annotations

import datetime as dt
import random
from pathlib import Path

from tqdm import tqdm

from specialize.artifacts import atomic_write_json
from specialize.data.media import load_image
from specialize.data.records import row_images
from specialize.data.validate import check_file
from specialize.errors import DataError
from specialize.evaluate.metrics import contains
from specialize.evaluate.stats import paired_difference, wilson

SYSTEMS = ("tuned", "text_only", "blind")


def load_image_items(path: str | Path) -> list[dict]:
    """Return the image rows of an eval file (each image checked); any bad row is an error."""
    items, problems = [], []
    for checked in check_file(path):
        if checked.errors:
            problems += [d.line() for d in checked.errors]
            continue
        row = checked.row
        if not row_images(row) or row["messages"][-1]["role"] != "assistant":
            problems.append(
                f"{checked.raw.where}: expected an image question and an assistant answer"
            )
            continue
        answers = row.get("answers") or row.get("answer") or row["messages"][-1]["content"]
        items.append(
            {
                "where": checked.raw.where,
                "prompt": row["messages"][:-1],
                "reference": row["messages"][-1]["content"],
                "answers": [answers] if isinstance(answers, str) else list(answers),
                "images": row_images(row),
                "category": row.get("category"),
            }
        )
    if problems:
        raise DataError(f"{len(problems)} unusable eval row(s): " + "; ".join(problems[:5]))
    if not items:
        raise DataError(f"{path}: no image items", fix="give rows with an image and an answer")
    return items


def swapped_images(items: list[dict], seed: int = 0) -> list[list[str]]:
    """Return, per item, another item's images (never its own), for the blind control."""
    pool = sorted({tuple(i["images"]) for i in items})
    if len(pool) < 2:
        raise DataError("the blind control needs at least two distinct images among the items")
    rng = random.Random(seed)
    return [list(rng.choice([p for p in pool if p != tuple(i["images"])])) for i in items]


def _without_images(messages: list[dict]) -> list[dict]:
    out = []
    for m in messages:
        content = m["content"]
        if isinstance(content, list):
            content = " ".join(p["text"] for p in content if p["type"] == "text")
        out.append({"role": m["role"], "content": content})
    return out


def evaluate_image_items(
    model_ref: str,
    adapter: str | Path,
    data: str | Path,
    *,
    blind: str | Path | None = None,
    out: str | Path = "eval.json",
    max_new_tokens: int = 48,
    progress: bool = True,
) -> dict:
    """Score tuned, text-only and blind on the image items of `data`; write and return eval.json."""
    from specialize.models.hub_vlm import is_hub_adapter
    from specialize.models.loading import adapter_dir

    items = load_image_items(data)
    if blind is not None:
        blind_items = load_image_items(blind)
        if [_without_images(b["prompt"]) for b in blind_items] != [
            _without_images(i["prompt"]) for i in items
        ]:
            raise DataError(
                f"{blind}: the blind file must ask the same questions as {data}, in order",
                fix="generate both from the same items, only the images differ",
            )
        blind_images = [b["images"] for b in blind_items]
    else:
        blind_images = swapped_images(items)
    path = adapter_dir(adapter)
    systems = _hub_systems if is_hub_adapter(path) else _own_systems
    answer, text_only = systems(model_ref, path, max_new_tokens)
    prompts = [i["prompt"] for i in items]
    answers: dict[str, list[str]] = {}
    for system, images in (("tuned", [i["images"] for i in items]), ("blind", blind_images)):
        pictures = [
            [load_image(ref) for ref in refs]
            for refs in tqdm(images, desc=f"{system}: images", disable=not progress)
        ]
        answers[system] = answer(prompts, pictures)
    answers["text_only"] = text_only([_without_images(p) for p in prompts])
    scores = {
        s: [contains(answers[s][k], i["answers"]) for k, i in enumerate(items)] for s in SYSTEMS
    }
    summary = {s: wilson(sum(v), len(v)).as_dict() for s, v in scores.items()}
    report = {
        "schema_version": 1,
        "kind": "image",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": model_ref,
        "adapter": str(path),
        "data": str(data),
        "blind": str(blind) if blind else "drawn: each item's image swapped for another item's",
        "metric": "contains",
        "summary": summary,
        "paired": {
            f"tuned_vs_{other}": paired_difference(scores[other], scores["tuned"]).as_dict()
            for other in ("text_only", "blind")
        },
        "by_category": _by_category(items, scores),
        "items": [
            {
                "where": i["where"],
                "question": _without_images(i["prompt"])[-1]["content"],
                "images": [ref if len(ref) < 300 else ref[:40] + "..." for ref in i["images"]],
                "blind_images": blind_images[k],
                "answers": i["answers"],
                **{s: {"output": answers[s][k], "score": scores[s][k]} for s in SYSTEMS},
            }
            for k, i in enumerate(items)
        ],
    }
    atomic_write_json(Path(out), report)
    return report


def _own_systems(model_ref: str, path: Path, max_new_tokens: int):
    """Our VLM: (answers with images, the base LM's answers to the text alone)."""
    from specialize.evaluate.runner import generate_batch
    from specialize.models.generation import GenerationSettings
    from specialize.models.loading import load_model
    from specialize.models.vision import generate_answers, load_vision_adapter

    lm, tokenizer = load_model(model_ref, adapter=path)
    vlm = load_vision_adapter(lm, tokenizer, path)

    def answer(prompts, pictures):
        return generate_answers(vlm, tokenizer, prompts, pictures, max_new_tokens=max_new_tokens)

    def text_only(prompts):
        with lm.disable_adapter():
            settings = GenerationSettings(max_new_tokens=max_new_tokens)
            return generate_batch(lm, tokenizer, prompts, settings)

    return answer, text_only


def _hub_systems(model_ref: str, path: Path, max_new_tokens: int):
    """A hub VLM: (tuned answers with images, the untuned VLM's answers to the text alone)."""
    from specialize.models.hub_vlm import hub_answers, load_hub_adapter

    model, processor = load_hub_adapter(model_ref, path)

    def answer(prompts, pictures):
        return hub_answers(model, processor, prompts, pictures, max_new_tokens=max_new_tokens)

    def text_only(prompts):
        with model.disable_adapter():
            return answer(prompts, [[] for _ in prompts])

    return answer, text_only


def _by_category(items: list[dict], scores: dict[str, list[float]]) -> dict:
    categories = sorted({i["category"] for i in items if i["category"]})
    return {
        c: {
            s: wilson(
                sum(v for v, i in zip(scores[s], items, strict=True) if i["category"] == c),
                sum(1 for i in items if i["category"] == c),
            ).as_dict()
            for s in SYSTEMS
        }
        for c in categories
    }
