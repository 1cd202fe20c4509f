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


def _question(item: EvalItem) -> str:
    return next(m["content"] for m in reversed(item.prompt) if m["role"] == "user")


def _with_question(item: EvalItem, text: str) -> EvalItem:
    prompt = [dict(m) for m in item.prompt]
    last_user = max(i for i, m in enumerate(prompt) if m["role"] == "user")
    prompt[last_user]["content"] = text
    return EvalItem(item.id, prompt, item.answers, category=item.category, meta=item.meta)


def heard_items(
    speech: SpeechModel, items: list[EvalItem], where: str | Path, *, progress: str | None = None
) -> tuple[list[EvalItem], dict, list[str]]:
    """Return the items with each question replaced by its transcript, the question WER (with its
    CI, n) and the transcripts; every item needs `audio` (relative to `where`'s folder)."""
    missing = [item.id for item in items if not isinstance(item.meta.get("audio"), str)]
    if missing:
        raise DataError(
            f"{len(missing)} item(s) have no 'audio' field (first: {missing[0]})",
            where=str(where),
            fix="add the spoken question's recording to every row",
        )
    folder = Path(where).parent
    recordings = [load_audio(folder / item.meta["audio"]) for item in items]
    transcripts = transcribe(speech, recordings, progress=progress)
    words = [score_item(_question(i), t) for i, t in zip(items, transcripts, strict=True)]
    heard = [_with_question(i, t) for i, t in zip(items, transcripts, strict=True)]
    return heard, corpus_wer(words).as_dict(), transcripts


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
    path = Path(path)
    items = load_eval_items(path, system=system)
    if any(item.choices is not None for item in items):
        raise DataError("multiple-choice items cannot be spoken", where=str(path))
    heard_as, question_wer, transcripts = heard_items(
        speech, items, path, progress="hearing" if progress else None
    )
    typed = evaluate_items(model, tokenizer, items, metrics, progress="typed" if progress else None)
    heard = evaluate_items(
        model, tokenizer, heard_as, metrics, progress="spoken" if progress else None
    )
    change = {}
    for metric in typed.summary:
        before = [row["scores"][metric] for row in typed.items]
        after = [row["scores"][metric] for row in heard.items]
        change[metric] = paired_difference(before, after).as_dict()
    return {
        "data": str(path),
        "speech_model": speech.ref,
        "speech_adapter": speech.adapter,
        "question_wer": question_wer,
        "typed": typed.summary,
        "spoken": heard.summary,
        "spoken_minus_typed": change,
        "items": [
            {
                "id": item.id,
                "audio": str(path.parent / item.meta["audio"]),
                "question": _question(item),
                "transcript": text,
                "typed_output": t.get("output"),
                "spoken_output": h.get("output"),
                "typed_scores": t["scores"],
                "spoken_scores": h["scores"],
            }
            for item, text, t, h in zip(items, transcripts, typed.items, heard.items, strict=True)
        ],
    }
