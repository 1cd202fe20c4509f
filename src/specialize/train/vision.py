"""Image + text fine-tuning: the sft recipe with a `vision` block.

Reads top to bottom: rows -> tokens with image placeholders -> encoder features, computed once
per distinct image (the encoder is frozen, so they never change) -> stage 1, projector
alignment (LM and LoRA frozen) -> stage 2, projector + LoRA -> the best weights by validation
loss -> adapter dir with the PEFT files, projector.safetensors and vision.json.

The loop is ours rather than TRL's: TRL's vision collator wants a hub processor, and ours is an
encoder of a few lines, so a short loop is clearer than adapting one to the other. It runs over a
`VisionSetup`, so a hub VLM (train/hub_vision.py) shares it: stages, validation, checkpoints
(projector + LoRA, the best weights, optimizer, scheduler, RNG, stage and step) and resume, which
re-enters the stage and replays the batch order to end with the weights of an unbroken run.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from specialize.artifacts import atomic_dir, atomic_write_json
from specialize.data.media import load_image
from specialize.data.records import row_images
from specialize.data.templates import mask_assistant_tokens
from specialize.errors import DataError, TrainingError
from specialize.track.rundir import RunDir
from specialize.train.config import RecipeConfig
from specialize.train.precision import Precision
from specialize.train.trainer import Outcome

log = logging.getLogger(__name__)
IGNORE_INDEX = -100


@dataclass
class VisionExample:
    input_ids: list[int]
    labels: list[int]
    images: list[str]  # references, in placeholder order


def text_only_error(rows: list[dict]) -> None:
    """Refuse image rows in a text-only recipe: they must not train as text with the picture lost."""
    for row in rows:
        if row_images(row):
            raise TrainingError(
                f"a training row has an image ({row.get('origin', 'row ' + str(row.get('id', '?')))}) "
                "but the recipe has no vision block, so the image would be dropped",
                fix="add `vision: {}` to an sft recipe (image + text), or remove the image rows",
            )


def with_placeholders(messages: list[dict], placeholder: str, image_tokens: int) -> list[dict]:
    """Return messages as strings, each image part replaced by `image_tokens` placeholder tokens."""
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, list):
            content = "".join(
                part["text"] if part["type"] == "text" else placeholder * image_tokens
                for part in content
            )
        out.append({**message, "content": content})
    return out


def encode_rows(tokenizer, rows: list[dict], placeholder: str, image_tokens: int, max_length: int):
    """Return one VisionExample per row; a row whose images would be cut off is an error."""
    examples = []
    for row in rows:
        messages = with_placeholders(row["messages"], placeholder, image_tokens)
        masked = mask_assistant_tokens(tokenizer, messages)
        labels = [
            t if m else IGNORE_INDEX for t, m in zip(masked.input_ids, masked.mask, strict=True)
        ]
        ids = masked.input_ids[:max_length]
        images = row_images(row)
        placeholder_id = tokenizer.convert_tokens_to_ids(placeholder)
        if ids.count(placeholder_id) != len(images) * image_tokens:
            raise DataError(
                f"{row.get('origin', 'a row')}: its images do not fit in training.max_length {max_length}",
                fix="raise training.max_length or shorten the row",
            )
        examples.append(VisionExample(ids, labels[:max_length], images))
    return examples


def image_features(
    model, refs: set[str], *, progress: bool, batch: int = 16
) -> dict[str, torch.Tensor]:
    """Return the frozen encoder's pooled features of every distinct image, computed once."""
    ordered = sorted(refs)
    cache: dict[str, torch.Tensor] = {}
    bar = tqdm(total=len(ordered), desc="image features", unit=" images", disable=not progress)
    for start in range(0, len(ordered), batch):
        chunk = ordered[start : start + batch]
        features = model.image_features([load_image(ref) for ref in chunk]).cpu()
        cache.update(zip(chunk, features, strict=True))
        bar.update(len(chunk))
    bar.close()
    return cache


def collate(examples: list[VisionExample], cache: dict, pad_id: int, device) -> dict:
    """Right-pad a batch; features of its images stacked in placeholder order."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
        mask[row, : len(e.input_ids)] = 1
    refs = [ref for e in examples for ref in e.images]
    features = torch.stack([cache[r] for r in refs]) if refs else None
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": labels.to(device),
        "features": features.to(device) if features is not None else None,
    }


def _batches(examples: list[VisionExample], size: int, seed: int):
    """Endless shuffled batches, a new order every pass."""
    rng = random.Random(seed)
    while True:
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), size):
            yield [examples[i] for i in order[start : start + size]]


@dataclass
class VisionSetup:
    """What the loop trains, whatever the VLM: our encoder + projector, or a hub model.

    `projector` trains in both stages, `lora` in the joint stage only; `collate` turns examples
    into the model's keyword arguments (with labels); `save` writes the adapter directory."""

    model: torch.nn.Module
    projector: list[torch.nn.Parameter]
    lora: list[torch.nn.Parameter]
    train: list
    val: list
    collate: Callable[[list], dict]
    save: Callable[[Path], None]
    frozen: list[torch.nn.Module]  # kept in eval mode (the image encoder: BatchNorm, dropout)
    epochs: int = 1  # passes the training rows already hold (recipe_rows repeats them)

    def trainable(self) -> dict[str, torch.nn.Parameter]:
        ids = {id(p) for p in self.projector + self.lora}
        return {k: p for k, p in self.model.named_parameters() if id(p) in ids}


@dataclass
class LoopState:
    """Where a vision run stands: written into every checkpoint, read back on resume."""

    step: int = 0  # global: align steps first, then joint steps
    best: float | None = None  # lowest validation loss so far
    best_step: int = 0
    evals_without_gain: int = 0
    losses: list[float] = field(default_factory=list)


def _own_setup(recipe: RecipeConfig, rows, device, progress: bool) -> VisionSetup:
    """Our VLM: the recipe's text model with LoRA, a frozen encoder, a new projector."""
    from specialize.models.loading import load_model
    from specialize.models.vision import build_vision_lm, save_vision_parts
    from specialize.train.adaptation import adapt

    vision, t = recipe.vision, recipe.training
    lm, tokenizer = load_model(recipe.model)
    lm = adapt(lm, recipe.adaptation)
    model = build_vision_lm(
        lm, tokenizer, grid=vision.grid, pretrained=vision.pretrained_encoder, seed=t.seed
    ).to(device)
    spec = model.spec
    train = encode_rows(tokenizer, rows.train, spec.placeholder, spec.image_tokens, t.max_length)
    val = encode_rows(tokenizer, rows.val, spec.placeholder, spec.image_tokens, t.max_length)
    refs = {ref for e in train + val for ref in e.images}
    cache = image_features(model, refs, progress=progress)
    log.info(
        "%d distinct images encoded once (%d train rows, %d val)", len(cache), len(train), len(val)
    )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )

    def save(out: Path) -> None:
        model.lm.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        save_vision_parts(model, out)

    return VisionSetup(
        model=model,
        projector=list(model.projector.parameters()),
        lora=[p for n, p in model.lm.named_parameters() if "lora_" in n],
        train=train,
        val=val,
        collate=lambda batch: collate(batch, cache, pad_id, device),
        save=save,
        frozen=[model.encoder],
        epochs=rows.epochs,
    )


@torch.no_grad()
def validation_loss(setup: VisionSetup, batch_size: int) -> float | None:
    """Return the mean loss per trained token over the validation examples (None without any)."""
    if not setup.val:
        return None
    setup.model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(setup.val), batch_size):
        batch = setup.collate(setup.val[start : start + batch_size])
        trained = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(setup.model(**batch).loss) * trained
        tokens += trained
    setup.model.train()
    for module in setup.frozen:
        module.eval()
    return total / max(tokens, 1)


def train_vision(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    from specialize.models.hub_vlm import is_hub_vlm
    from specialize.models.loading import default_device, resolve_model
    from specialize.train.datasets import recipe_rows

    started = time.monotonic()
    rows = recipe_rows(recipe, run)
    no_image = [r for r in rows.train if not row_images(r)]
    if len(no_image) == len(rows.train):
        raise DataError(
            "the recipe has a vision block but no training row has an image",
            fix="remove `vision:` for text-only data",
        )
    device = default_device()
    if is_hub_vlm(resolve_model(recipe.model).path):
        from specialize.train.hub_vision import hub_setup

        setup = hub_setup(recipe, rows, device)
    else:
        setup = _own_setup(recipe, rows, device, progress)
    return _fit(setup, recipe, run, resume_from=resume_from, progress=progress, started=started)


def _optimizer(setup: VisionSetup, recipe: RecipeConfig, stage: str, steps: int):
    from transformers import get_scheduler

    t = recipe.training
    groups = [{"params": setup.projector, "lr": recipe.vision.projector_learning_rate}]
    if stage == "joint" and setup.lora:
        groups.append({"params": setup.lora, "lr": t.learning_rate})
    optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
    scheduler = get_scheduler(
        t.scheduler if t.scheduler != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=math.ceil(t.warmup_ratio * steps),
        num_training_steps=max(steps, 1),
    )
    return optimizer, scheduler


def _fit(
    setup: VisionSetup,
    recipe: RecipeConfig,
    run: RunDir,
    *,
    resume_from: str | None,
    progress: bool,
    started: float,
) -> Outcome:
    """Stage 1 (projector), stage 2 (projector + LoRA), checkpoints, the best weights, the adapter."""
    vision, t = recipe.vision, recipe.training
    per_step = t.batch_size * t.gradient_accumulation
    joint = t.max_steps or max(1, math.ceil(len(setup.train) * t.epochs / setup.epochs / per_step))
    stages = [
        ("align", 0, vision.align_steps),
        ("joint", vision.align_steps, vision.align_steps + joint),
    ]
    last = vision.align_steps + joint
    save_every = recipe.eval.save_every_steps or recipe.eval.every_steps
    state, best_state, saved = LoopState(), None, None
    if resume_from is not None:
        state, best_state, saved = load_checkpoint(Path(resume_from), setup)
    batches = _batches(setup.train, t.batch_size, t.seed)
    for _ in range(state.step * t.gradient_accumulation):  # the same batches as an unbroken run
        next(batches)
    stop = "max_steps"
    setup.model.train()
    for module in setup.frozen:
        module.eval()
    bar = tqdm(total=last, initial=state.step, desc="training (vision)", disable=not progress)
    for stage, first, end in stages:
        if state.step >= end:
            continue
        for p in setup.lora:
            p.requires_grad_(stage == "joint")
        optimizer, scheduler = _optimizer(setup, recipe, stage, end - first)
        if saved is not None and saved["stage"] == stage:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
        params = [p for g in optimizer.param_groups for p in g["params"]]
        while state.step < end:
            optimizer.zero_grad()
            loss_sum = 0.0
            for _micro in range(t.gradient_accumulation):
                loss = setup.model(**setup.collate(next(batches))).loss
                (loss / t.gradient_accumulation).backward()
                loss_sum += loss.item() / t.gradient_accumulation
            if not math.isfinite(loss_sum):
                stop = f"non-finite loss at step {state.step + 1}"
                break
            norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
            optimizer.step()
            scheduler.step()
            state.step += 1
            state.losses.append(loss_sum)
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{loss_sum:.3f}")
            if state.step % recipe.eval.log_every_steps == 0:
                run.append_metrics(
                    {
                        "step": state.step,
                        "stage": stage,
                        "loss": loss_sum,
                        "lr": scheduler.get_last_lr()[-1],
                        "grad_norm": float(norm),
                    }
                )
            if stage == "joint" and (
                state.step % recipe.eval.every_steps == 0 or state.step == end
            ):
                best_state, stop = _evaluate(setup, recipe, run, state, best_state, stop)
            if state.step % save_every == 0:
                save_checkpoint(run, setup, state, best_state, stage, optimizer, scheduler)
                _prune_checkpoints(run, recipe.eval.keep_checkpoints)
            if stop != "max_steps":
                break
        if stop != "max_steps":
            break
    bar.close()
    return _finish(setup, run, state, best_state, stop, started)


@torch.no_grad()
def _evaluate(setup, recipe, run, state: LoopState, best_state, stop: str):
    """Validation loss; keep the best weights; return (best_state, stop reason)."""
    t = recipe.training
    val_loss = validation_loss(setup, t.batch_size)
    if val_loss is None:
        return best_state, stop
    run.append_metrics({"step": state.step, "stage": "joint", "val_loss": val_loss})
    if state.best is None or val_loss < state.best - recipe.eval.min_delta:
        state.best, state.best_step, state.evals_without_gain = val_loss, state.step, 0
        best_state = {k: v.detach().clone() for k, v in setup.trainable().items()}
    else:
        state.evals_without_gain += 1
    if recipe.eval.patience and state.evals_without_gain >= recipe.eval.patience:
        stop = f"early stopping: no lower validation loss in {state.evals_without_gain} evaluations"
    return best_state, stop


def _finish(setup, run: RunDir, state: LoopState, best_state, stop: str, started: float) -> Outcome:
    """Restore the best weights, write the adapter (atomically), say what happened."""
    chosen = {"checkpoint": None, "why": "no validation rows; the final weights are kept"}
    if best_state is not None:
        with torch.no_grad():
            for name, param in setup.trainable().items():
                param.copy_(best_state[name])
        chosen = {
            "checkpoint": f"step-{state.best_step}",
            "why": f"lowest validation loss ({state.best:.4f}) among evaluations",
            "val_loss": state.best,
        }
    nonfinite = stop.startswith("non-finite")
    if not nonfinite:
        with atomic_dir(run.adapter) as staging:
            setup.save(staging)
    return Outcome(
        steps=state.step,
        stop_reason=stop,
        chosen=chosen,
        train_loss=state.losses[-1] if state.losses else None,
        best_val_loss=None if best_state is None else state.best,
        runtime_s=round(time.monotonic() - started, 1),
        nonfinite=nonfinite,
        result_dir=str(run.adapter),
    )


# A vision checkpoint: the trained tensors (projector + LoRA), the best ones so far, the stage's
# optimizer and scheduler, the RNG states and LoopState; the marker is written last.
TRAINABLE, BEST, OPTIMIZER, STATE = (
    "trainable.safetensors",
    "best.safetensors",
    "optimizer.pt",
    "trainer_state.json",
)


def save_checkpoint(run: RunDir, setup, state: LoopState, best_state, stage, optimizer, scheduler):
    """Write checkpoint-<step> atomically; only then does it carry the completion marker."""
    from safetensors.torch import save_file

    from specialize.train.callbacks import CHECKPOINT_MARKER

    def plain(tensors: dict) -> dict:
        return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}

    with atomic_dir(run.checkpoints / f"checkpoint-{state.step}") as staging:
        save_file(plain(setup.trainable()), str(staging / TRAINABLE))
        if best_state is not None:
            save_file(plain(best_state), str(staging / BEST))
        rng = {"torch": torch.get_rng_state(), "python": random.getstate()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(
            {
                "stage": stage,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": rng,
            },
            staging / OPTIMIZER,
        )
        body = {"kind": "vision", "global_step": state.step, "stage": stage, **asdict(state)}
        atomic_write_json(staging / STATE, body)
        atomic_write_json(staging / CHECKPOINT_MARKER, {"step": state.step, "complete": True})


def load_checkpoint(path: Path, setup) -> tuple[LoopState, dict | None, dict]:
    """Put a vision checkpoint's tensors into the model; return (state, best tensors, optimizer)."""
    from safetensors.torch import load_file

    if not (path / TRAINABLE).is_file():
        raise TrainingError(
            f"{path} is not a vision checkpoint (no {TRAINABLE})",
            fix="resume a run with the recipe that wrote it",
        )
    body = json.loads((path / STATE).read_text())
    state = LoopState(**{k: body[k] for k in LoopState.__dataclass_fields__})
    tensors, live = load_file(str(path / TRAINABLE)), setup.trainable()
    if set(tensors) != set(live):
        raise TrainingError(
            f"{path}: its tensors do not match the model being resumed "
            f"({len(set(tensors) ^ set(live))} names differ)",
            fix="resume with the recipe and base model that wrote the checkpoint",
        )
    with torch.no_grad():
        for name, param in live.items():
            param.copy_(tensors[name])
    best = load_file(str(path / BEST)) if (path / BEST).is_file() else None
    saved = torch.load(path / OPTIMIZER, map_location="cpu", weights_only=False)
    torch.set_rng_state(saved["rng"]["torch"])
    random.setstate(saved["rng"]["python"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return state, best, saved


def _prune_checkpoints(run: RunDir, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints (each carries the best weights so far)."""
    import shutil

    from specialize.train.callbacks import complete_checkpoints

    for old in complete_checkpoints(run.checkpoints)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
