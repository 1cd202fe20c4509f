"""Carry an adapter out of specialize: a merged Hugging Face model, or a plain PEFT directory that
other tools load (vLLM's --enable-lora takes it). The tokenizer and chat template go with both,
so a deployed model formats prompts exactly as in training."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from specialize.artifacts import atomic_dir
from specialize.errors import UserFileError

EXPORT_MARKER = "specialize-export.json"
# Modules vLLM's LoRA layers replace in Llama-style models; an export must not target others.
VLLM_TARGETS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
# A vision adapter's image path (models/vision.py): the projector and how to rebuild the VLM.
VISION_FILES = ("projector.safetensors", "vision.json")


def _copy_vision_parts(source: Path, staging: Path) -> None:
    for name in VISION_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, staging / name)


def merge(entry: dict, out: str | Path) -> Path:
    """Write base+adapter merged into plain weights (safetensors) with the tokenizer; return out."""
    from specialize.models.loading import load_model

    out = _fresh(out)
    model, tokenizer = load_model(entry["base_model"], adapter=entry["path"])
    merged = model.merge_and_unload()
    with atomic_dir(out) as staging:
        merged.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        _copy_vision_parts(Path(entry["path"]), staging)
        _marker(staging, entry, "merged")
    return out


def export_peft(entry: dict, out: str | Path) -> Path:
    """Write the adapter as a plain PEFT directory (adapter_config.json, adapter_model.safetensors)
    with the tokenizer and chat template; return out."""
    from specialize.models.loading import load_tokenizer

    source = Path(entry["path"])
    out = _fresh(out)
    with atomic_dir(out) as staging:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(source / name, staging / name)
        _copy_vision_parts(source, staging)
        config = json.loads((staging / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = entry["base_model"]
        config["target_modules"] = _short_targets(entry["base_model"], config["target_modules"])
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        load_tokenizer(entry["base_model"]).save_pretrained(staging)
        _marker(staging, entry, "peft")
    return out


def _short_targets(base_model: str, targets) -> list[str] | str:
    """Module leaf names (q_proj, ...) instead of full paths, as vLLM and most tools expect, when
    the leaf names select exactly the same modules of the base model."""
    if isinstance(targets, str):
        return targets
    from transformers import AutoConfig, AutoModelForCausalLM

    from specialize.models.loading import resolve_model

    leaves = sorted({t.rsplit(".", 1)[-1] for t in targets})
    config = AutoConfig.from_pretrained(resolve_model(base_model).path)
    with _meta_device():
        model = AutoModelForCausalLM.from_config(config)
    selected = {name for name, _ in model.named_modules() if name.rsplit(".", 1)[-1] in leaves}
    full = {t.removeprefix("base_model.model.") for t in targets}
    return leaves if selected == full else sorted(targets)


def _meta_device():
    import torch

    return torch.device("meta")  # shapes only: no weights are allocated


def _fresh(out: str | Path) -> Path:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserFileError(
            "the export folder is not empty", where=str(out), fix="choose a new --out"
        )
    if out.exists():
        out.rmdir()
    return out


def _marker(folder: Path, entry: dict, kind: str) -> None:
    (folder / EXPORT_MARKER).write_text(
        json.dumps(
            {
                "format": kind,
                "adapter": entry["name"],
                "base_model": entry["base_model"],
                "base_hash": entry["base_hash"],
            },
            indent=2,
        )
        + "\n"
    )
