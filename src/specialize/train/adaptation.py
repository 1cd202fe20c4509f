"""How the base model is adapted: a LoRA adapter (base untouched), every weight, or all but the first layers."""

from __future__ import annotations

import logging

from specialize.errors import TrainingError
from specialize.train.config import AdaptationSection

log = logging.getLogger(__name__)


def adapt(model, adaptation: AdaptationSection, task_type: str = "CAUSAL_LM"):
    """Return the model ready to train: wrapped with LoRA, fully trainable, or partly frozen.

    task_type SEQ_CLS (a reward model) also trains and saves the new score head beside the LoRA."""
    if adaptation.kind == "lora":
        from peft import LoraConfig, get_peft_model

        lora = adaptation.lora
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type=task_type,
        )
        return get_peft_model(model, config)
    for parameter in model.parameters():
        parameter.requires_grad = True
    if adaptation.kind == "freeze":
        _freeze_first_layers(model, adaptation.freeze_layers)
    return model


def trainable_summary(model) -> dict:
    """Return trainable and total parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "share": round(trainable / total, 6)}


def _freeze_first_layers(model, count: int) -> None:
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None:
        raise TrainingError(
            f"cannot find transformer layers in {type(model).__name__}",
            fix="use adaptation.kind lora or full",
        )
    if count >= len(layers):
        raise TrainingError(
            f"freeze_layers {count} would freeze all {len(layers)} layers",
            fix=f"use fewer than {len(layers)}",
        )
    frozen = [model.model.embed_tokens, *layers[:count]]
    for module in frozen:
        for parameter in module.parameters():
            parameter.requires_grad = False
    if getattr(model.config, "tie_word_embeddings", False):
        # The output head shares the frozen embedding matrix, so it stays frozen too.
        log.info("embeddings are tied to the output head; both stay frozen")
