"""A transformers vision-language model from a local directory (LLaVA, Idefics3/SmolVLM, Qwen2-VL).

The recipe's `model:` may be such a model instead of a text LM: it then brings its own vision
tower, projector and processor, and `specialize` trains LoRA on its language model and its
projector, with the same rows, stages, run directory and registry as our own VLM.
"""

from __future__ import annotations

import json
from pathlib import Path

from specialize.errors import ModelError


def is_hub_vlm(path: str | Path) -> bool:
    """Return whether a model directory holds a vision-language model (a vision and a text config)."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return False
    body = json.loads(config.read_text())
    return "vision_config" in body and "text_config" in body


# Where each family keeps its parts (module names, last component): the language model gets
# LoRA, the projector is trained whole (saved inside the adapter), the vision tower stays frozen.
LANGUAGE_MODULES = ("language_model", "text_model")  # LLaVA / Qwen2-VL; Idefics3 / SmolVLM
PROJECTOR_MODULES = ("multi_modal_projector", "connector", "merger")  # LLaVA; Idefics3; Qwen2-VL
VISION_MODULES = ("vision_tower", "vision_model", "visual")
HUB_KIND = "hub"


def load_hub_vlm(path: str | Path):
    """Return (model, processor) of a local transformers VLM, in eval mode, on the default device."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from specialize.models.loading import default_device

    try:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(
            f"not a loadable vision-language model: {exc}",
            where=str(path),
            fix="point at a transformers VLM folder (config.json, weights and its processor files)",
        ) from exc
    if getattr(processor, "image_processor", None) is None or processor.chat_template is None:
        raise ModelError(
            "the model's processor has no image processor or no chat template",
            where=str(path),
            fix="save the model with its AutoProcessor (processor.save_pretrained)",
        )
    return model.to(default_device()).eval(), processor


def find_module(model, names: tuple[str, ...], what: str) -> str:
    """Return the dotted name of the first submodule whose last name part is one of `names`."""
    for name, _ in model.named_modules():
        if name.rsplit(".", 1)[-1] in names:
            return name
    raise ModelError(
        f"{type(model).__name__}: no {what} module (looked for {', '.join(names)})",
        fix="use a LLaVA, Idefics3/SmolVLM or Qwen2-VL model, or the recipe's own VLM "
        "(a text model with a `vision` block)",
    )


def language_targets(model, wanted: list[str] | str) -> str:
    """Return a PEFT target regex: the wanted linear layers inside the language model only."""
    import re

    from torch import nn

    prefix = find_module(model, LANGUAGE_MODULES, "language model")
    leaves = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if name.startswith(prefix + ".") and isinstance(module, nn.Linear)
        }
    )
    chosen = leaves if wanted == "all-linear" else [n for n in leaves if n in wanted]
    if not chosen:
        raise ModelError(
            f"adaptation.lora.target_modules {wanted} name no linear layer of the language model",
            fix=f"use all-linear or some of: {', '.join(leaves)}",
        )
    return rf"{re.escape(prefix)}\..*\.({'|'.join(map(re.escape, chosen))})"


def chat_parts(messages: list[dict]) -> list[dict]:
    """Return messages with every content as a list of parts, the layout VLM chat templates read."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        else:
            content = [
                {"type": "text", "text": p["text"]} if p["type"] == "text" else {"type": "image"}
                for p in content
            ]
        out.append({"role": message["role"], "content": content})
    return out


def image_count(messages: list[dict]) -> int:
    return sum(p["type"] == "image" for m in messages for p in m["content"])


def encode(processor, messages: list[dict], images: list, *, generation: bool = False) -> dict:
    """Return the processor's tensors (ids with expanded image tokens, pixels) for a conversation."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    return dict(
        processor(text=[text], images=images or None, return_tensors="pt", add_special_tokens=False)
    )


def is_hub_adapter(path: str | Path) -> bool:
    vision = Path(path) / "vision.json"
    return vision.is_file() and json.loads(vision.read_text()).get("kind") == HUB_KIND


def write_hub_marker(out: Path, model) -> None:
    """vision.json of a hub VLM adapter: what it adapts, so loaders pick the hub path."""
    body = {
        "kind": HUB_KIND,
        "model_class": type(model).__name__,
        "projector": find_module(model, PROJECTOR_MODULES, "projector"),
        "schema_version": 1,
    }
    (out / "vision.json").write_text(json.dumps(body, indent=2) + "\n")


def load_hub_adapter(model_ref: str, adapter: str | Path):
    """Return (PEFT model, processor): the hub VLM `model_ref` with the trained adapter applied."""
    from peft import PeftModel

    from specialize.models.loading import default_device, resolve_model

    model, _ = load_hub_vlm(resolve_model(model_ref).path)
    processor = _adapter_processor(adapter)
    tuned = PeftModel.from_pretrained(model, str(adapter))
    return tuned.to(default_device()).eval(), processor


def _adapter_processor(adapter: str | Path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(adapter)


def hub_answers(
    model, processor, prompts: list[list[dict]], images: list[list], *, max_new_tokens: int = 48
) -> list[str]:
    """Return greedy answers, one conversation at a time (processors pad images differently)."""
    import torch

    device = next(model.parameters()).device
    tokenizer = processor.tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers = []
    for prompt, pictures in zip(prompts, images, strict=True):
        batch = encode(processor, chat_parts(prompt), pictures, generation=True)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.no_grad():
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad
            )
        new = out[0, batch["input_ids"].shape[1] :]
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers
