"""Training data: resolve dataset references, mix replay into every epoch, tokenise with loss masks.

A reference is a prepared dataset directory (it has manifest.json), a data config (.yaml), or a
raw data file; the last two go through the data stage into the run directory first, so every
run trains on checked data with a manifest.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from specialize.artifacts import SELF_REPLAY, DatasetManifest, sha256_text
from specialize.data.config import DataConfig, SourceConfig, SplitConfig, load_data_config
from specialize.data.mixing import replay_mix
from specialize.data.prepare import prepare
from specialize.data.templates import mask_row
from specialize.errors import DataError
from specialize.track.rundir import RunDir

log = logging.getLogger(__name__)
IGNORE_INDEX = -100  # label value the loss skips


@dataclass
class PreparedData:
    """A dataset directory the data stage wrote, and its manifest."""

    path: Path
    manifest: DatasetManifest

    @property
    def replay(self) -> bool:
        """Whether this is general replay data (recorded in its manifest), not the task's."""
        return self.manifest.replay is not None

    def rows(self, split: str) -> list[dict]:
        file = self.path / f"{split}.jsonl"
        return [
            json.loads(line)
            for line in file.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]

    @property
    def fingerprint(self) -> str:
        return sha256_text(
            "".join(self.manifest.outputs[s]["sha256"] for s in ("train", "val", "test"))
        )


def resolve_dataset(
    ref: str,
    run: RunDir,
    model: str,
    *,
    val_fraction: float = 0.1,
    max_length: int | None = None,
    replay: str | None = None,
) -> PreparedData:
    """Return the prepared dataset for a reference, running the data stage when it is raw.

    `max_length` (the recipe's training.max_length) is the data stage's length limit unless a
    data config sets its own; `replay` marks general replay data in the manifest."""
    path = Path(ref).expanduser()
    if (path / "manifest.json").is_file():
        manifest = DatasetManifest.read(path / "manifest.json")
        if replay is not None and manifest.replay is None:
            manifest.replay = replay  # a prepared dir the recipe names as its replay source
        return PreparedData(path, manifest)
    if not path.exists():
        raise DataError(
            "training data not found",
            where=ref,
            fix="give a prepared dataset dir, a data config or a data file",
        )
    if path.suffix in (".yaml", ".yml"):
        config = load_data_config(path)
        if max_length is not None and "max_length" not in config.model_fields_set:
            config.max_length = max_length
    else:
        # A bare file: check and clean it; hold out a validation split, no test split.
        config = DataConfig(
            sources=[SourceConfig(path=str(path))],
            model=model,
            split=SplitConfig(val=val_fraction, test=0.0),
        )
        if max_length is not None:
            # Training cuts (sft, dpo, reward) or splits into blocks (cpt) what is longer; the data
            # stage measures against the same limit and reports the rows over it.
            config.max_length = max_length
            config.clean.too_long = "keep"
    out = run.path / "data" / path.stem
    reusable = _prepared_from_same_inputs(out, config)
    if reusable is not None:  # a resumed run, or another process of a distributed one
        return reusable
    log.info("preparing %s -> %s", ref, out)
    manifest = prepare(config, out, progress=False, replay=replay)
    return PreparedData(out, manifest)


def _prepared_from_same_inputs(out: Path, config: DataConfig) -> PreparedData | None:
    """Return the dataset already prepared at `out` if its inputs are unchanged, else None."""
    from specialize.artifacts import sha256_file

    manifest_path = out / "manifest.json"
    if not manifest_path.is_file():
        return None
    manifest = DatasetManifest.read(manifest_path)
    for recorded, source in zip(manifest.inputs, config.sources, strict=False):
        path = Path(source.path)
        if path.is_file() and sha256_file(path) != recorded["sha256"]:
            return None
    return PreparedData(out, manifest)


def run_datasets(run: RunDir, *, replay: bool | None = None) -> list[PreparedData]:
    """Every prepared dataset a run read: those the run prepared into its own folder, then the
    prepared directories its recipe named. `replay` True/False keeps only replay / task data."""
    found = [
        PreparedData(m.parent, DatasetManifest.read(m))
        for m in sorted(run.path.glob("data/*/manifest.json"))
    ]
    data = yaml.safe_load(run.config.read_text())["data"]
    replay_source = (data.get("replay") or {}).get("source")
    for ref in data["train"] + data["val"] + ([replay_source] if replay_source else []):
        manifest = Path(ref) / "manifest.json"
        if manifest.is_file():
            body = DatasetManifest.read(manifest)
            if ref == replay_source and body.replay is None:
                body.replay = replay_source
            found.append(PreparedData(Path(ref), body))
    return [d for d in found if replay is None or d.replay == replay]


def read_split(data: PreparedData, split: str) -> list[dict]:
    """Rows of one split, or none when the dataset has no such file."""
    return data.rows(split) if (data.path / f"{split}.jsonl").is_file() else []


@dataclass
class TrainingRows:
    train: list[dict]  # every epoch's rows, concatenated (replay differs per epoch)
    val: list[dict]
    epochs: int
    rows_per_epoch: int
    datasets: list[PreparedData]


def recipe_rows(recipe, run: RunDir) -> TrainingRows:
    """Return a recipe's training rows: as many passes as its epochs need, replay re-drawn per pass."""
    from accelerate import PartialState

    replay = recipe.data.replay
    # Under a distributed launch the main process prepares the data first; the others reuse it.
    with PartialState().main_process_first():
        return gather_rows(
            recipe.data.train,
            recipe.data.val,
            replay,
            run,
            recipe.model,
            epochs=max(1, math.ceil(recipe.training.epochs)),
            seed=recipe.training.seed,
            max_length=recipe.training.max_length,
            raft=recipe.data.raft,
        )


def gather_rows(
    train_refs: list[str],
    val_refs: list[str],
    replay,  # a ReplayConfig, or None
    run: RunDir,
    model: str,
    *,
    epochs: int,
    seed: int,
    max_length: int | None = None,
    raft=None,  # a RaftConfig, or None
) -> TrainingRows:
    """Return the training rows of every epoch and the validation rows."""
    datasets = [resolve_dataset(ref, run, model, max_length=max_length) for ref in train_refs]
    task = [row for ds in datasets for row in ds.rows("train")]
    if val_refs:
        val_sets = [resolve_dataset(ref, run, model, max_length=max_length) for ref in val_refs]
        datasets += val_sets
        val = [row for ds in val_sets for row in ds.rows("val") + ds.rows("train")]
    else:
        val = [row for ds in datasets for row in ds.rows("val")]
    if not task:
        raise DataError("no training rows", fix="check data.train")
    if raft is not None:
        task, val = with_retrieved_context(task, val, raft, run)
    replay_rows: list[dict] = []
    ratio = 0.0
    if replay is not None:
        source = replay.source
        if source == SELF_REPLAY:
            from specialize.train.replay import self_replay_file

            source = str(self_replay_file(model, rows=replay.rows))
        replay_set = resolve_dataset(
            source, run, model, max_length=max_length, replay=replay.source
        )
        datasets.append(replay_set)
        replay_rows, ratio = replay_set.rows("train"), replay.ratio
    per_epoch = [replay_mix(task, replay_rows, ratio, seed=seed + epoch) for epoch in range(epochs)]
    rows = [row for epoch_rows in per_epoch for row in epoch_rows]
    return TrainingRows(rows, val, epochs, len(per_epoch[0]), datasets)


def with_retrieved_context(
    train: list[dict], val: list[dict], raft, run: RunDir
) -> tuple[list[dict], list[dict]]:
    """RAFT: put retrieved chunks (and distractors) into the task rows; record what was done.

    The rows as trained go to <run>/raft/train.jsonl and val.jsonl, the counts to
    <run>/raft/manifest.json and run.json's `raft`. Replay rows stay as they are.
    """
    from dataclasses import replace

    from specialize.artifacts import atomic_write_json, atomic_write_text, sha256_file
    from specialize.data.raft import RaftSettings, augment_with_context
    from specialize.data.retrieval import DocumentRetriever

    settings = RaftSettings(**raft.model_dump())
    retriever = DocumentRetriever(settings.documents, max_words=settings.chunk_words)
    done = {
        "train": augment_with_context(train, settings, retriever),
        # validation rows get context too (a different seed), so val loss measures the same task
        "val": augment_with_context(val, replace(settings, seed=settings.seed + 1), retriever),
    }
    if not done["train"].counts.get("rows_with_context"):
        raise DataError(
            f"data.raft found no chat row to give context to (of {len(train)} training rows)",
            fix="RAFT applies to chat rows ending in an assistant answer (method sft); remove data.raft",
        )
    outputs = {}
    for split, result in done.items():
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result.rows)
        path = atomic_write_text(run.path / "raft" / f"{split}.jsonl", lines)
        outputs[split] = {"path": path.name, "rows": len(result.rows), "sha256": sha256_file(path)}
    manifest = {
        "settings": raft.model_dump(mode="json"),
        "documents_sha256": sha256_text(json.dumps([[c.source, c.text] for c in retriever.chunks])),
        "counts": {split: result.counts for split, result in done.items()},
        "outputs": outputs,
    }
    atomic_write_json(run.path / "raft" / "manifest.json", manifest)
    run.update_record(raft={"manifest": str(run.path / "raft" / "manifest.json"), **manifest})
    log.info("raft: %s", done["train"].counts)
    return done["train"].rows, done["val"].rows


def tokenize_for_sft(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """Return {input_ids, labels} per row, cut to max_length; labels are -100 outside trained tokens.

    A row left with no trained token after the cut teaches nothing and is dropped (counted in the log).
    """
    out, cut, empty = [], 0, 0
    for row in rows:
        masked = mask_row(tokenizer, row)
        labels = [
            t if m else IGNORE_INDEX for t, m in zip(masked.input_ids, masked.mask, strict=True)
        ]
        cut += len(labels) > max_length
        ids, labels = masked.input_ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            empty += 1
            continue
        out.append({"input_ids": ids, "labels": labels})
    _report_truncation(len(rows), cut, empty, max_length)
    return out


def tokenize_for_cpt(tokenizer, rows: list[dict]) -> list[dict]:
    """Return {input_ids, labels} per row with every token trained (raw text, or a whole rendered chat).

    Not cut: packing splits long documents across sequences instead of dropping their tail.
    """
    out = []
    for row in rows:
        ids = mask_row(tokenizer, row).input_ids
        out.append({"input_ids": ids, "labels": list(ids)})
    return out


def _report_truncation(rows: int, cut: int, empty: int, max_length: int) -> None:
    if cut:
        log.warning(
            "%d of %d rows are longer than max_length %d and were cut", cut, rows, max_length
        )
    if empty:
        log.warning(
            "%d rows had no trained token left after the cut and were left out; raise max_length to keep them",
            empty,
        )


def pack_rows(rows: list[dict], max_length: int) -> list[dict]:
    """Return rows packed best-fit into sequences of at most `max_length` (TRL's packer, long ones split).

    Each packed row keeps `seq_lengths`, from which the collator rebuilds per-document positions,
    so documents sharing a row do not attend to each other.
    """
    from datasets import Dataset
    from trl import pack_dataset

    if not rows:
        return []
    packed = pack_dataset(Dataset.from_list(rows), max_length, strategy="bfd_split")
    return packed.to_list()
