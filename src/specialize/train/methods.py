"""Every training method, declared once.

One entry per method in METHODS: what it trains on (help), the config checks that refuse
combinations it cannot run (read by `specialize config validate` and before every run), the
trainer builder, and the steps after training. Adding a method is one entry here (and its
builder module); nothing else lists methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from specialize.config import locate
from specialize.errors import ConfigError
from specialize.train.after import NO_RETENTION, RETENTION, SAMPLES, SPEECH, WIN_RATE, AfterStep
from specialize.train.asr import train_asr
from specialize.train.config import RecipeConfig
from specialize.train.cpt import train_cpt
from specialize.train.dpo import train_dpo
from specialize.train.reward import train_reward
from specialize.train.rl import train_rl
from specialize.train.sft import train_sft
from specialize.train.trainer import Outcome


@dataclass(frozen=True)
class Problem:
    """A recipe field a method cannot run with, and how to fix it."""

    field: str
    message: str
    fix: str


Check = Callable[[str, RecipeConfig], Problem | None]


def lora_only(method: str, recipe: RecipeConfig) -> Problem | None:
    if recipe.adaptation.trains_adapter:
        return None
    return Problem(
        "adaptation.kind",
        f"method {method} trains a LoRA adapter (its reference is the base with the adapter off), "
        f"not {recipe.adaptation.kind!r}",
        "set adaptation.kind: lora",
    )


def no_replay(method: str, recipe: RecipeConfig) -> Problem | None:
    if recipe.data.replay is None:
        return None
    return Problem(
        "data.replay",
        f"data.replay mixes chat rows into training; method {method} takes "
        f"{'prompts' if method == 'rl' else 'preference rows'} only",
        "remove data.replay",
    )


def needs_reward_model(method: str, recipe: RecipeConfig) -> Problem | None:
    if recipe.preference.reward_model:
        return None
    return Problem(
        "preference.reward_model",
        f"method {method} optimises against a reward model and none is set",
        "set preference.reward_model to the run directory of a `method: reward` run",
    )


def room_for_answers(method: str, recipe: RecipeConfig) -> Problem | None:
    if recipe.training.max_length > recipe.preference.max_new_tokens:
        return None
    return Problem(
        "training.max_length",
        f"training.max_length ({recipe.training.max_length}) leaves no room for a prompt before "
        f"preference.max_new_tokens ({recipe.preference.max_new_tokens}) of answer",
        "raise training.max_length or lower preference.max_new_tokens",
    )


@dataclass(frozen=True)
class Method:
    """One training method: its builder, its config checks and its after-training steps."""

    help: str
    train: Callable[..., Outcome]
    checks: tuple[Check, ...] = ()
    after: tuple[AfterStep, ...] = (RETENTION, SAMPLES)


METHODS: dict[str, Method] = {
    "sft": Method("instruction tuning on chat data (loss on the answers)", train_sft),
    "cpt": Method("continued pretraining on raw text (packed)", train_cpt),
    "dpo": Method(
        "preferences (prompt, chosen, rejected) learned directly",
        train_dpo,
        checks=(lora_only, no_replay),
        after=(WIN_RATE, RETENTION, SAMPLES),
    ),
    "reward": Method(
        "a reward model on preferences (held-out preference accuracy)",
        train_reward,
        checks=(no_replay,),
        after=(NO_RETENTION,),
    ),
    "rl": Method(
        "GRPO against a reward model, with a KL penalty to the base",
        train_rl,
        checks=(needs_reward_model, lora_only, no_replay, room_for_answers),
        after=(WIN_RATE, RETENTION, SAMPLES),
    ),
    "asr": Method(
        "speech recognition: a Whisper model on recordings and transcripts (WER)",
        train_asr,
        checks=(no_replay,),
        after=(SPEECH,),
    ),
}


def method_of(recipe: RecipeConfig) -> Method:
    """Return the recipe's method entry (the recipe has passed `check_recipe`)."""
    return METHODS[recipe.method]


def recipe_problems(recipe: RecipeConfig) -> list[Problem]:
    """Every combination in `recipe` that its method cannot run, each with the field and fix."""
    entry = METHODS.get(recipe.method)
    if entry is None:
        return [
            Problem(
                "method",
                f"unknown method {recipe.method!r}",
                f"use one of {', '.join(METHODS)}",
            )
        ]
    return [p for check in entry.checks if (p := check(recipe.method, recipe)) is not None]


def check_recipe(recipe: RecipeConfig, source: str | Path | None = None) -> RecipeConfig:
    """Return the recipe, or raise ConfigError listing every problem with file:line and the fix."""
    problems = recipe_problems(recipe)
    if problems:
        raise ConfigError(
            [f"{locate(source, p.field)}: {p.field}: {p.message} -- {p.fix}" for p in problems],
            source=str(source) if source else None,
        )
    return recipe
