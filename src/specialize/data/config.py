"""The data config: which files, how to clean them, how to split, what to check for leakage."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from specialize.config import Config, load_config
from specialize.data.templates import NAMED_TEMPLATES
from specialize.models.catalog import DEFAULT_MODEL

KindName = Literal[
    "auto", "text", "chat", "instruction", "prompt_completion", "preference", "multimodal", "speech"
]


class ColumnsConfig(Config):
    """Which field of the user's rows holds what (null: the usual name). See docs in data/layouts.py."""

    messages: str | None = Field(
        None, description="Field with the conversation (default messages, or conversations)."
    )
    role: str | None = Field(None, description="Message key with the speaker (default role/from).")
    content: str | None = Field(
        None, description="Message key with the text (default content/value)."
    )
    system: str | None = Field(None, description="Field with a system prompt for the row.")
    tools: str | None = Field(
        None, description="Field with the OpenAI tool schemas (default tools)."
    )
    prompt: str | None = Field(None, description="Field with the prompt (default prompt).")
    answer: str | None = Field(
        None, description="Field with the answer (default completion, or output with instruction)."
    )
    chosen: str | None = Field(None, description="Field with the preferred answer.")
    rejected: str | None = Field(None, description="Field with the dispreferred answer.")
    images: str | None = Field(
        None, description="Field with the row's image paths (default images)."
    )
    audio: str | None = Field(
        None, description="Field with the row's audio paths (default audios)."
    )


class SourceConfig(Config):
    path: str = Field(
        ...,
        description=(
            "A jsonl/json/csv/parquet/arrow file, a datasets.save_to_disk folder, "
            "or a folder of .txt/.md files."
        ),
    )
    columns: ColumnsConfig = Field(
        default_factory=ColumnsConfig, description="Which of your fields holds what."
    )
    roles: dict[str, str] = Field(
        default_factory=dict,
        description="Extra role tags mapped to system/user/assistant/tool, e.g. {bot: assistant}.",
    )
    train_history: bool = Field(
        True,
        description="Alpaca history turns: train on their answers too (false: context only).",
    )
    kind: KindName = Field("auto", description="Record kind; auto detects it from the first row.")
    split: Literal["auto", "train", "val", "test"] = Field(
        "auto", description="Put every row in this split; auto assigns by hash."
    )
    ratio: float | None = Field(
        None,
        gt=0,
        description="Share of the train split drawn from this source (mixing); all sources or none.",
    )

    @model_validator(mode="after")
    def _role_targets(self) -> SourceConfig:
        allowed = ("system", "user", "assistant", "tool", "function_call")
        for tag, role in self.roles.items():
            if role not in allowed:
                raise ValueError(f"roles.{tag}: {role!r} is not one of {', '.join(allowed)}")
        return self


class SplitConfig(Config):
    val: float = Field(0.1, ge=0, lt=1, description="Fraction of rows for validation.")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction of rows for test.")
    seed: int = Field(0, description="Seed of the hash that assigns splits.")
    group_key: str | None = Field(
        None, description="Row field whose equal values stay in one split."
    )

    @model_validator(mode="after")
    def _fractions(self) -> SplitConfig:
        if self.val + self.test >= 1:
            raise ValueError(f"val + test = {self.val + self.test} leaves nothing for train")
        return self


class CleanConfig(Config):
    normalise: bool = Field(
        True, description="Unicode NFC, invisible characters removed, spaces folded."
    )
    dedup_exact: bool = Field(
        True, description="Drop rows whose normalised content repeats an earlier row."
    )
    dedup_near: bool = Field(True, description="Drop near-duplicates (MinHash LSH).")
    near_threshold: float = Field(
        0.85, gt=0, le=1, description="Jaccard similarity above which rows are near-duplicates."
    )
    min_answer_chars: int = Field(
        2, ge=0, description="Drop rows whose answer is shorter than this."
    )
    max_repetition: float = Field(
        0.5, ge=0, le=1, description="Drop rows where more than this share of word 3-grams repeat."
    )
    min_tokens: int = Field(0, ge=0, description="Drop rows with fewer tokens than this.")
    pii: Literal["keep", "mask", "drop"] = Field(
        "mask",
        description=(
            "Personal data (e-mail, phone, IBAN, card, national id, names if pii_names): "
            "keep and report, mask, or drop the row."
        ),
    )
    phone_regions: list[str] = Field(
        ["SE", "NO", "DK", "FI", "DE", "GB", "US"],
        description="Regions whose national phone formats are recognised (phonenumbers codes).",
    )
    pii_names: bool = Field(
        False,
        description="Also find names of people (titles and common given names + a capitalised word).",
    )

    @model_validator(mode="after")
    def _known_regions(self) -> CleanConfig:
        import phonenumbers

        unknown = [r for r in self.phone_regions if r not in phonenumbers.SUPPORTED_REGIONS]
        if unknown:
            raise ValueError(
                f"phone_regions: {unknown[0]!r} is not a region code (two letters, e.g. SE, GB)"
            )
        return self

    too_long: Literal["drop", "keep"] = Field(
        "drop", description="Rows longer than max_length: drop, or keep (training truncates them)."
    )


class LeakageConfig(Config):
    eval_files: list[str] = Field(
        default_factory=list,
        description="Other evaluation files whose questions must not be in train.",
    )
    near_threshold: float = Field(
        0.8, gt=0, le=1, description="Similarity of questions that counts as a leak."
    )


class ParaphraseConfig(Config):
    model: str | None = Field(
        None,
        description="Model that paraphrases (a local model); default: the data config's model.",
    )
    answers: bool = Field(
        False, description="Paraphrase plain-text answers too (JSON answers never are)."
    )
    temperature: float = Field(0.7, gt=0, description="Sampling temperature of the paraphrases.")


class AugmentConfig(Config):
    phrasings: int = Field(
        2,
        ge=0,
        le=8,
        description="New phrasings per training question from seeded templates (0: none).",
    )
    seed: int = Field(0, description="Seed of the template choice and of the paraphrases.")
    where: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Augment only rows whose fields equal these values, e.g. {task: policy} for "
        "the rows that carry facts (default: every chat row).",
    )
    paraphrase: ParaphraseConfig | None = Field(
        None,
        description="The model's paraphrases, kept only when every key fact (numbers, names) survives.",
    )


class AudioConfig(Config):
    min_seconds: float = Field(0.2, ge=0, description="Drop recordings shorter than this.")
    max_seconds: float = Field(
        30.0, gt=0, description="Drop recordings longer than this (Whisper hears 30 s windows)."
    )
    silence_dbfs: float = Field(
        -50.0, le=0, description="Drop recordings whose loudest 50 ms is quieter than this (dBFS)."
    )

    def limits(self):
        from specialize.data.audio import AudioLimits

        return AudioLimits(self.min_seconds, self.max_seconds, self.silence_dbfs)


class DataConfig(Config):
    sources: list[SourceConfig] = Field(..., min_length=1, description="Input files and folders.")
    model: str | None = Field(
        DEFAULT_MODEL,
        description="Model whose tokenizer measures lengths; null skips token checks.",
    )
    max_length: int = Field(2048, gt=0, description="Longest row in tokens.")
    chat_template: str | None = Field(
        None,
        description="Override the model's chat template: a named one (chatml, chatml-tools) or a .jinja file.",
    )
    split: SplitConfig = Field(default_factory=SplitConfig)
    clean: CleanConfig = Field(default_factory=CleanConfig)
    leakage: LeakageConfig = Field(default_factory=LeakageConfig)
    augment: AugmentConfig | None = Field(
        None,
        description="Fact augmentation: more phrasings of each training question, made after the "
        "split from train rows only and marked `generated`.",
    )
    audio: AudioConfig = Field(default_factory=AudioConfig)

    @model_validator(mode="after")
    def _ratios_all_or_none(self) -> DataConfig:
        given = [s.ratio is not None for s in self.sources]
        if any(given) and not all(given):
            raise ValueError("give a ratio to every source or to none")
        return self


def load_data_config(path: str | Path, overrides: list[str] | None = None) -> DataConfig:
    """Return the data config in `path`, with relative paths resolved against its folder."""
    path = Path(path)
    config = load_config(DataConfig, path, overrides)
    base = path.parent.resolve()  # manifests record absolute input paths, valid from any folder
    for source in config.sources:
        source.path = str(_resolve(base, source.path))
    config.leakage.eval_files = [str(_resolve(base, p)) for p in config.leakage.eval_files]
    if config.chat_template and config.chat_template not in NAMED_TEMPLATES:
        config.chat_template = str(_resolve(base, config.chat_template))
    return config


def _resolve(base: Path, value: str) -> Path:
    candidate = Path(value).expanduser()
    return candidate if candidate.is_absolute() else (base / candidate)
