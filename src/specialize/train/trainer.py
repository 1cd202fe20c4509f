"""Build and run a TRL trainer from a recipe: the one place our config maps onto TRL's arguments."""

from __future__ import annotations

import math
from dataclasses import dataclass

from datasets import Dataset
from transformers import EarlyStoppingCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from specialize.artifacts import atomic_dir
from specialize.track.rundir import RunDir
from specialize.train.callbacks import (
    CheckpointGuard,
    MetricsLog,
    ProgressBar,
    active_extra_callbacks,
)
from specialize.train.config import RecipeConfig
from specialize.train.precision import Precision


@dataclass
class Plan:
    """Numbers the trainer needs that follow from the data: steps, warm-up, epochs."""

    rows: int
    epochs: int
    total_steps: int
    warmup_steps: int
    has_validation: bool


def plan_steps(recipe: RecipeConfig, train_rows: int, val_rows: int, epochs: int) -> Plan:
    t = recipe.training
    per_step = t.batch_size * t.gradient_accumulation
    if t.max_steps is not None:
        total = t.max_steps
    else:
        # Rows hold ceil(epochs) passes; a fractional epoch count stops part-way through the last.
        total = max(1, math.ceil(train_rows * (t.epochs / epochs) / per_step))
    return Plan(train_rows, epochs, total, math.ceil(t.warmup_ratio * total), val_rows > 0)


def probing(recipe: RecipeConfig) -> bool:
    """Return whether the recipe asks for the retention probe (a budget is set)."""
    return recipe.retention.budget_points is not None or recipe.retention.max_drift is not None


def to_trl_args(
    recipe: RecipeConfig, run: RunDir, precision: Precision, plan: Plan, config_class=None, **extra
):
    """Return TRL's SFTConfig (or another TRL config class, with `extra` fields) for this recipe."""
    from trl import SFTConfig

    t, e = recipe.training, recipe.eval
    save_every = e.save_every_steps or e.every_steps
    fields = dict(
        output_dir=str(run.checkpoints),
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.scheduler if t.scheduler != "constant" else "constant_with_warmup",
        warmup_steps=plan.warmup_steps,
        num_train_epochs=1,  # the rows already hold every epoch (replay is re-drawn per epoch)
        max_steps=plan.total_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        max_length=None,  # rows arrive cut (sft) or packed (cpt) to training.max_length
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision.bf16,
        fp16=precision.fp16,
        use_cpu=not _cuda(),  # transformers refuses bf16 on a CPU unless told the CPU is meant
        gradient_checkpointing=t.gradient_checkpointing,
        # transformers' own choice (non-reentrant), and which layers recompute
        gradient_checkpointing_kwargs={
            "use_reentrant": False,
            "every_n_layers": t.checkpoint_every,
        },
        eval_strategy="steps" if plan.has_validation else "no",
        eval_steps=e.every_steps,
        save_strategy="steps",
        save_steps=save_every,
        save_total_limit=e.keep_checkpoints,
        # With a retention budget we choose the checkpoint ourselves (best within budget).
        load_best_model_at_end=plan.has_validation and not probing(recipe),
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=e.log_every_steps,
        logging_nan_inf_filter=False,  # a NaN must reach the guard, not be averaged away
        include_num_input_tokens_seen="non_padding",
        padding_free=t.padding_free,
        report_to=_trackers(recipe, run),
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=_cuda(),
    )
    fields |= extra
    # extra=None removes a field that another config class does not have (RewardConfig, GRPOConfig).
    fields = {k: v for k, v in fields.items() if not (k in extra and extra[k] is None)}
    return (config_class or SFTConfig)(**fields)


def _trackers(recipe: RecipeConfig, run: RunDir) -> list[str]:
    """The trainer's own report_to integrations; TensorBoard writes inside the run directory."""
    import os

    if "tensorboard" in recipe.output.report_to:
        # transformers' TensorBoardCallback reads its folder from this variable only.
        os.environ["TENSORBOARD_LOGGING_DIR"] = str(run.path / "tensorboard")
    return list(recipe.output.report_to)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@dataclass
class TrainerBundle:
    trainer: object
    guard: CheckpointGuard
    early_stopping: EarlyStoppingCallback | None
    probe: object | None = None


def build_sft_trainer(
    model,
    tokenizer,
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    plan: Plan,
    train: list[dict],
    val: list[dict],
    *,
    progress: bool,
) -> TrainerBundle:
    """Return a TRL SFTTrainer over pre-tokenised rows, with our callbacks in place of the printers."""
    from trl import SFTTrainer

    from specialize.train.packed_attention import use_training_attention

    # packed documents attend without an L x L mask; padded batches without repeated kv heads
    use_training_attention(model)
    args = to_trl_args(recipe, run, precision, plan)
    return build_trainer(
        SFTTrainer,
        recipe,
        run,
        tokenizer,
        plan,
        train,
        val,
        progress=progress,
        model=model,
        args=args,
    )


def build_trainer(
    trainer_class,
    recipe: RecipeConfig,
    run: RunDir,
    tokenizer,
    plan: Plan,
    train: list[dict],
    val: list[dict],
    *,
    progress: bool,
    **trainer_kwargs,
) -> TrainerBundle:
    """Return a TRL trainer of `trainer_class` over rows, with our callbacks in place of the
    printers: metrics log, progress bar, checkpoint guard, early stopping, retention probe.
    The methods differ only in the class and its own arguments (model, args, ref_model...)."""
    from specialize.train.speed import (
        one_pass_frozen_head,
        reuse_freed_memory,
        score_labelled_positions_only,
    )

    score_labelled_positions_only()
    one_pass_frozen_head()
    reuse_freed_memory()
    guard = CheckpointGuard()
    callbacks = [MetricsLog(run, plan.epochs), ProgressBar(progress), guard]
    early = probe = None
    if plan.has_validation and recipe.eval.patience is not None:
        early = EarlyStoppingCallback(recipe.eval.patience, recipe.eval.min_delta)
        callbacks.append(early)
    if probing(recipe):
        from specialize.train.retention import RetentionProbe

        probe = RetentionProbe(run, tokenizer, recipe.retention)
        callbacks.append(probe)
    callbacks.extend(active_extra_callbacks())  # after the probe: they may read what it wrote
    from specialize.train import gated_mlp

    gated_mlp.install(trainer_kwargs["model"])
    if recipe.adaptation.trains_adapter:
        from specialize.train import fused_lora

        fused_lora.install(trainer_kwargs["model"])
        pages = _frozen_base_pages(trainer_kwargs["model"], trainer_kwargs.get("args"))
        if pages is not None:
            callbacks.append(pages)  # last: after the retention probe has read the fp32 weights
    trainer = trainer_class(
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(val) if val else None,
        processing_class=tokenizer,
        callbacks=callbacks,
        **trainer_kwargs,
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    if recipe.adaptation.lora.loraplus_lr_ratio and recipe.adaptation.trains_adapter:
        from specialize.train.adaptation import loraplus_optimizer

        trainer.optimizer = loraplus_optimizer(trainer.model, recipe)
    return TrainerBundle(trainer, guard, early, probe)


def _frozen_base_pages(model, args):
    """The callback that pages out the fp32 base when a CPU run trains an adapter under bf16
    autocast (every frozen product then reads a kept bf16 copy); None otherwise."""
    import torch

    device = next(model.parameters()).device
    if args is None or not getattr(args, "bf16", False) or device.type != "cpu":
        return None
    from specialize.train.weight_pages import FrozenBasePages

    return FrozenBasePages(model, torch.bfloat16)


def train_with(
    trainer_class,
    recipe,
    run,
    tokenizer,
    plan,
    train,
    val,
    *,
    progress,
    resume_from,
    full=False,
    **kwargs,
):
    """build_trainer, then fit; return (outcome, trainer)."""
    bundle = build_trainer(
        trainer_class, recipe, run, tokenizer, plan, train, val, progress=progress, **kwargs
    )
    return fit(bundle, run, plan, tokenizer, resume_from=resume_from, full=full), bundle.trainer


@dataclass
class Outcome:
    """What a recipe's training produced."""

    steps: int
    stop_reason: str
    chosen: dict
    train_loss: float | None
    best_val_loss: float | None
    runtime_s: float
    nonfinite: bool
    result_dir: str


def fit(
    bundle: TrainerBundle,
    run: RunDir,
    plan: Plan,
    tokenizer,
    *,
    resume_from: str | None,
    full: bool,
) -> Outcome:
    """Train (or resume), restore the best checkpoint, save the adapter or model with its tokenizer."""
    from specialize.train.callbacks import chosen_checkpoint, stop_reason

    trainer = bundle.trainer
    result = trainer.train(resume_from_checkpoint=resume_from)
    state = trainer.state
    chosen = chosen_checkpoint(state)
    if bundle.probe is not None:
        from specialize.train.retention import choose_within_budget

        chosen = choose_within_budget(run, state.log_history)
        if chosen["checkpoint"]:
            # transformers' own loader restores an adapter or a full model alike.
            trainer._load_from_checkpoint(chosen["path"])
    out = run.model if full else run.adapter
    if state.is_world_process_zero:
        # written beside, then renamed: a killed run never leaves a half-written adapter to load
        with atomic_dir(out) as staging:
            trainer.save_model(str(staging))
            tokenizer.save_pretrained(str(staging))  # the chat template travels with the result
            if not full:
                from specialize.train.adaptation import convert_initialised_adapter

                convert_initialised_adapter(trainer.model, staging)
    _drop_unmarked_checkpoints(run)
    losses = [h["loss"] for h in state.log_history if "loss" in h]
    return Outcome(
        steps=state.global_step,
        stop_reason=stop_reason(
            state,
            bundle.guard,
            bundle.early_stopping,
            max_steps=plan.total_steps,
            extra=getattr(bundle.probe, "exceeded", None),
        ),
        chosen=chosen,
        train_loss=losses[-1] if losses else None,
        best_val_loss=state.best_metric,
        runtime_s=result.metrics.get("train_runtime", 0.0),
        nonfinite=bundle.guard.nonfinite_step is not None,
        result_dir=str(out),
    )


def _drop_unmarked_checkpoints(run: RunDir) -> None:
    """Delete checkpoints that are incomplete or hold non-finite weights; good ones stay."""
    import shutil

    from specialize.train.callbacks import is_complete_checkpoint

    for path in run.checkpoints.glob("checkpoint-*"):
        if path.is_dir() and not is_complete_checkpoint(path):
            shutil.rmtree(path, ignore_errors=True)
