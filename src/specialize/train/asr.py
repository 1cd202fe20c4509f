"""Speech recognition fine-tuning (`method: asr`): a Whisper model learns a domain's words.

The recipe reads like the text ones: load the speech model, adapt it (LoRA by default), build
rows of (recording, transcript), train with transformers' own Seq2SeqTrainer and our callbacks
(metrics log, progress, checkpoint guard, early stopping), save the adapter with the processor.
What differs from text is visible here: a collator that turns recordings into log-mel features
and transcripts into labels, and a probe that measures word error rate on general real speech
at every evaluation, stopping the run when it rises past the retention budget.
After training, `evaluate_after` writes eval.json (test-split WER, base and tuned, every
transcript) and speech_retention.json (general-speech WER before and after, paired, verdict).
"""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from specialize.artifacts import atomic_write_json
from specialize.errors import DataError
from specialize.track.rundir import RunDir
from specialize.train.adaptation import adapt, trainable_summary
from specialize.train.config import RecipeConfig
from specialize.train.datasets import IGNORE_INDEX, recipe_rows
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome, TrainerBundle, fit, plan_steps, to_trl_args

log = logging.getLogger(__name__)
SPEECH_METHODS = {"asr"}


class SpeechCollator:
    """Turns speech rows into a batch: log-mel features of the 16 kHz recordings, label ids."""

    def __init__(self, processor, decoder_start_token_id: int, max_label_tokens: int):
        self.processor = processor
        self.start = decoder_start_token_id
        self.max_label_tokens = max_label_tokens

    def __call__(self, rows: list[dict]) -> dict:
        import torch

        from specialize.data.audio import load_audio

        audio = [load_audio(row["audio"]) for row in rows]
        features = self.processor.feature_extractor(
            audio, sampling_rate=self.processor.feature_extractor.sampling_rate, return_tensors="pt"
        ).input_features
        labels = []
        for row in rows:
            ids = self.processor.tokenizer(row["text"]).input_ids
            if ids and ids[0] == self.start:
                ids = ids[1:]  # the model prepends the start token itself when shifting labels
            labels.append(ids[: self.max_label_tokens])
        width = max(len(ids) for ids in labels)
        padded = torch.full((len(labels), width), IGNORE_INDEX, dtype=torch.long)
        for i, ids in enumerate(labels):
            padded[i, : len(ids)] = torch.tensor(ids)
        return {"input_features": features, "labels": padded}


class SpeechRetentionProbe(TrainerCallback):
    """At each evaluation: WER on general real speech; stops training once it rose past the budget.

    Each checkpoint gets the probe's result in the text probe's file and shape, so `fit` chooses
    the best checkpoint among those within budget exactly as for text recipes."""

    def __init__(self, run: RunDir, processor, items, base_wer: float, budget_points: float | None):
        self.run, self.processor, self.items = run, processor, items
        self.base_wer, self.budget_points = base_wer, budget_points
        self.history: list[dict] = []
        self.exceeded: str | None = None

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        from specialize.evaluate.speech import evaluate_wer
        from specialize.models.speech import SpeechModel

        was_training = model.training
        model.eval()
        result = evaluate_wer(SpeechModel(model, self.processor, "training"), self.items)
        model.train(was_training)
        wer = result["summary"]["wer"]["mean"]
        rise = 100 * (wer - self.base_wer)
        over = self.budget_points is not None and rise > self.budget_points
        self.history.append(
            {
                "step": state.global_step,
                "general_wer": wer,
                "rise_points": round(rise, 2),
                "within_budget": not over,
            }
        )
        self.run.append_metrics(
            {"step": state.global_step, "probe_general_wer": wer, "probe_within_budget": not over}
        )
        log.info("step %d: general-speech WER %.3f (%+.1f points)", state.global_step, wer, rise)
        if over and self.exceeded is None:
            self.exceeded = (
                f"general-speech WER rose {rise:.1f} points (budget {self.budget_points}) at step "
                f"{state.global_step}"
            )
            control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        from specialize.train.retention import PROBE_FILE

        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        last = self.history[-1] if self.history else None
        if last is None or last["step"] != state.global_step or not checkpoint.is_dir():
            return  # no probe at this step: the checkpoint cannot be shown to be within budget
        atomic_write_json(
            checkpoint / PROBE_FILE,
            {**last, "core_lost_points": last["rise_points"], "measure": "general-speech WER"},
        )


def speech_rows(rows: list[dict], split: str) -> list[dict]:
    """Return the rows as {audio, text}; a row that is not a speech row is a named error."""
    out = []
    for row in rows:
        if not isinstance(row.get("audio"), str) or not isinstance(row.get("text"), str):
            where = row.get("origin", "a row")
            raise DataError(
                f"{split} row is not a speech row (needs 'audio' and 'text')",
                where=str(where),
                fix="method asr trains on speech data: jsonl with audio + text, or audiofolder metadata.csv",
            )
        out.append({"audio": row["audio"], "text": row["text"]})
    return out


def train_asr(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    from transformers import EarlyStoppingCallback, Seq2SeqTrainer, Seq2SeqTrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from specialize.models.speech import load_speech_model
    from specialize.train.callbacks import CheckpointGuard, MetricsLog, ProgressBar

    speech = load_speech_model(recipe.model)
    model = speech.model
    model.train()
    model = adapt(model, recipe.adaptation, task_type=None)
    log.info("trainable parameters: %s", trainable_summary(model))
    rows = recipe_rows(recipe, run)
    train, val = speech_rows(rows.train, "train"), speech_rows(rows.val, "val")
    plan = plan_steps(recipe, len(train), len(val), rows.epochs)
    args = to_trl_args(
        recipe,
        run,
        precision,
        plan,
        config_class=Seq2SeqTrainingArguments,
        max_length=None,
        padding_free=None,
        include_num_input_tokens_seen=None,
        remove_unused_columns=False,  # the collator reads audio paths, not model inputs
        label_names=["labels"],
    )
    guard = CheckpointGuard()
    callbacks = [MetricsLog(run, plan.epochs), ProgressBar(progress), guard]
    early = None
    if plan.has_validation and recipe.eval.patience is not None:
        early = EarlyStoppingCallback(recipe.eval.patience, recipe.eval.min_delta)
        callbacks.append(early)
    probe = _retention_probe(recipe, run, speech) if plan.has_validation else None
    if probe is not None:
        callbacks.append(probe)
    from datasets import Dataset

    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(val) if val else None,
        data_collator=SpeechCollator(
            speech.processor,
            speech.model.config.decoder_start_token_id,
            recipe.training.max_length,
        ),
        processing_class=speech.processor.feature_extractor,
        callbacks=callbacks,
    )
    for noisy in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(noisy)
    outcome = fit(
        TrainerBundle(trainer, guard, early, probe),
        run,
        plan,
        speech.processor,
        resume_from=resume_from,
        full=not recipe.adaptation.trains_adapter,
    )
    if probe is not None:
        run.update_record(speech_probe=probe.history)  # fit already gave its stop reason
    return outcome


def _retention_probe(recipe: RecipeConfig, run: RunDir, speech) -> SpeechRetentionProbe | None:
    """Return the general-speech probe when the recipe sets a retention budget."""
    if recipe.retention.suite == "none" or recipe.retention.budget_points is None:
        return None
    from specialize.evaluate.speech import evaluate_wer, general_speech_items

    items = general_speech_items()
    base = evaluate_wer(speech, items)["summary"]["wer"]["mean"]
    log.info("general-speech WER of the base: %.3f (n=%d recordings)", base, len(items))
    return SpeechRetentionProbe(run, speech.processor, items, base, recipe.retention.budget_points)


def evaluate_after(recipe: RecipeConfig, run: RunDir, *, progress: bool = True) -> dict:
    """Write eval.json (test-split WER, base vs tuned) and speech_retention.json; return headlines."""
    from specialize.evaluate.speech import (
        compare_wer,
        general_speech_items,
        speech_items_from_rows,
    )
    from specialize.models.speech import load_speech_model

    test_rows = [row for ds in _datasets(recipe, run) for row in ds.rows("test")]
    items = speech_items_from_rows(test_rows)
    general = general_speech_items() if recipe.retention.suite != "none" else []
    base = load_speech_model(recipe.model)
    base_test, base_general = _measure(base, items), _measure(base, general)
    adapter = recipe.adaptation.trains_adapter
    tuned = load_speech_model(
        recipe.model if adapter else run.model, adapter=run.path if adapter else None
    )
    tuned_test, tuned_general = _measure(tuned, items), _measure(tuned, general)
    summary: dict = {}
    if items:
        task = compare_wer(base_test, tuned_test)
        atomic_write_json(
            run.path / "eval.json",
            {
                "task": "asr",
                "metric": "wer",
                "summary": {
                    "base": base_test["summary"],
                    "tuned": tuned_test["summary"],
                    "change": task,
                },
                "items": [
                    {**t, "base_hypothesis": b["hypothesis"], "base_wer": b["wer"]}
                    for b, t in zip(base_test["items"], tuned_test["items"], strict=True)
                ],
            },
        )
        summary["test_wer"] = {
            "base": task["before"],
            "tuned": task["after"],
            "verdict": task["verdict"],
        }
    if general:
        retention = compare_wer(
            base_general, tuned_general, budget_points=recipe.retention.budget_points
        )
        retention["items"] = [
            {**t, "base_hypothesis": b["hypothesis"], "base_wer": b["wer"]}
            for b, t in zip(base_general["items"], tuned_general["items"], strict=True)
        ]
        atomic_write_json(run.path / "speech_retention.json", retention)
        summary["retention"] = {
            "suite": "general-speech (pocketsphinx-testdata)",
            "verdict": "forgot" if retention["verdict"] == "regressed" else "kept",
            "wer_before": retention["before"],
            "wer_after": retention["after"],
            "per_item_delta": retention["per_item_delta"],
        }
    return summary


def _measure(speech, items) -> dict:
    from specialize.evaluate.speech import evaluate_wer

    return evaluate_wer(speech, items) if items else {"summary": {}, "items": []}


def _datasets(recipe: RecipeConfig, run: RunDir):
    from specialize.train.datasets import resolve_dataset

    return [resolve_dataset(ref, run, recipe.model) for ref in recipe.data.train]
