"""The ladder config: which tasks, which rungs, and what each rung may use."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from specialize.config import Config, load_config, resolve_against
from specialize.evaluate.metrics import GENERATIVE_METRICS
from specialize.models.catalog import DEFAULT_MODEL

# Rungs in order of effort: the recommendation is the first of these that is not significantly
# worse than the best. Prompting costs nothing up front; retrieval needs an index and longer
# prompts; tuning needs data and training time; tuned+rag needs both.
RUNG_ORDER = ("base", "prompt", "rag", "tuned", "tuned+rag")
RungName = Literal["base", "prompt", "rag", "tuned", "tuned+rag"]


class TaskConfig(Config):
    name: str = Field(..., description="Task name, as shown in the report.")
    data: str = Field(
        ..., description="Eval file (chat rows ending in the reference answer, or question/answer)."
    )
    category: str | None = Field(
        None,
        description="Keep only rows whose `category` field equals this (several tasks in one file).",
    )
    where: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Keep only rows whose fields equal these values (any field of the rows, "
        "for example {task: triage, lang: de}); combined with `category`.",
    )
    metric: str = Field("contains", description=f"Score per item: {', '.join(GENERATIVE_METRICS)}.")
    max_new_tokens: int = Field(64, ge=1, description="Generation budget per answer.")
    system: str | None = Field(
        None,
        description="The engineered system prompt of the prompt and rag rungs; default: the item's own.",
    )
    breakdown: str | None = Field(
        None,
        description="A field of the rows to break scores down by (any field: `fact`, `category`, `id`...).",
    )

    @model_validator(mode="after")
    def _known_metric(self) -> TaskConfig:
        if self.metric not in GENERATIVE_METRICS:
            raise ValueError(
                f"unknown metric {self.metric!r}; use one of {sorted(GENERATIVE_METRICS)}"
            )
        return self


class PromptRung(Config):
    examples: str | None = Field(
        None,
        description="Training rows to draw few-shot examples from (a chat file or a prepared train.jsonl).",
    )
    shots: int = Field(
        2, ge=0, description="Few-shot examples per question, the most similar first."
    )


class RagRung(Config):
    documents: str | None = Field(None, description="Folder of knowledge documents (.md, .txt).")
    top_k: int = Field(3, ge=1, description="Chunks retrieved per question.")
    chunk_words: int = Field(
        40, ge=5, description="Word budget of a chunk (paragraphs are merged up to it)."
    )


class TunedRung(Config):
    adapters: list[str] = Field(
        default_factory=list,
        description="Adapters to evaluate: PEFT adapter dirs or run dirs, optionally NAME=PATH.",
    )
    conform_layout: bool = Field(
        False,
        description="Lay the tuned rungs' prompts out as each adapter's training rows (where the "
        "instruction sits), the fix the prompt-format skew check names; recorded in ladder.json.",
    )


class SpeechInput(Config):
    model: str = Field(
        "whisper-tiny-en", description="Speech model that hears the spoken questions."
    )
    adapter: str | None = Field(
        None, description="Speech adapter (a `method: asr` run or adapter dir) on that model."
    )


class LadderConfig(Config):
    model: str = Field(DEFAULT_MODEL, description="Base model reference.")
    tasks: list[TaskConfig] = Field(
        ..., min_length=1, description="The held-out tasks every rung answers."
    )
    rungs: list[RungName] = Field(list(RUNG_ORDER), min_length=1, description="Rungs to climb.")
    prompt: PromptRung = Field(default_factory=PromptRung)
    rag: RagRung = Field(default_factory=RagRung)
    tuned: TunedRung = Field(default_factory=TunedRung)
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the paired tests.")
    limit: int | None = Field(
        None, ge=1, description="Use only the first N items of each task (quick looks)."
    )
    # 64: on a CPU a decoding step of 64 rows costs little more than one of 16, and greedy replies
    # do not depend on it beyond float rounding (padding sits after the shared prefix, runner.py).
    batch_size: int = Field(64, ge=1, description="Generation batch size.")
    speech: SpeechInput | None = Field(
        None,
        description="Spoken questions: every task row carries `audio`; each rung answers the "
        "speech model's transcript instead of the typed question (the cascade).",
    )

    @model_validator(mode="after")
    def _rungs_have_what_they_need(self) -> LadderConfig:
        wanted = set(self.rungs)
        if {"rag", "tuned+rag"} & wanted and not self.rag.documents:
            raise ValueError("the rag rungs need rag.documents (a folder of knowledge documents)")
        if {"tuned", "tuned+rag"} & wanted and not self.tuned.adapters:
            raise ValueError("the tuned rungs need tuned.adapters (adapter or run directories)")
        if "prompt" in wanted and self.prompt.shots and not self.prompt.examples:
            raise ValueError(
                "few-shot prompting needs prompt.examples (set prompt.shots: 0 for none)"
            )
        return self


def load_ladder(path: str | Path, overrides: list[str] | None = None) -> LadderConfig:
    """Return the ladder config in path; relative paths resolve against its folder."""
    path = Path(path)
    config = load_config(LadderConfig, path, overrides)
    return resolve_paths(config, path.parent)


def resolve_paths(config: LadderConfig, base: Path) -> LadderConfig:
    def absolute(value: str | None) -> str | None:
        return resolve_against(base, value)

    for task in config.tasks:
        task.data = absolute(task.data)
    config.prompt.examples = absolute(config.prompt.examples)
    config.rag.documents = absolute(config.rag.documents)
    config.tuned.adapters = [_absolute_adapter(a, absolute) for a in config.tuned.adapters]
    config.model = absolute(config.model)
    if config.speech is not None:
        config.speech.model = absolute(config.speech.model)
        config.speech.adapter = absolute(config.speech.adapter)
    return config


def _absolute_adapter(spec: str, absolute) -> str:
    name, sep, path = spec.partition("=")
    return f"{name}={absolute(path)}" if sep else absolute(spec)
