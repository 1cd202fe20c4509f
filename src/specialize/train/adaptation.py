"""How the base model is adapted: a LoRA adapter (base untouched), every weight, or all but the first layers."""

from __future__ import annotations

import logging

from specialize.errors import TrainingError
from specialize.train.config import AdaptationSection

log = logging.getLogger(__name__)


def adapt(model, adaptation: AdaptationSection, task_type: str = "CAUSAL_LM"):
    """Return the model ready to train: wrapped with LoRA, fully trainable, or partly frozen.

    task_type SEQ_CLS (a reward model) also trains and saves the new score head beside the LoRA."""
    if adaptation.trains_adapter:
        from peft import LoraConfig, get_peft_model

        if adaptation.kind == "qlora":
            model = _quantise_base(model)
        lora = adaptation.lora
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type=task_type,
            use_dora=lora.use_dora,
            use_rslora=lora.use_rslora,
            **_init_options(lora.init),
        )
        peft_model = get_peft_model(model, config)
        if lora.init == "pissa":
            _keep_initial_adapter(peft_model)
        return peft_model
    for parameter in model.parameters():
        parameter.requires_grad = True
    if adaptation.kind == "freeze":
        _freeze_first_layers(model, adaptation.freeze_layers)
    return model


def _init_options(init: str) -> dict:
    if init == "default":
        return {}
    if init == "gaussian":
        return {"init_lora_weights": "gaussian"}
    if init == "pissa":
        return {"init_lora_weights": "pissa_niter_4"}  # fast randomised SVD, as PEFT recommends
    from peft import LoftQConfig

    return {"init_lora_weights": "loftq", "loftq_config": LoftQConfig(loftq_bits=4, loftq_iter=1)}


def _keep_initial_adapter(peft_model) -> None:
    """PiSSA rewrites the base weights it starts from (W - BA); keep the initial adapter so the
    trained one can be converted to plain LoRA on the unchanged base (`convert_initialised_adapter`)."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="specialize-initial-adapter-")
    config = peft_model.peft_config["default"]
    initial, config.init_lora_weights = config.init_lora_weights, True
    peft_model.save_pretrained(folder)
    config.init_lora_weights = initial
    peft_model.specialize_initial_adapter = folder


def convert_initialised_adapter(model, out) -> None:
    """Rewrite a PiSSA adapter at `out` as plain LoRA (rank 2r) over the original base."""
    import shutil

    folder = getattr(model, "specialize_initial_adapter", None)
    if folder is None:
        return
    model.save_pretrained(str(out), path_initial_model_for_weight_conversion=folder)
    shutil.rmtree(folder, ignore_errors=True)
    model.specialize_initial_adapter = None


def loraplus_optimizer(model, recipe):
    """AdamW whose LoRA B matrices learn `loraplus_lr_ratio` times faster (LoRA+, through PEFT)."""
    import torch
    from peft.optimizers import create_loraplus_optimizer

    return create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=recipe.training.learning_rate,
        loraplus_lr_ratio=recipe.adaptation.lora.loraplus_lr_ratio,
        weight_decay=recipe.training.weight_decay,
    )


def _quantise_base(model):
    """QLoRA: the base's linear layers as 4-bit NF4 (bitsandbytes, CUDA only; untested here)."""
    from specialize.train.precision import check_quantised_base

    check_quantised_base()  # before importing bitsandbytes, which may be absent
    import bitsandbytes as bnb
    import torch
    from peft import prepare_model_for_kbit_training

    compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, torch.nn.Linear) and name != "lm_head":
                layer = bnb.nn.Linear4bit(
                    child.in_features,
                    child.out_features,
                    bias=child.bias is not None,
                    compute_dtype=compute,
                    quant_type="nf4",
                )
                layer.weight = bnb.nn.Params4bit(
                    child.weight.data.cpu(), requires_grad=False, quant_type="nf4"
                )
                if child.bias is not None:
                    layer.bias = torch.nn.Parameter(child.bias.data, requires_grad=False)
                setattr(parent, name, layer)
    model = model.cuda()  # Params4bit quantise when they move to the GPU
    model.is_loaded_in_4bit = True
    return prepare_model_for_kbit_training(model)


def recipe_chat_template(tokenizer, recipe):
    """The tokenizer with the recipe's chat-template override (checked), if it has one; the
    adapter saves it, so evaluation, serving and every export use the same template."""
    from specialize.data.templates import resolve_chat_template, use_chat_template

    if not recipe.chat_template:
        return tokenizer
    template = resolve_chat_template(recipe.chat_template)
    return use_chat_template(tokenizer, template, "recipe chat_template")


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
