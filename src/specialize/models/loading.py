"""Resolve model references, load models and tokenizers, and describe them.

A reference is a catalog alias, a local Hugging Face directory, a local `.gguf` file, or a hub
id. Every loader goes through `resolve_model`, so all four behave the same downstream.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from specialize.artifacts import atomic_write_json, sha256_file
from specialize.errors import ModelError
from specialize.home import cache_dir, models_dir
from specialize.models.catalog import CATALOG
from specialize.models.materialize import convert_gguf, is_materialised, pull

_WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class ResolvedModel:
    """A model reference turned into a local directory."""

    ref: str
    path: Path
    kind: str  # alias | dir | gguf | hub

    @property
    def name(self) -> str:
        return self.ref if self.kind == "alias" else self.path.name


def resolve_model(ref: str) -> ResolvedModel:
    """Return the local directory for a model reference, materialising it if needed."""
    if ref in CATALOG:
        return ResolvedModel(ref, pull(ref), "alias")
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        return ResolvedModel(ref, _gguf_to_dir(path), "gguf")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                "directory has no config.json, so it is not a Hugging Face model",
                where=str(path),
                fix="point at the folder that holds config.json and the weights",
            )
        return ResolvedModel(ref, path.resolve(), "dir")
    if path.exists():
        raise ModelError("not a model directory or a .gguf file", where=str(path))
    if _looks_like_hub_id(ref):
        return ResolvedModel(ref, _hub_snapshot(ref), "hub")
    raise ModelError(
        f"unknown model {ref!r}: not a catalog alias, local directory or .gguf file",
        fix=f"use one of: {', '.join(CATALOG)} (see `specialize models list`), or a local path",
    )


def load_tokenizer(ref: str | ResolvedModel):
    """Return the tokenizer of a model, with a pad token set (reusing EOS when there is none)."""
    from transformers import AutoTokenizer

    resolved = ref if isinstance(ref, ResolvedModel) else resolve_model(ref)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(ref: str | ResolvedModel, *, dtype: Any = None, adapter: str | Path | None = None):
    """Return (model, tokenizer) for a reference, optionally with a PEFT adapter applied, in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    from specialize.models.hub_vlm import is_hub_vlm

    resolved = ref if isinstance(ref, ResolvedModel) else resolve_model(ref)
    tokenizer = load_tokenizer(resolved)
    auto = AutoModelForCausalLM
    if is_hub_vlm(resolved.path):  # text in, text out as well: retention, samples, text prompts
        from transformers import AutoModelForImageTextToText as auto
    model = auto.from_pretrained(resolved.path, dtype=dtype or torch.float32)
    if adapter is not None:
        model = attach_adapter(model, adapter)
        template = adapter_chat_template(adapter)
        if template:
            tokenizer.chat_template = template  # the one it was trained with (an override travels)
    model.to(default_device())
    model.eval()
    return model, tokenizer


def adapter_chat_template(adapter: str | Path) -> str | None:
    """Return the chat template saved beside an adapter (chat_template.jinja or the tokenizer's
    config), or None when the adapter carries none."""
    import json

    path = adapter_dir(adapter)
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    config = path / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def attach_adapter(model, adapter: str | Path, name: str = "default"):
    """Return `model` wrapped with the PEFT adapter stored in `adapter` (a dir, or a run dir)."""
    from peft import PeftModel

    path = adapter_dir(adapter)
    return PeftModel.from_pretrained(model, path, adapter_name=name)


def adapter_dir(adapter: str | Path) -> Path:
    """Return the PEFT adapter folder for an adapter dir or a run dir that contains `adapter/`."""
    path = Path(adapter).expanduser()
    if (path / "adapter_config.json").is_file():
        return path
    if (path / "adapter" / "adapter_config.json").is_file():
        return path / "adapter"
    raise ModelError(
        "no adapter_config.json here or in its adapter/ folder",
        where=str(path),
        fix="pass a PEFT adapter directory or a run directory",
    )


def default_device() -> str:
    """Return 'cuda' when a GPU is usable, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def content_hash(path: Path) -> str:
    """Return a sha256 over a model directory's config and weights (cached by size and mtime).

    It keys cached baseline measurements, so two copies of the same weights share them.
    """
    files = sorted(
        p for p in path.iterdir() if p.suffix in _WEIGHT_SUFFIXES or p.name == "config.json"
    )
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in files):
        raise ModelError("no weight files (*.safetensors or *.bin)", where=str(path))
    stamp = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    cache_file = cache_dir() / "content_hashes.json"
    cache = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    key = str(path.resolve())
    if key in cache and cache[key]["stamp"] == stamp:
        return cache[key]["sha256"]
    import hashlib

    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        digest.update(sha256_file(p).encode())
    cache[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
    atomic_write_json(cache_file, cache)
    return cache[key]["sha256"]


@dataclass(frozen=True)
class ModelInfo:
    ref: str
    path: str
    architecture: str
    parameters: int
    dtype: str
    context_length: int | None
    chat_template: bool
    size_bytes: int
    content_hash: str


def model_info(ref: str) -> ModelInfo:
    """Return what a model is: architecture, size, dtype, context, template, content hash."""
    from transformers import AutoConfig

    resolved = resolve_model(ref)
    config = AutoConfig.from_pretrained(resolved.path)
    parameters = count_parameters(resolved.path)
    tokenizer = load_tokenizer(resolved)
    size = sum(p.stat().st_size for p in resolved.path.rglob("*") if p.is_file())
    return ModelInfo(
        ref=ref,
        path=str(resolved.path),
        architecture=(config.architectures or [config.model_type])[0],
        parameters=parameters,
        dtype=str(getattr(config, "dtype", None) or getattr(config, "torch_dtype", "unknown")),
        context_length=getattr(config, "max_position_embeddings", None)
        or getattr(config, "max_target_positions", None),
        chat_template=bool(getattr(tokenizer, "chat_template", None)),
        size_bytes=size,
        content_hash=content_hash(resolved.path),
    )


def count_parameters(path: Path) -> int:
    """Return the number of stored parameters, read from safetensors headers (no weights loaded)."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ModelError("no *.safetensors weights to count", where=str(path))
    total = 0
    for file in files:
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                total += count
    return total


def _gguf_to_dir(path: Path) -> Path:
    """Return a converted copy of a local GGUF, converting once per file content."""
    if not path.is_file():
        raise ModelError("file not found", where=str(path), fix="check the path")
    target = models_dir() / f"gguf-{path.stem}-{sha256_file(path)[:12]}"
    if not is_materialised(target):
        convert_gguf(path, target, provenance={"source_file": str(path.resolve())})
    return target


def _looks_like_hub_id(ref: str) -> bool:
    parts = ref.split("/")
    return len(parts) == 2 and all(parts) and not ref.startswith((".", "~"))


def _hub_snapshot(ref: str) -> Path:
    """Return a hub model from the local HF cache, or download it where the hub is reachable."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(ref, local_files_only=True))
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(
            f"{ref!r} is not in the local Hugging Face cache and the hub is disabled (HF_HUB_OFFLINE=1)",
            fix="use a local model directory, a .gguf file, or a catalog alias (specialize models list)",
        )
    try:
        return Path(snapshot_download(ref, etag_timeout=10))
    except Exception as exc:
        raise ModelError(
            f"cannot fetch {ref!r} from the Hugging Face hub ({type(exc).__name__})",
            fix="offline? use a local model directory, a .gguf file, or a catalog alias "
            "(specialize models list)",
        ) from None
