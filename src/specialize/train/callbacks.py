"""Callbacks around the trainers' loop: metrics file, progress bar, non-finite guard, stop reason.

Checkpoints: transformers writes checkpoint-N in place, so a kill mid-write leaves a partial
folder. `CheckpointGuard` writes a marker into a checkpoint only after it is complete and its
weights are finite; resuming and choosing checkpoints only ever look at marked ones.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

from tqdm import tqdm
from transformers import TrainerCallback

from specialize.artifacts import atomic_write_json
from specialize.track.rundir import RunDir

CHECKPOINT_MARKER = "specialize-checkpoint.json"

# Callbacks a caller adds around an ordinary run (a sweep's pruning) without a second entry point.
_EXTRA_CALLBACKS: ContextVar[tuple[TrainerCallback, ...]] = ContextVar(
    "extra_callbacks", default=()
)


@contextlib.contextmanager
def extra_callbacks(*callbacks: TrainerCallback) -> Iterator[None]:
    """Add `callbacks` to every trainer built inside the block, after our own."""
    token = _EXTRA_CALLBACKS.set(_EXTRA_CALLBACKS.get() + callbacks)
    try:
        yield
    finally:
        _EXTRA_CALLBACKS.reset(token)


def active_extra_callbacks() -> list[TrainerCallback]:
    """Return the callbacks added by the enclosing `extra_callbacks` blocks."""
    return list(_EXTRA_CALLBACKS.get())


def is_complete_checkpoint(path: Path) -> bool:
    return (path / CHECKPOINT_MARKER).is_file() and (path / "trainer_state.json").is_file()


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """Return marked checkpoints, oldest first."""
    found = [
        p for p in checkpoints.glob("checkpoint-*") if p.is_dir() and is_complete_checkpoint(p)
    ]
    return sorted(found, key=lambda p: int(p.name.rsplit("-", 1)[1]))


class MetricsLog(TrainerCallback):
    """Appends step, epoch, loss, lr, grad norm, tokens/s, validation loss (and DPO's reward margins
    and accuracies) to metrics.jsonl."""

    def __init__(self, run: RunDir, epochs: int):
        self.run, self.epochs = run, epochs
        self._last_tokens, self._last_time = 0, None

    def on_train_begin(self, args, state, control, **kwargs):
        self._last_tokens, self._last_time = state.num_input_tokens_seen, time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, "epoch": round((state.epoch or 0) * self.epochs, 4)}
        if "loss" in logs:
            now = time.monotonic()
            tokens = state.num_input_tokens_seen - self._last_tokens
            row.update(
                loss=logs["loss"],
                lr=logs.get("learning_rate"),
                grad_norm=logs.get("grad_norm"),
                tokens_per_s=round(tokens / max(now - (self._last_time or now), 1e-9), 1),
                tokens_seen=state.num_input_tokens_seen,
            )
            self._last_tokens, self._last_time = state.num_input_tokens_seen, now
            row.update(_preference_metrics(logs, ""))
        elif "eval_loss" in logs:
            row.update(val_loss=logs["eval_loss"], **_preference_metrics(logs, "eval_"))
        else:
            return
        self.run.append_metrics(row)


def _preference_metrics(logs: dict, prefix: str) -> dict:
    """DPO's reward margins and accuracies (rewards/*) and GRPO's mean reward and KL, as TRL names them."""
    return {
        ("val_" if prefix else "") + key[len(prefix) :]: value
        for key, value in logs.items()
        if key.startswith(prefix + "rewards/") or key in (prefix + "reward", prefix + "kl")
    }


class ProgressBar(TrainerCallback):
    """A progress bar with loss, tokens/s and ETA; nothing else on the terminal."""

    def __init__(self, enabled: bool = True):
        self.enabled, self.bar = enabled, None
        self._tokens, self._time = 0, 0.0

    def on_train_begin(self, args, state, control, **kwargs):
        if self.enabled and state.is_world_process_zero:
            self.bar = tqdm(
                total=state.max_steps,
                initial=state.global_step,
                desc="training",
                unit="step",
                dynamic_ncols=True,
            )
            self._tokens, self._time = state.num_input_tokens_seen, time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs:
            return
        now = time.monotonic()
        postfix = {}
        if "loss" in logs:
            rate = (state.num_input_tokens_seen - self._tokens) / max(now - self._time, 1e-9)
            self._tokens, self._time = state.num_input_tokens_seen, now
            postfix.update(loss=f"{logs['loss']:.4f}", tok_s=f"{rate:,.0f}")
        if "eval_loss" in logs:
            postfix["val_loss"] = f"{logs['eval_loss']:.4f}"
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class CheckpointGuard(TrainerCallback):
    """Stops on a non-finite loss and marks only complete checkpoints with finite weights."""

    def __init__(self):
        self.nonfinite_step: int | None = None
        self.last_finite_loss: float | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        # A non-finite gradient norm comes a step before non-finite weights: stop on either.
        grad_norm = (logs or {}).get("grad_norm", 0.0)
        if math.isfinite(loss) and (grad_norm is None or math.isfinite(grad_norm)):
            self.last_finite_loss = loss
        elif self.nonfinite_step is None:
            self.nonfinite_step = state.global_step
            control.should_training_stop = True
            control.should_save = False  # never checkpoint weights that produced a NaN

    def on_save(self, args, state, control, model=None, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir() or not state.is_world_process_zero:
            return
        if self.nonfinite_step is None and _weights_finite(model):
            atomic_write_json(
                checkpoint / CHECKPOINT_MARKER, {"step": state.global_step, "complete": True}
            )
        elif self.nonfinite_step is None:
            self.nonfinite_step = state.global_step
            control.should_training_stop = True


def _weights_finite(model) -> bool:
    import torch

    return all(torch.isfinite(p).all().item() for p in model.parameters() if p.requires_grad)


def stop_reason(
    state, guard: CheckpointGuard, early_stopping, *, max_steps: int, extra: str | None = None
) -> str:
    """Return in words why training ended."""
    if guard.nonfinite_step is not None:
        return f"stopped: loss or weights became non-finite at step {guard.nonfinite_step}"
    if extra:
        return extra
    if (
        early_stopping is not None
        and early_stopping.early_stopping_patience_counter >= early_stopping.early_stopping_patience
    ):
        return (
            f"early stopping: validation loss did not improve by more than {early_stopping.early_stopping_threshold} "
            f"for {early_stopping.early_stopping_patience} evaluations (step {state.global_step})"
        )
    if state.global_step >= max_steps:
        return f"finished: reached the planned {max_steps} steps"
    return f"stopped at step {state.global_step}"


def chosen_checkpoint(state) -> dict:
    """Return which checkpoint the run ends with and why."""
    if state.best_model_checkpoint:
        return {
            "checkpoint": Path(state.best_model_checkpoint).name,
            "why": f"lowest validation loss ({state.best_metric:.4f}) among evaluated checkpoints",
            "val_loss": state.best_metric,
        }
    return {"checkpoint": None, "why": "no evaluation ran; the final weights are kept"}


def read_trainer_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / "trainer_state.json").read_text())
