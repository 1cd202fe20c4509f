"""Seconds of audio per second: transcription and LoRA training of a Whisper model, ours beside
plain transformers (the processor + generate() loop, and Seq2SeqTrainer with the usual collator).

    python benchmarks/asr_throughput.py [--model whisper-tiny-en] [--utterances 16] [--steps 4]

Audio is Nordvik speech synthesised with espeak-ng (examples/nordvik/speech/generate.py).
`--model tiny` uses a tiny random Whisper (no download) to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def synthesise(folder: Path, count: int) -> list[dict]:
    subprocess.run(
        [
            sys.executable,
            str(REPO / "examples/nordvik/speech/generate.py"),
            "--out",
            str(folder),
            "--train",
            str(count),
            "--test",
            "0",
            "--seed",
            "11",
            "--questions",
            "0",
        ],
        check=True,
        capture_output=True,
    )
    rows = []
    for split in ("train", "val"):
        for line in (folder / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            rows.append({"audio": str(folder / row["audio"]), "text": row["text"]})
    return rows


def transcription(model_ref: str, rows: list[dict], seconds: float) -> dict:
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from specialize.data.audio import load_audio
    from specialize.models.loading import resolve_model
    from specialize.models.speech import load_speech_model, transcribe

    audio = [load_audio(r["audio"]) for r in rows]
    speech = load_speech_model(model_ref)
    started = time.perf_counter()
    transcribe(speech, audio, batch_size=8)
    ours = time.perf_counter() - started
    path = resolve_model(model_ref).path
    processor = WhisperProcessor.from_pretrained(path)
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    started = time.perf_counter()
    for i in range(0, len(audio), 8):
        features = processor(
            audio[i : i + 8], sampling_rate=16000, return_tensors="pt"
        ).input_features
        with torch.no_grad():
            model.generate(input_features=features, max_new_tokens=60)
    plain = time.perf_counter() - started
    return {"ours_audio_s_per_s": seconds / ours, "plain_audio_s_per_s": seconds / plain}


def training(
    model_ref: str, rows: list[dict], seconds_per_row: float, steps: int, batch: int
) -> dict:
    """Audio seconds per second through our asr recipe and through a plain Seq2SeqTrainer loop."""
    import yaml

    from specialize.train.config import load_recipe
    from specialize.train.run import train

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        recipe = {
            "model": model_ref,
            "method": "asr",
            "data": {"train": [str(data)]},
            "training": {"max_steps": steps, "batch_size": batch, "learning_rate": 1e-4},
            "eval": {"every_steps": steps, "patience": None},
            "retention": {"suite": "none"},
            "output": {"dir": str(Path(tmp) / "run")},
        }
        (Path(tmp) / "r.yaml").write_text(yaml.safe_dump(recipe))
        run = train(load_recipe(Path(tmp) / "r.yaml"), progress=False)
        runtime = run.record()["outcome"]["runtime_s"]
    plain = _plain_training(model_ref, rows, steps, batch)
    audio = steps * batch * seconds_per_row
    return {"ours_audio_s_per_s": audio / runtime, "plain_audio_s_per_s": audio / plain}


def _plain_training(model_ref: str, rows: list[dict], steps: int, batch: int) -> float:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    from specialize.data.audio import load_audio
    from specialize.models.loading import resolve_model

    path = resolve_model(model_ref).path
    processor = WhisperProcessor.from_pretrained(path)
    model = get_peft_model(
        WhisperForConditionalGeneration.from_pretrained(path),
        LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"),
    )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        chunk = [rows[(step * batch + i) % len(rows)] for i in range(batch)]
        features = processor(
            [load_audio(r["audio"]) for r in chunk], sampling_rate=16000, return_tensors="pt"
        ).input_features
        labels = processor.tokenizer(
            [r["text"] for r in chunk], padding=True, return_tensors="pt"
        ).input_ids
        loss = model(input_features=features, labels=labels[:, 1:]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="whisper-tiny-en")
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model == "tiny":
            from specialize.models.tiny import save_tiny_whisper

            model = str(save_tiny_whisper(Path(tmp) / "tiny"))
        rows = synthesise(Path(tmp) / "speech", args.utterances)
        from specialize.data.audio import TARGET_RATE, load_audio

        seconds = sum(len(load_audio(r["audio"])) for r in rows) / TARGET_RATE
        result = {
            "model": args.model,
            "utterances": len(rows),
            "audio_seconds": round(seconds, 1),
            "transcription": transcription(model, rows, seconds),
            "training": training(model, rows, seconds / len(rows), args.steps, args.batch),
        }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
