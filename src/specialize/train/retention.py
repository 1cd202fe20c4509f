"""Forgetting-aware training: a retention probe at every checkpoint, a budget, and the checkpoint choice.

The probe is cheap: a fixed spread of core questions (greedy) and the drift (KL from the base)
on general prompts. Its base side is measured once, at the start, on the untouched model. A
checkpoint over budget stops the run; the chosen checkpoint is the one with the lowest validation
loss among those within budget (the latest within budget when there is no validation data).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from transformers import TrainerCallback

from specialize.artifacts import atomic_write_json
from specialize.evaluate.metrics import contains
from specialize.evaluate.runner import drift_kl, generate_batch
from specialize.evaluate.suites import core_items, drift_prompts
from specialize.models.generation import GenerationSettings
from specialize.track.rundir import RunDir
from specialize.train.callbacks import complete_checkpoints
from specialize.train.config import RetentionSection

log = logging.getLogger(__name__)
PROBE_FILE = "retention-probe.json"


class RetentionProbe(TrainerCallback):
    """Runs the probe after each checkpoint is written; stops the run when the budget is exceeded."""

    def __init__(self, run: RunDir, tokenizer, retention: RetentionSection):
        self.run, self.tokenizer, self.retention = run, tokenizer, retention
        items = core_items()
        step = max(1, len(items) // retention.probe_items)
        self.items = items[::step][: retention.probe_items]
        self.prompts = drift_prompts(16)
        self.base: dict | None = None
        self.exceeded: str | None = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        base_file = self.run.path / "retention-probe-base.json"
        if base_file.is_file():  # a resumed run: the base was measured when it started
            self.base = json.loads(base_file.read_text())
            return
        self.base = {"core": self._core(model)}
        atomic_write_json(base_file, self.base)

    def on_save(self, args, state, control, model=None, **kwargs):
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not checkpoint.is_dir() or not state.is_world_process_zero:
            return
        core = self._core(model)
        drift = self._drift(model)
        lost = 100 * (self.base["core"] - core)
        over = []
        if self.retention.budget_points is not None and lost > self.retention.budget_points:
            over.append(
                f"core probe lost {lost:.1f} points (budget {self.retention.budget_points:g})"
            )
        if (
            self.retention.max_drift is not None
            and drift is not None
            and drift > self.retention.max_drift
        ):
            over.append(f"drift {drift:.4f} over max_drift {self.retention.max_drift:g}")
        probe = {
            "step": state.global_step,
            "core": core,
            "core_lost_points": round(lost, 2),
            "drift_kl": drift,
            "within_budget": not over,
        }
        atomic_write_json(checkpoint / PROBE_FILE, probe)
        self.run.append_metrics(
            {
                "step": state.global_step,
                "probe_core": core,
                "probe_drift_kl": drift,
                "probe_within_budget": not over,
            }
        )
        if over and self.exceeded is None:
            self.exceeded = f"retention budget exceeded at step {state.global_step}: " + "; ".join(
                over
            )
            control.should_training_stop = True

    def _core(self, model) -> float:
        was_training = model.training
        model.eval()
        replies = generate_batch(
            model,
            self.tokenizer,
            [i.prompt for i in self.items],
            GenerationSettings(max_new_tokens=32),
            batch_size=64,
        )
        model.train(was_training)
        return sum(contains(r, i.answers) for r, i in zip(replies, self.items, strict=True)) / len(
            self.items
        )

    def _drift(self, model) -> float | None:
        if not hasattr(model, "disable_adapter"):
            return None  # full fine-tuning: no base beside it in memory; the final drift is measured after training
        was_training = model.training
        model.eval()
        values = drift_kl(model, self.tokenizer, self.prompts)
        model.train(was_training)
        return sum(values) / len(values)


def choose_within_budget(run: RunDir, log_history: list[dict]) -> dict:
    """Return the chosen checkpoint among those within budget, and why."""
    val_loss = {h["step"]: h["eval_loss"] for h in log_history if "eval_loss" in h}
    candidates = []
    for checkpoint in complete_checkpoints(run.checkpoints):
        probe_file = checkpoint / PROBE_FILE
        probe = json.loads(probe_file.read_text()) if probe_file.is_file() else None
        if probe and probe["within_budget"]:
            step = int(checkpoint.name.rsplit("-", 1)[1])
            candidates.append((step, val_loss.get(step), checkpoint, probe))
    if not candidates:
        return {
            "checkpoint": None,
            "why": "no checkpoint stayed within the retention budget; the final weights are kept",
        }
    with_loss = [c for c in candidates if c[1] is not None]
    if with_loss:
        step, loss, path, probe = min(with_loss, key=lambda c: c[1])
        why = (
            f"lowest validation loss ({loss:.4f}) among {len(candidates)} checkpoint(s) within the retention budget "
            f"({probe.get('measure', 'core probe')} {probe['core_lost_points']:+.1f} points worse)"
        )
    else:
        step, loss, path, probe = candidates[-1]
        why = "latest checkpoint within the retention budget (no validation data)"
    return {
        "checkpoint": path.name,
        "path": str(path),
        "why": why,
        "val_loss": loss,
        "probe": probe,
    }
