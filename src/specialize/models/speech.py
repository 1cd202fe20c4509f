"""Load a Whisper speech model (optionally with a PEFT adapter) and transcribe 16 kHz audio."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from specialize.errors import ModelError
from specialize.models.loading import ResolvedModel, attach_adapter, default_device, resolve_model


@dataclass
class SpeechModel:
    """A speech recogniser ready to transcribe: model, processor, and where it came from."""

    model: Any
    processor: Any
    ref: str
    adapter: str | None = None

    @property
    def sampling_rate(self) -> int:
        return self.processor.feature_extractor.sampling_rate


def load_speech_model(
    ref: str | ResolvedModel, *, adapter: str | Path | None = None, dtype: Any = None
) -> SpeechModel:
    """Return a Whisper model and processor in eval mode, with a PEFT adapter if given."""
    import torch
    from transformers import AutoConfig, WhisperForConditionalGeneration, WhisperProcessor

    resolved = ref if isinstance(ref, ResolvedModel) else resolve_model(ref)
    config = AutoConfig.from_pretrained(resolved.path)
    if config.model_type != "whisper":
        raise ModelError(
            f"{resolved.ref} is a {config.model_type} model, not a speech (Whisper) model",
            fix="use whisper-tiny-en or a fine-tuned Whisper directory",
        )
    processor = WhisperProcessor.from_pretrained(resolved.path)
    model = WhisperForConditionalGeneration.from_pretrained(
        resolved.path, dtype=dtype or torch.float32
    )
    if adapter is not None:
        model = attach_adapter(model, adapter)
    model.to(default_device())
    model.eval()
    return SpeechModel(model, processor, resolved.ref, str(adapter) if adapter else None)


def transcribe(
    speech: SpeechModel,
    recordings: list[np.ndarray],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 128,
    progress: str | None = None,
) -> list[str]:
    """Return the transcript of each 16 kHz mono recording (greedy decoding, no timestamps);
    `progress` labels a progress bar over the recordings."""
    import torch
    from tqdm.auto import tqdm

    texts: list[str] = []
    # The decoder sees at most max_target_positions tokens, start and task tokens included.
    limit = getattr(speech.model.config, "max_target_positions", 448) - 4
    max_new_tokens = min(max_new_tokens, limit)
    device = next(speech.model.parameters()).device
    bar = tqdm(
        total=len(recordings), desc=progress, unit="rec", disable=progress is None, leave=False
    )
    for start in range(0, len(recordings), batch_size):
        batch = recordings[start : start + batch_size]
        features = speech.processor.feature_extractor(
            batch, sampling_rate=speech.sampling_rate, return_tensors="pt"
        ).input_features.to(device, dtype=next(speech.model.parameters()).dtype)
        with torch.no_grad():
            ids = speech.model.generate(input_features=features, max_new_tokens=max_new_tokens)
        texts.extend(
            t.strip() for t in speech.processor.batch_decode(ids, skip_special_tokens=True)
        )
        bar.update(len(batch))
    bar.close()
    return texts


def is_speech_model(ref: str) -> bool:
    """True when `ref` names a speech (Whisper) model: a catalog alias of kind speech, or a
    directory whose config.json says model_type whisper. Reads no weights and pulls nothing."""
    import json

    from specialize.models.catalog import CATALOG

    if ref in CATALOG:
        return CATALOG[ref].kind == "speech"
    config = Path(ref).expanduser() / "config.json"
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == "whisper"
    except (OSError, ValueError):
        return False


def is_speech_adapter(path: str | Path) -> bool:
    """True for an adapter (or run) directory trained by `method: asr`: a PEFT adapter saved with
    Whisper's feature extractor, or a fully fine-tuned Whisper in the run's model/ folder."""
    path = Path(path).expanduser()
    if is_speech_model(str(path / "model")):
        return True
    for folder in (path, path / "adapter"):
        extractor = folder / "preprocessor_config.json"
        if (folder / "adapter_config.json").is_file() and extractor.is_file():
            return "Whisper" in extractor.read_text(encoding="utf-8")
    return False


def speech_base_of(adapter: str | Path) -> str | None:
    """Return the base model a speech adapter was trained on: the `model` of its run's
    config.yaml, else the adapter's base_model_name_or_path; None when neither is recorded."""
    import json

    import yaml

    path = Path(adapter).expanduser()
    for run in (path, path.parent) if path.name == "adapter" else (path,):
        recipe = run / "config.yaml"
        if recipe.is_file():
            model = (yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}).get("model")
            if isinstance(model, str):
                return model
    for folder in (path, path / "adapter"):
        config = folder / "adapter_config.json"
        if config.is_file():
            return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path")
    return None
