"""Image + text fine-tuning: the sft recipe with a `vision` block.

Reads top to bottom: rows -> tokens with image placeholders -> encoder features, computed once
per distinct image (the encoder is frozen, so they never change) -> stage 1, projector
alignment (LM and LoRA frozen) -> stage 2, projector + LoRA -> the best weights by validation
loss -> adapter dir with the PEFT files, projector.safetensors and vision.json.

The loop is ours rather than TRL's: TRL's vision collator wants a hub processor, and ours is an
encoder of a few lines, so a short loop is clearer than adapting one to the other.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

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


@torch.no_grad()
def validation_loss(model, examples, cache, pad_id, device, batch_size: int) -> float | None:
    if not examples:
        return None
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start : start + batch_size], cache, pad_id, device)
        trained = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())
        total += float(model(**batch).loss) * trained
        tokens += trained
    model.train()
    return total / max(tokens, 1)


def _trainable_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def train_vision(
    recipe: RecipeConfig,
    run: RunDir,
    precision: Precision,
    *,
    resume_from: str | None = None,
    progress: bool = True,
) -> Outcome:
    from transformers import get_scheduler

    from specialize.models.loading import default_device, load_model
    from specialize.models.vision import build_vision_lm, save_vision_parts
    from specialize.train.adaptation import adapt
    from specialize.train.datasets import recipe_rows

    if resume_from is not None:
        raise TrainingError(
            "vision runs do not resume from checkpoints yet", fix="start the recipe again"
        )
    started = time.monotonic()
    vision, t = recipe.vision, recipe.training
    rows = recipe_rows(recipe, run)
    no_image = [r for r in rows.train if not row_images(r)]
    if len(no_image) == len(rows.train):
        raise DataError(
            "the recipe has a vision block but no training row has an image",
            fix="remove `vision:` for text-only data",
        )
    device = default_device()
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

    per_step = t.batch_size * t.gradient_accumulation
    total = t.max_steps or max(1, math.ceil(len(train) * t.epochs / rows.epochs / per_step))
    lora_params = [p for n, p in model.lm.named_parameters() if "lora_" in n]
    stages = [("align", vision.align_steps, []), ("joint", total, lora_params)]
    batches = _batches(train, t.batch_size, t.seed)
    step, best, best_state, evals_without_gain, stop = 0, math.inf, None, 0, "max_steps"
    best_step = 0
    losses: list[float] = []
    model.train()
    model.encoder.eval()
    bar = tqdm(total=vision.align_steps + total, desc="training (vision)", disable=not progress)
    for stage, steps, extra in stages:
        for p in lora_params:
            p.requires_grad_(stage == "joint")
        groups = [
            {"params": list(model.projector.parameters()), "lr": vision.projector_learning_rate}
        ]
        if extra:
            groups.append({"params": extra, "lr": t.learning_rate})
        optimizer = torch.optim.AdamW(groups, weight_decay=t.weight_decay)
        scheduler = get_scheduler(
            t.scheduler if t.scheduler != "constant" else "constant_with_warmup",
            optimizer,
            num_warmup_steps=math.ceil(t.warmup_ratio * steps),
            num_training_steps=max(steps, 1),
        )
        for _ in range(steps):
            optimizer.zero_grad()
            loss_sum = 0.0
            for _micro in range(t.gradient_accumulation):
                loss = model(**collate(next(batches), cache, pad_id, device)).loss
                (loss / t.gradient_accumulation).backward()
                loss_sum += loss.item() / t.gradient_accumulation
            if not math.isfinite(loss_sum):
                stop = f"non-finite loss at step {step + 1}"
                break
            norm = torch.nn.utils.clip_grad_norm_(
                [p for g in groups for p in g["params"]], t.max_grad_norm
            )
            optimizer.step()
            scheduler.step()
            step += 1
            losses.append(loss_sum)
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{loss_sum:.3f}")
            if step % recipe.eval.log_every_steps == 0:
                run.append_metrics(
                    {
                        "step": step,
                        "stage": stage,
                        "loss": loss_sum,
                        "lr": scheduler.get_last_lr()[-1],
                        "grad_norm": float(norm),
                    }
                )
            if stage == "joint" and (step % recipe.eval.every_steps == 0 or _ == steps - 1):
                val_loss = validation_loss(model, val, cache, pad_id, device, t.batch_size)
                if val_loss is None:
                    continue
                run.append_metrics({"step": step, "stage": stage, "val_loss": val_loss})
                if val_loss < best - recipe.eval.min_delta:
                    best, best_state, evals_without_gain = val_loss, _trainable_state(model), 0
                    best_step = step
                else:
                    evals_without_gain += 1
                if recipe.eval.patience and evals_without_gain >= recipe.eval.patience:
                    stop = f"early stopping: no lower validation loss in {evals_without_gain} evaluations"
                    break
        else:
            continue
        break
    bar.close()
    chosen = {"checkpoint": None, "why": "no validation rows; the final weights are kept"}
    if best_state is not None:
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in best_state:
                    param.copy_(best_state[name])
        chosen = {
            "checkpoint": f"step-{best_step}",
            "why": f"lowest validation loss ({best:.4f}) among evaluations",
            "val_loss": best,
        }
    nonfinite = stop.startswith("non-finite")
    out = run.adapter
    if not nonfinite:
        model.lm.save_pretrained(str(out))
        tokenizer.save_pretrained(str(out))
        save_vision_parts(model, out)
    return Outcome(
        steps=step,
        stop_reason=stop,
        chosen=chosen,
        train_loss=losses[-1] if losses else None,
        best_val_loss=None if best_state is None else best,
        runtime_s=round(time.monotonic() - started, 1),
        nonfinite=nonfinite,
        result_dir=str(out),
    )
