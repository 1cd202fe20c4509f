"""Speech to specialist: spoken questions go through the speech model, then the text model.

An eval file row is an ordinary eval item (question + answer(s), or messages ending with the
reference answer) with an `audio` field: the same question spoken. Every item is answered
twice by the same text model (and adapter): once from the typed question, once from the
transcript. The difference, paired per item, is what hearing costs end to end.
"""

from __future__ import annotations

from pathlib import Path

from specialize.data.audio import load_audio
from specialize.errors import DataError
from specialize.evaluate.stats import paired_difference
from specialize.evaluate.tasks import EvalItem, evaluate_items, load_eval_items
from specialize.evaluate.wer import corpus_wer, score_item
from specialize.models.speech import SpeechModel, transcribe


def spoken_items(path: str | Path, *, system: str | None = None) -> list[tuple[EvalItem, Path]]:
    """Return each item with its recording (relative paths resolve against the file's folder)."""
    path = Path(path)
    items = load_eval_items(path, system=system)
    missing = [item.id for item in items if not isinstance(item.meta.get("audio"), str)]
    if missing:
        raise DataError(
            f"{len(missing)} item(s) have no 'audio' field (first: {missing[0]})",
            where=str(path),
            fix="add the spoken question's recording to every row",
        )
    return [(item, path.parent / item.meta["audio"]) for item in items]


def _question(item: EvalItem) -> str:
    return next(m["content"] for m in reversed(item.prompt) if m["role"] == "user")


def _with_question(item: EvalItem, text: str) -> EvalItem:
    prompt = [dict(m) for m in item.prompt]
    last_user = max(i for i, m in enumerate(prompt) if m["role"] == "user")
    prompt[last_user]["content"] = text
    return EvalItem(item.id, prompt, item.answers, category=item.category, meta=item.meta)


def cascade_eval(
    speech: SpeechModel,
    model,
    tokenizer,
    path: str | Path,
    *,
    metrics: list[str] | None = None,
    system: str | None = None,
    progress: bool = True,
) -> dict:
    """Return typed vs spoken scores (each with n and CI), the paired change, WER, every item."""
    pairs = spoken_items(path, system=system)
    items = [item for item, _ in pairs]
    if any(item.choices is not None for item in items):
        raise DataError("multiple-choice items cannot be spoken", where=str(path))
    transcripts = transcribe(speech, [load_audio(audio) for _, audio in pairs])
    typed = evaluate_items(model, tokenizer, items, metrics, progress="typed" if progress else None)
    heard = evaluate_items(
        model,
        tokenizer,
        [_with_question(item, text) for item, text in zip(items, transcripts, strict=True)],
        metrics,
        progress="spoken" if progress else None,
    )
    words = [
        score_item(_question(item), text) for item, text in zip(items, transcripts, strict=True)
    ]
    change = {}
    for metric in typed.summary:
        before = [row["scores"][metric] for row in typed.items]
        after = [row["scores"][metric] for row in heard.items]
        change[metric] = paired_difference(before, after).as_dict()
    return {
        "data": str(path),
        "speech_model": speech.ref,
        "speech_adapter": speech.adapter,
        "question_wer": corpus_wer(words).as_dict(),
        "typed": typed.summary,
        "spoken": heard.summary,
        "spoken_minus_typed": change,
        "items": [
            {
                "id": item.id,
                "audio": str(audio),
                "question": _question(item),
                "transcript": text,
                "typed_output": t.get("output"),
                "spoken_output": h.get("output"),
                "typed_scores": t["scores"],
                "spoken_scores": h["scores"],
            }
            for (item, audio), text, t, h in zip(
                pairs, transcripts, typed.items, heard.items, strict=True
            )
        ],
    }
