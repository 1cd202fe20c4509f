"""Speech evaluation: WER of a speech model on recordings, and the general-speech retention suite.

The general suite is real read speech that Debian ships with its transcripts
(`pocketsphinx-testdata`: five LibriVox sentences and five spoken card names). It never changes,
so before/after numbers compare item by item.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specialize.data.audio import load_audio
from specialize.errors import DataError
from specialize.evaluate.stats import paired_difference
from specialize.evaluate.wer import corpus_wer, paired_corpus_wer_difference, score_item
from specialize.models.speech import SpeechModel, transcribe

POCKETSPHINX_DATA = Path("/usr/share/pocketsphinx/test/data")
_SETS = (("librivox", "transcription"), ("cards", "cards.transcription"))


@dataclass(frozen=True)
class SpeechItem:
    """One recording and what was said."""

    id: str
    audio: str
    text: str


def general_speech_items(root: Path = POCKETSPHINX_DATA) -> list[SpeechItem]:
    """Return the pocketsphinx-testdata recordings with their transcripts (sphinx `.transcription` files)."""
    items = []
    for folder, listing in _SETS:
        path = root / folder / listing
        if not path.is_file():
            raise DataError(
                "general speech suite not found",
                where=str(path),
                fix="install Debian's pocketsphinx-testdata (scripts/setup.sh does)",
            )
        for line in path.read_text(encoding="utf-8").splitlines():
            # "<s> ten of clubs </s> (001)"
            words, _, name = line.rpartition("(")
            text = words.replace("<s>", "").replace("</s>", "").strip()
            audio = root / folder / f"{name.rstrip(') ')}.wav"
            if text and audio.is_file():
                items.append(SpeechItem(f"{folder}/{audio.stem}", str(audio), text))
    return items


def speech_items_from_rows(rows: list[dict]) -> list[SpeechItem]:
    """Return eval items from prepared speech rows ({"audio", "text", "id"})."""
    return [SpeechItem(str(r.get("id", i)), r["audio"], r["text"]) for i, r in enumerate(rows)]


def load_speech_eval_items(path: str | Path) -> list[SpeechItem]:
    """Return the speech rows of an eval file ({audio, text}: jsonl, csv, audiofolder metadata.csv,
    or a prepared split); every defect of every row (file:line) is reported at once."""
    from specialize.data.validate import check_file

    path = Path(path)
    items, problems = [], []
    for checked in check_file(path, "speech"):
        if checked.errors or checked.row is None:
            problems.extend(d.line() for d in checked.errors)
            continue
        items.append(SpeechItem(checked.raw.where, checked.row["audio"], checked.row["text"]))
    if problems:
        raise DataError(
            f"{len(problems)} problem(s) in the speech eval file:\n  " + "\n  ".join(problems),
            where=str(path),
            fix="a speech model is scored on rows with 'audio' (a recording up to 30 s) and "
            "'text' (what was said); text questions go to a text model",
        )
    if not items:
        raise DataError("no rows", where=str(path), fix="add rows with 'audio' and 'text'")
    return items


def speech_eval(
    model_ref: str, adapter: str | Path | None, data: str | Path, *, progress: bool = True
) -> dict:
    """Score the speech model (and, with an adapter, the same model with it) on `data`.

    Returns the eval.json of a speech run: WER with its bootstrap CI per system, every item's
    transcripts, and with an adapter the paired per-item comparison (tuned - base) and a verdict.
    A fully fine-tuned run (its model/ folder) is compared with `model_ref` loaded beside it.
    """
    from specialize.models.speech import load_speech_model

    items = load_speech_eval_items(data)
    full = adapter is not None and (Path(adapter) / "model" / "config.json").is_file()
    if full:
        tuned = load_speech_model(str(Path(adapter) / "model"))
        tuned.adapter = str(adapter)
    else:
        tuned = load_speech_model(model_ref, adapter=adapter)
    results = {}
    if adapter is None or full:
        base = load_speech_model(model_ref) if full else tuned
        results["base"] = evaluate_wer(base, items, progress="base" if progress else None)
    else:  # the same weights with the adapter switched off
        with tuned.model.disable_adapter():
            results["base"] = evaluate_wer(tuned, items, progress="base" if progress else None)
    if adapter is not None:
        results["tuned"] = evaluate_wer(tuned, items, progress="tuned" if progress else None)
    report = {
        "task": "asr",
        "metric": "wer",
        "data": {"path": str(data), "n": len(items)},
        "model": model_ref,
        "adapter": str(adapter) if adapter is not None else None,
        "summary": {name: r["summary"] for name, r in results.items()},
        "items": results["base"]["items"],
    }
    if adapter is not None:
        report["summary"]["change"] = compare_wer(results["base"], results["tuned"])
        report["items"] = [
            {**t, "base_hypothesis": b["hypothesis"], "base_wer": b["wer"]}
            for b, t in zip(results["base"]["items"], results["tuned"]["items"], strict=True)
        ]
    return report


def evaluate_wer(
    speech: SpeechModel,
    items: list[SpeechItem],
    *,
    batch_size: int = 8,
    progress: str | None = None,
) -> dict:
    """Return WER with its 95% CI and every item's transcript and score."""
    recordings = [load_audio(item.audio) for item in items]
    hypotheses = transcribe(speech, recordings, batch_size=batch_size, progress=progress)
    scored = [score_item(item.text, hyp) for item, hyp in zip(items, hypotheses, strict=True)]
    return {
        "summary": {"wer": corpus_wer(scored).as_dict()},
        "items": [
            {"id": item.id, "audio": item.audio, **s.as_dict()}
            for item, s in zip(items, scored, strict=True)
        ],
    }


def compare_wer(before: dict, after: dict, *, budget_points: float | None = None) -> dict:
    """Return the paired change in per-item WER (after - before) and a verdict.

    Verdicts: "regressed" when WER rose significantly and by more than the budget (in points),
    "improved" when it fell significantly, otherwise "no significant change".
    """
    a = [i["wer"] for i in before["items"]]
    b = [i["wer"] for i in after["items"]]
    diff = paired_difference(a, b)
    budget = (budget_points or 0.0) / 100
    if diff.significant and diff.delta > budget:
        verdict = "regressed"
    elif diff.significant and diff.delta < 0:
        verdict = "improved"
    else:
        verdict = "no significant change"
    return {
        "before": before["summary"]["wer"],
        "after": after["summary"]["wer"],
        "per_item_delta": diff.as_dict(),
        "corpus_delta": paired_corpus_wer_difference(before["items"], after["items"]),
        "budget_points": budget_points,
        "verdict": verdict,
    }
