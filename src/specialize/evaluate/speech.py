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
from specialize.evaluate.wer import corpus_wer, score_item
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


def evaluate_wer(speech: SpeechModel, items: list[SpeechItem], *, batch_size: int = 8) -> dict:
    """Return WER with its 95% CI and every item's transcript and score."""
    recordings = [load_audio(item.audio) for item in items]
    hypotheses = transcribe(speech, recordings, batch_size=batch_size)
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
        "budget_points": budget_points,
        "verdict": verdict,
    }
