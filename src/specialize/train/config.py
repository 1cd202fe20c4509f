"""The recipe config: what to train, on which data, how, and where the run goes.

It is ours, small and documented; `to_trl_args` maps it once onto TRL's arguments, so users
read our knobs rather than the hundreds of TrainingArguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from specialize.config import Config, load_config, resolve_against
from specialize.models.catalog import DEFAULT_MODEL


class ReplayConfig(Config):
    source: str = Field(
        "builtin:self-replay",
        description="General data mixed into every epoch: a data file, a prepared dataset dir, or "
        "builtin:self-replay (the base model's own answers to general questions, generated once per base).",
    )
    ratio: float = Field(
        0.2, ge=0, lt=1, description="Share of each epoch's rows that come from the replay source."
    )
    rows: int = Field(
        256,
        ge=8,
        description="builtin:self-replay only: general answers to generate (once per base and count).",
    )


class RaftConfig(Config):
    documents: str = Field(
        ..., description="Folder of knowledge documents (.md, .txt), chunked as the ladder does."
    )
    top_k: int = Field(3, ge=1, description="Chunks retrieved for each training question.")
    distractors: int = Field(
        1,
        ge=0,
        description="Random chunks added to each row's context (the model learns to ignore them).",
    )
    p_oracle_dropped: float = Field(
        0.2,
        ge=0,
        le=1,
        description="Share of rows whose right document is left out (it must answer from memory).",
    )
    chunk_words: int = Field(
        40, ge=5, description="Word budget of a chunk (as the ladder's rag.chunk_words)."
    )
    share: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of rows given context (seeded); the rest train as they are, so one "
        "adapter learns both tuned and tuned+rag, at fewer tokens.",
    )
    seed: int = Field(
        0,
        description="Seed of the distractors, of which rows get context and which lose their "
        "document.",
    )


class DataSection(Config):
    train: list[str] = Field(
        ...,
        min_length=1,
        description="Prepared dataset dirs, data configs (.yaml) or raw data files.",
    )
    val: list[str] = Field(
        default_factory=list,
        description="Validation data; default: the val split of the train datasets.",
    )
    replay: ReplayConfig | None = Field(
        None, description="Replay of general data against forgetting."
    )
    raft: RaftConfig | None = Field(
        None,
        description="Retrieval-augmented fine-tuning: retrieved chunks (with distractors) in the "
        "system prompt of every training row (or of raft.share of them), as the tuned+rag rung "
        "shows them.",
    )


class LoraSection(Config):
    r: int = Field(16, ge=1, description="Rank of the LoRA update.")
    alpha: int = Field(32, ge=1, description="LoRA scaling numerator (scale = alpha / r).")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="Modules to adapt; all-linear = every linear layer but the output head.",
    )
    use_dora: bool = Field(
        False, description="DoRA: learn each weight's magnitude apart from its LoRA direction."
    )
    use_rslora: bool = Field(
        False,
        description="rsLoRA: scale by alpha / sqrt(r) instead of alpha / r (stable at high r).",
    )
    loraplus_lr_ratio: float | None = Field(
        None,
        gt=0,
        description="LoRA+: the B matrices learn this many times faster than A (e.g. 16).",
    )
    init: Literal["default", "gaussian", "pissa", "loftq"] = Field(
        "default",
        description=(
            "Initialisation: default (B = 0), gaussian, pissa (principal singular vectors; saved "
            "converted to plain LoRA of rank 2r on the unchanged base) or loftq (with kind qlora "
            "only: 4-bit quantisation-aware)."
        ),
    )


class AdaptationSection(Config):
    kind: Literal["lora", "qlora", "full", "freeze"] = Field(
        "lora",
        description="lora: small adapter, base untouched; qlora: lora on a 4-bit base (CUDA, bitsandbytes); full: every weight; freeze: full but the first N layers frozen.",
    )
    lora: LoraSection = Field(default_factory=LoraSection)
    freeze_layers: int = Field(
        0,
        ge=0,
        description="With kind: freeze, how many of the first transformer layers (and the embeddings) stay frozen.",
    )

    @property
    def trains_adapter(self) -> bool:
        """lora and qlora train a LoRA adapter (QLoRA: over a 4-bit base); full and freeze change
        the base's own weights."""
        return self.kind in ("lora", "qlora")

    @model_validator(mode="after")
    def _loftq_needs_a_quantised_base(self) -> AdaptationSection:
        if self.lora.init == "loftq" and self.kind != "qlora":
            raise ValueError(
                "lora.init loftq prepares an adapter for a 4-bit base: use it with kind: qlora "
                "(or use init: pissa on a full-precision base)"
            )
        return self


class TrainingSection(Config):
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        "cosine", description="Learning-rate schedule after warm-up."
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps for linear warm-up.")
    epochs: float = Field(
        3, gt=0, description="Passes over the training data (ignored when max_steps is set)."
    )
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps.")
    batch_size: int = Field(8, ge=1, description="Examples per device per step.")
    gradient_accumulation: int = Field(
        1, ge=1, description="Steps of gradients summed per optimizer step."
    )
    max_length: int = Field(
        1024,
        ge=8,
        description="Longest sequence in tokens, for every method: prompt and answer together (sft, dpo, "
        "reward, rl's prompt plus preference.max_new_tokens, the reward model when it judges), one packed "
        "block (cpt). The data stage a run does on a raw file or data config uses it as its limit too.",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(42, description="Seed for initialisation, shuffling and dropout.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="auto: bf16 where the hardware runs it fast, fp16 mixed precision on CUDA without bf16, else fp32.",
    )
    padding_free: bool = Field(
        True,
        description="Pack each batch into one row without padding, documents still attending only to themselves (sft, cpt, dpo, reward).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Trade compute for memory on long sequences."
    )
    checkpoint_every: int = Field(
        1,
        ge=1,
        description="With gradient_checkpointing: recompute every N-th decoder layer only (1: all). "
        "The others keep their activations: less memory saved, less time spent.",
    )

    @model_validator(mode="after")
    def _checkpoint_every_needs_checkpointing(self) -> TrainingSection:
        if self.checkpoint_every > 1 and not self.gradient_checkpointing:
            raise ValueError(
                f"checkpoint_every: {self.checkpoint_every} picks which layers gradient "
                "checkpointing recomputes: set gradient_checkpointing: true too (or remove it)"
            )
        return self


class EvalSection(Config):
    every_steps: int = Field(50, ge=1, description="Validation loss every N steps.")
    save_every_steps: int | None = Field(
        None, ge=1, description="Checkpoint every N steps; default: every evaluation."
    )
    keep_checkpoints: int = Field(
        3, ge=1, description="Most recent checkpoints kept (the best one is always kept)."
    )
    patience: int | None = Field(
        3, ge=1, description="Stop after this many evaluations without improvement; null: never."
    )
    min_delta: float = Field(
        0.0, ge=0, description="Smallest drop in validation loss that counts as improvement."
    )
    log_every_steps: int = Field(
        1, ge=1, description="Training loss, lr, grad norm and tokens/s every N steps."
    )


class RetentionSection(Config):
    suite: Literal["core", "standard", "all", "none"] = Field(
        "core", description="Retention suite measured after training (base side cached)."
    )
    budget_points: float | None = Field(
        None,
        gt=0,
        description="Most points of the core probe the run may lose; past it training stops.",
    )
    max_drift: float | None = Field(
        None,
        gt=0,
        description="Most mean KL from the base on general prompts; past it training stops.",
    )
    probe_items: int = Field(
        60,
        ge=10,
        le=310,
        description="Core questions in the probe run at every checkpoint when a budget is set.",
    )


class PreferenceSection(Config):
    beta: float = Field(
        0.1,
        gt=0,
        description="DPO: how strongly the policy may move from the reference (higher: less).",
    )
    reward_model: str | None = Field(
        None,
        description="Run directory of a `method: reward` run: rl optimises against it; after dpo and rl "
        "it judges the win rate of the tuned model over its start on held-out prompts.",
    )
    kl_beta: float = Field(0.05, ge=0, description="rl: weight of the KL penalty to the reference.")
    group_size: int = Field(4, ge=2, description="rl: sampled answers per prompt (GRPO's group).")
    max_new_tokens: int = Field(64, ge=1, description="rl and win rate: answer length.")


class VisionSection(Config):
    """Image + text fine-tuning (LLaVA-style); present = rows with images train a VLM."""

    grid: int = Field(
        2,
        ge=1,
        le=7,
        description="The encoder's 7x7 feature map is pooled to grid x grid image tokens (own encoder).",
    )
    align_steps: int = Field(
        60, ge=0, description="Stage 1: steps that train only the projector (LM and LoRA frozen)."
    )
    projector_learning_rate: float = Field(
        1e-3, gt=0, description="Learning rate of the projector in both stages."
    )
    pretrained_encoder: bool = Field(
        True,
        description="ImageNet weights for the frozen encoder; false: random (tiny tests only).",
    )


class OutputSection(Config):
    dir: str | None = Field(
        None, description="Run directory; default: $SPECIALIZE_HOME/runs/<name>-<time>."
    )
    name: str | None = Field(None, description="Run name; default: <method>-<model>.")
    report_to: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=list,
        description="Trackers fed by the trainer's own integrations; TensorBoard logs go to <run>/tensorboard, "
        "MLflow and W&B read their usual environment variables.",
    )


class RecipeConfig(Config):
    model: str = Field(
        DEFAULT_MODEL, description="Base model: catalog alias, local directory or .gguf file."
    )
    method: str = Field(
        ...,
        description="Training method, one entry of train/methods.py: sft (instruction tuning on chat data), "
        "cpt (continued pretraining on raw text), dpo (preferences: prompt, chosen, rejected), reward (a reward "
        "model on preferences), rl (GRPO against a reward model), asr (speech recognition: a Whisper model on "
        "recordings + transcripts); `config validate` checks the combination.",
    )
    chat_template: str | None = Field(
        None,
        description="Override the model's chat template: a named one (chatml, chatml-tools) or a .jinja file; saved with the adapter.",
    )
    data: DataSection
    adaptation: AdaptationSection = Field(default_factory=AdaptationSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    preference: PreferenceSection = Field(default_factory=PreferenceSection)
    vision: VisionSection | None = Field(
        None,
        description="Image + text: a frozen image encoder, a trained projector and LoRA on the LM "
        "(method: sft only).",
    )
    output: OutputSection = Field(default_factory=OutputSection)

    @model_validator(mode="after")
    def _vision_needs_sft_lora(self) -> RecipeConfig:
        if self.vision is not None and (self.method != "sft" or self.adaptation.kind != "lora"):
            raise ValueError("vision: needs method: sft and adaptation.kind: lora")
        return self

    @model_validator(mode="after")
    def _save_on_eval_steps(self) -> RecipeConfig:
        save = self.eval.save_every_steps
        if save is not None and save % self.eval.every_steps:
            # The best checkpoint can only be restored if every checkpoint has a validation loss.
            raise ValueError(
                f"eval.save_every_steps ({save}) must be a multiple of eval.every_steps ({self.eval.every_steps})"
            )
        return self


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> RecipeConfig:
    """Return the recipe in `path`; relative data paths resolve against the recipe's folder."""
    path = Path(path)
    recipe = load_config(RecipeConfig, path, overrides)
    return resolve_paths(recipe, path.parent)


def resolve_paths(recipe: RecipeConfig, base: Path) -> RecipeConfig:
    """Return the recipe with relative data and model paths made absolute against `base`."""

    def absolute(value: str | None) -> str | None:
        return resolve_against(base, value)

    recipe.data.train = [absolute(p) for p in recipe.data.train]
    recipe.data.val = [absolute(p) for p in recipe.data.val]
    if recipe.data.replay:
        recipe.data.replay.source = absolute(recipe.data.replay.source)
    if recipe.data.raft:
        recipe.data.raft.documents = absolute(recipe.data.raft.documents)
    recipe.model = absolute(recipe.model)
    if recipe.chat_template:
        from specialize.data.templates import NAMED_TEMPLATES

        if recipe.chat_template not in NAMED_TEMPLATES:
            recipe.chat_template = absolute(recipe.chat_template)
    if recipe.preference.reward_model:
        recipe.preference.reward_model = absolute(recipe.preference.reward_model)
    return recipe
