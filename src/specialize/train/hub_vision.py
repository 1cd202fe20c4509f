"""A transformers VLM (LLaVA, Idefics3/SmolVLM, Qwen2-VL) through the vision recipe.

Same rows, stages, loop, checkpoints and run directory as our own VLM (train/vision.py); what
differs is visible here: the model's own processor renders each conversation (its chat template,
its image processing and image-token expansion), LoRA goes on the language model only, and the
model's projector is a PEFT `modules_to_save` module, so it trains whole and travels inside the
adapter. The vision tower stays frozen; its features are not cached (it runs inside the model's
forward), so each step encodes its images again.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from specialize.data.media import load_image
from specialize.data.records import row_images
from specialize.errors import DataError
from specialize.models.hub_vlm import (
    PROJECTOR_MODULES,
    VISION_MODULES,
    chat_parts,
    encode,
    find_module,
    image_count,
    language_targets,
    load_hub_vlm,
    write_hub_marker,
)
from specialize.train.config import RecipeConfig
from specialize.train.vision import IGNORE_INDEX, VisionSetup

log = logging.getLogger(__name__)


def encode_hub_row(processor, row: dict, image_token_id: int, max_length: int) -> dict:
    """Return one row's tensors with labels on the assistant turns only.

    Each assistant turn's tokens are those between the rendering of the conversation before it
    (with the generation prompt) and the rendering through it, as for text rows."""
    messages = chat_parts(row["messages"])
    images = [load_image(ref) for ref in row_images(row)]
    full = encode(processor, messages, images)
    ids = full["input_ids"][0]
    labels = torch.full_like(ids, IGNORE_INDEX)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = messages[:i]
        start = _length(processor, before, images[: image_count(before)], generation=True)
        through = messages[: i + 1]
        end = _length(processor, through, images[: image_count(through)], generation=False)
        labels[start:end] = ids[start:end]
    if int((labels != IGNORE_INDEX).sum()) == 0:
        raise DataError(f"{row.get('origin', 'a row')}: no assistant tokens to train on")
    if len(ids) > max_length:
        kept = int((ids[:max_length] == image_token_id).sum())
        if kept != int((ids == image_token_id).sum()):
            raise DataError(
                f"{row.get('origin', 'a row')}: its images ({int((ids == image_token_id).sum())} "
                f"image tokens) do not fit in training.max_length {max_length}",
                fix="raise training.max_length or shorten the row",
            )
    per_token = {k for k, v in full.items() if v.dim() == 2 and v.shape[1] == len(ids)}
    example = {
        k: (v[0][:max_length] if k in per_token else v) for k, v in full.items() if v is not None
    }
    example["labels"] = labels[:max_length]
    return example


def _length(processor, messages: list[dict], images: list, *, generation: bool) -> int:
    if not messages:
        return 0
    return encode(processor, messages, images, generation=generation)["input_ids"].shape[1]


def collate_hub(examples: list[dict], pad_id: int, device) -> dict:
    """Right-pad the per-token tensors; concatenate the image tensors of the batch's rows."""
    width = max(len(e["input_ids"]) for e in examples)
    batch = {}
    for key in examples[0]:
        values = [e[key] for e in examples if key in e]
        if values[0].dim() == 1:  # per token: ids, mask, labels (and token types)
            fill = {"input_ids": pad_id, "labels": IGNORE_INDEX}.get(key, 0)
            padded = torch.full((len(values), width), fill, dtype=values[0].dtype)
            for row, value in enumerate(values):
                padded[row, : len(value)] = value
            batch[key] = padded.to(device)
        else:
            batch[key] = torch.cat(values).to(device)
    return batch


def hub_setup(recipe: RecipeConfig, rows, device) -> VisionSetup:
    """LoRA on the language model, the projector trained whole, the vision tower frozen."""
    from peft import LoraConfig, get_peft_model

    from specialize.models.loading import resolve_model

    path = resolve_model(recipe.model).path
    own_only = recipe.vision.model_fields_set & {"grid", "pretrained_encoder"}
    if own_only:
        log.warning(
            "vision.%s apply to the recipe's own encoder only; %s brings its vision tower "
            "(remove them to silence this)",
            " and vision.".join(sorted(own_only)),
            path.name,
        )
    model, processor = load_hub_vlm(path)
    lora = recipe.adaptation.lora
    projector = find_module(model, PROJECTOR_MODULES, "projector").rsplit(".", 1)[-1]
    vision = find_module(model, VISION_MODULES, "vision tower")
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=language_targets(model, lora.target_modules),
        modules_to_save=[projector],
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
    )
    tuned = get_peft_model(model, config)
    image_token_id = model.config.image_token_id
    max_length = recipe.training.max_length
    train = [encode_hub_row(processor, r, image_token_id, max_length) for r in rows.train]
    val = [encode_hub_row(processor, r, image_token_id, max_length) for r in rows.val]
    log.info(
        "%s: %d train rows, %d val, projector %s",
        type(model).__name__,
        len(train),
        len(val),
        projector,
    )
    tokenizer = processor.tokenizer
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    named = dict(tuned.named_parameters())

    def save(out: Path) -> None:
        tuned.save_pretrained(str(out))
        processor.save_pretrained(str(out))
        write_hub_marker(out, model)

    return VisionSetup(
        model=tuned,
        projector=[p for n, p in named.items() if f"{projector}.modules_to_save." in n],
        lora=[p for n, p in named.items() if "lora_" in n],
        train=train,
        val=val,
        collate=lambda batch: collate_hub(batch, pad_id, device),
        save=save,
        frozen=[tuned.get_submodule(f"base_model.model.{vision}")],
        epochs=rows.epochs,
    )
