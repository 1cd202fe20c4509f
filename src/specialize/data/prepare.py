"""`data prepare`: validate, clean, deduplicate, split, check leakage, mix, write, report.

Every input row ends in exactly one place: a split file, or rejects.jsonl with its reason.
The manifest says so in numbers (input = kept + rejected) and carries the sha256 of every input
and output, so later stages can tell whether the data changed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from specialize.artifacts import (
    DatasetManifest,
    atomic_write_text,
    sha256_file,
    sha256_text,
)
from specialize.data.config import DataConfig, SourceConfig
from specialize.data.curate import (
    NearDuplicateIndex,
    PiiOptions,
    dedup_key,
    map_texts,
    mask_pii,
    normalise_text,
    pii_hits,
    quality_problem,
)
from specialize.data.formats import RawRow
from specialize.data.layouts import LayoutOptions
from specialize.data.leakage import ImageLeakIndex, LeakIndex, same_images
from specialize.data.media import image_info, is_data_url
from specialize.data.mixing import mix_sources
from specialize.data.records import full_text, row_images
from specialize.data.splits import SPLITS, assign_split
from specialize.data.validate import CheckedRow, LengthLimit, check_file
from specialize.errors import DataError

log = logging.getLogger(__name__)
# Order in which duplicates are resolved: an evaluation copy wins over a training copy.
_SPLIT_PRIORITY = {"test": 0, "val": 1, "train": 2}


@dataclass
class Candidate:
    """A valid, cleaned row on its way to a split."""

    row: dict
    where: str
    source: str
    split: str
    tokens: int | None
    key: str = ""
    generated: str | None = None  # how fact augmentation made it (None: an input row)


@dataclass
class Ledger:
    """Every decision about a row: rejections with reasons, changes with reasons."""

    rejects: list[dict] = field(default_factory=list)
    changes: list[dict] = field(default_factory=list)
    warnings: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)  # rows with each kind of personal data
    pii_detail: Counter = field(default_factory=Counter)  # ... by id scheme / phone region

    def reject(self, where: str, reason: str, detail: str, row: Any) -> None:
        self.rejects.append({"where": where, "reason": reason, "detail": detail, "row": row})

    def change(self, where: str, reason: str, detail: str) -> None:
        self.changes.append({"where": where, "reason": reason, "detail": detail})


def prepare(
    config: DataConfig, out_dir: str | Path, *, progress: bool = True, replay: str | None = None
) -> DatasetManifest:
    """Run the data stage and write the dataset directory; return its manifest.

    `replay` (the replay source, when a training run prepares general replay data) is recorded
    in the manifest so that readers tell replay from task data without looking at paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = _tokenizer(config.model, config.chat_template)
    limit = LengthLimit(tokenizer, config.max_length) if tokenizer is not None else None
    ledger = Ledger()
    inputs, candidates = [], []
    for source in config.sources:
        rows, kind_counts = _read_source(source, config, limit, ledger, progress)
        candidates.extend(rows)
        inputs.append(_describe_input(source, kind_counts))
    candidates = _deduplicate(candidates, config, ledger, progress)
    candidates = _remove_leaks(candidates, config, ledger)
    splits, mixing = _mix(candidates, config, ledger)
    augmentation = {}
    if config.augment is not None:
        generated, augmentation = _augment(splits, config, tokenizer, progress)
        splits["train"] = splits["train"] + generated
    manifest = _write(out, config, tokenizer, inputs, splits, ledger, mixing, replay)
    if augmentation:
        manifest.counts["generated"] = augmentation
        manifest.write(out / "manifest.json")
    from specialize.data.report import write_data_report

    write_data_report(out, manifest, splits, ledger)
    if not splits["train"]:
        raise DataError(
            "no training rows left after checks",
            where=str(out),
            fix="see rejects.jsonl and report.html",
        )
    return manifest


# --- reading and cleaning -----------------------------------------------------------------


def _read_source(
    source: SourceConfig,
    config: DataConfig,
    limit: LengthLimit | None,
    ledger: Ledger,
    progress: bool,
) -> tuple[list[Candidate], Counter]:
    rows: list[Candidate] = []
    kinds: Counter = Counter()
    checked_rows = check_file(
        source.path,
        source.kind,
        limit,
        LayoutOptions.from_source(source),
        audio_limits=config.audio.limits(),
    )
    for checked in tqdm(
        checked_rows, desc=f"reading {Path(source.path).name}", unit=" rows", disable=not progress
    ):
        kinds[checked.kind or "unreadable"] += 1
        candidate = _accept(checked, source, config, ledger)
        if candidate is not None:
            rows.append(candidate)
    return rows, kinds


def _accept(
    checked: CheckedRow, source: SourceConfig, config: DataConfig, ledger: Ledger
) -> Candidate | None:
    where = checked.raw.where
    if checked.errors:
        # The row's place is its own field in rejects.jsonl; the detail says what and where inside.
        detail = "; ".join(
            f"{d.field + ': ' if d.field else ''}{d.message} [{d.category}]" for d in checked.errors
        )
        ledger.reject(where, checked.errors[0].category, detail, _original(checked.raw))
        return None
    for warning in checked.defects:
        ledger.warnings[warning.category] += 1
        if warning.category == "ignored_field":
            ledger.change(where, "ignored_field", warning.line())
    too_long = any(d.category == "too_long" for d in checked.defects)
    if too_long and config.clean.too_long == "drop":
        ledger.reject(
            where,
            "too_long",
            f"{checked.tokens} tokens > max_length {config.max_length}",
            checked.row,
        )
        return None
    if checked.tokens is not None and checked.tokens < config.clean.min_tokens:
        ledger.reject(
            where,
            "too_short",
            f"{checked.tokens} tokens < min_tokens {config.clean.min_tokens}",
            checked.row,
        )
        return None
    row = _clean(checked.row, where, config, ledger)
    if row is None:
        return None
    split = source.split if source.split != "auto" else _hash_split(row, config)
    return Candidate(row, where, source.path, split, checked.tokens)


def _clean(row: dict, where: str, config: DataConfig, ledger: Ledger) -> dict | None:
    clean = config.clean
    if clean.normalise:
        normalised = map_texts(row, normalise_text)
        if normalised != row:
            ledger.change(where, "normalised", "unicode/whitespace normalised")
            row = normalised
    options = PiiOptions(tuple(clean.phone_regions), clean.pii_names)
    pii, _ = pii_hits(full_text(row), options)
    if pii:
        kinds = sorted({hit.kind for hit in pii})
        ledger.pii.update(kinds)
        ledger.pii_detail.update({hit.detail for hit in pii if hit.detail not in ("", hit.kind)})
        if clean.pii == "drop":
            ledger.reject(where, "personal_data", f"contains {', '.join(kinds)}", row)
            return None
        if clean.pii == "mask":
            row = map_texts(row, lambda text: mask_pii(text, options))
            ledger.change(where, "pii_masked", f"masked {', '.join(kinds)}")
        else:
            ledger.change(where, "pii_kept", f"contains {', '.join(kinds)} (pii: keep)")
    problem = quality_problem(
        row, min_answer_chars=clean.min_answer_chars, max_repetition=clean.max_repetition
    )
    if problem:
        ledger.reject(where, problem[0], problem[1], row)
        return None
    return row


def _hash_split(row: dict, config: DataConfig) -> str:
    group_key = config.split.group_key
    if group_key is not None and row.get(group_key) is not None:
        key = f"group:{row[group_key]}"
    elif "audio_sha256" in row:  # a recording lands in one split, whatever its transcript says
        key = f"audio:{row['audio_sha256']}"
    elif row_images(row):
        # Every question about one photo goes to the same split, so none is lost as a leak.
        key = "images:" + ",".join(image_info(ref).sha256 for ref in row_images(row))
    else:
        key = dedup_key(full_text(row))
    return assign_split(key, seed=config.split.seed, val=config.split.val, test=config.split.test)


def _original(raw: RawRow) -> Any:
    return raw.value if raw.problem is None else raw.raw_text


# --- duplicates and leakage ---------------------------------------------------------------


def _deduplicate(
    candidates: list[Candidate], config: DataConfig, ledger: Ledger, progress: bool
) -> list[Candidate]:
    """Drop exact and near duplicates; a training copy of an evaluation row counts as a leak."""
    clean = config.clean
    ordered = sorted(candidates, key=lambda c: _SPLIT_PRIORITY[c.split])  # stable: file order kept
    seen: dict[str, Candidate] = {}
    near = NearDuplicateIndex(threshold=clean.near_threshold) if clean.dedup_near else None
    by_where: dict[str, Candidate] = {}
    kept = []
    for candidate in tqdm(ordered, desc="deduplicating", unit=" rows", disable=not progress):
        text = full_text(candidate.row)
        candidate.key = dedup_key(text)
        first = seen.get(candidate.key) if clean.dedup_exact else None
        how = "exact"
        signature = None
        if first is None and near is not None:
            signature = near.signature(text)
            match = near.query(text, signature)
            first = by_where.get(match) if match else None
            how = "near"
        if first is not None and how == "near" and not same_images(candidate.row, first.row):
            first = None  # the same question about another picture is a new example
        if first is not None:
            _reject_copy(candidate, first, how, ledger)
            continue
        seen.setdefault(candidate.key, candidate)
        if near is not None:
            near.add(candidate.where, text, signature)
            by_where[candidate.where] = candidate
        kept.append(candidate)
    return kept


def _reject_copy(candidate: Candidate, first: Candidate, how: str, ledger: Ledger) -> None:
    crosses = candidate.split == "train" and first.split != "train"
    reason = f"leak_{how}" if crosses else ("duplicate" if how == "exact" else "near_duplicate")
    detail = f"{'same as' if how == 'exact' else 'near-duplicate of'} {first.where} ({first.split})"
    ledger.reject(candidate.where, reason, detail, candidate.row)


def _leak_index(
    candidates: list[Candidate], config: DataConfig
) -> tuple[LeakIndex, ImageLeakIndex]:
    """What train rows must not hold: the questions and the photos of val/test rows and of the
    named eval files."""
    index = LeakIndex(config.leakage.near_threshold)
    images = ImageLeakIndex()
    for candidate in candidates:
        if candidate.split != "train":
            index.add(candidate.row, f"{candidate.where} ({candidate.split})")
            images.add(candidate.row, f"{candidate.where} ({candidate.split})")
    for path in config.leakage.eval_files:
        for checked in check_file(path, "auto", None):
            if checked.row is not None:
                index.add(checked.row, f"{checked.raw.where} (eval file)")
                images.add(checked.row, f"{checked.raw.where} (eval file)")
    return index, images


def _remove_leaks(
    candidates: list[Candidate], config: DataConfig, ledger: Ledger
) -> list[Candidate]:
    """Drop train rows whose question (or photo) matches a val/test row or a named eval file's."""
    index, images = _leak_index(candidates, config)
    kept = []
    for candidate in candidates:
        if candidate.split != "train":
            kept.append(candidate)
            continue
        # An image question is a new example when its picture is new, so images decide for them.
        if row_images(candidate.row):
            photo = images.match(candidate.row)
            if photo is not None:
                ledger.reject(
                    candidate.where, "leak_image", f"same photo as {photo}", candidate.row
                )
                continue
            kept.append(candidate)
            continue
        leak = index.match(candidate.row)
        if leak is None:
            kept.append(candidate)
        else:
            ledger.reject(
                candidate.where, f"leak_{leak.how}", f"question matches {leak.where}", candidate.row
            )
    return kept


# --- fact augmentation ---------------------------------------------------------------------


def _augment(
    splits: dict[str, list[Candidate]], config: DataConfig, tokenizer, progress: bool
) -> tuple[list[Candidate], dict]:
    """New phrasings of the train rows (after the split: nothing generated reaches val or test)."""
    from specialize.data.augment import is_chat, paraphrase_rows, template_rows

    augment = config.augment
    originals = list({id(c): c for c in splits["train"]}.values())  # mixing may repeat rows
    _check_where(augment.where, originals)
    leaks, _ = _leak_index([c for rows in splits.values() for c in rows], config)
    seen = {c.key for rows in splits.values() for c in rows}
    paraphrase = _paraphraser(config) if augment.paraphrase else None
    made: list[Candidate] = []
    skipped: Counter = Counter()
    by: Counter = Counter()
    selected = 0
    for original in tqdm(originals, desc="augmenting", unit=" rows", disable=not progress):
        if not is_chat(original.row):
            skipped["not_a_chat_row"] += 1
            continue
        if any(str(original.row.get(k)) != str(v) for k, v in augment.where.items()):
            # counts a row, as not_a_chat_row does; the other reasons count phrasings
            skipped["not_selected_by_where"] += 1
            continue
        selected += 1
        rows = template_rows(original.row, augment.phrasings, augment.seed, original.key)
        if paraphrase is not None:
            kept, dropped = paraphrase_rows(
                original.row, paraphrase, answers=augment.paraphrase.answers
            )
            rows += kept
            skipped.update(f"paraphrase_{reason.split(':')[0]}" for reason in dropped)
        for generated in rows:
            candidate = _generated_candidate(original, generated, tokenizer, config)
            reason = _generated_problem(candidate, seen, leaks, config)
            if reason:
                skipped[reason] += 1
                continue
            seen.add(candidate.key)
            by[generated.by] += 1
            made.append(candidate)
    return made, {
        "rows": len(made),
        "from_train_rows": len(originals),
        "selected_rows": selected,
        "where": dict(augment.where),
        "by": dict(sorted(by.items())),
        "skipped": dict(sorted(skipped.items())),
        "note": "generated after the split from train rows only; every one is in train.jsonl "
        "with a `generated` field",
    }


def _check_where(where: dict, originals: list[Candidate]) -> None:
    """A field of augment.where that no training row has is a typo, not an empty selection."""
    for name in where:
        if not any(name in c.row for c in originals):
            fields = sorted({k for c in originals for k in c.row if k != "messages"})
            raise DataError(
                f"augment.where: no training row has the field {name!r}",
                fix=f"use one of the rows' fields ({', '.join(fields) or 'none besides messages'})",
            )


def _paraphraser(config: DataConfig):
    from specialize.data.augment import model_paraphraser

    settings = config.augment.paraphrase
    model = settings.model or config.model
    if model is None:
        raise DataError(
            "augment.paraphrase needs a model", fix="set augment.paraphrase.model or model"
        )
    return model_paraphraser(model, temperature=settings.temperature, seed=config.augment.seed)


def _generated_candidate(
    original: Candidate, generated, tokenizer, config: DataConfig
) -> Candidate:
    from specialize.data.templates import count_tokens

    row = {
        **generated.row,
        "generated": {"by": generated.by, "from": original.key[:16]},
    }
    tokens = count_tokens(tokenizer, row) if tokenizer is not None else None
    candidate = Candidate(row, f"{original.where}+{generated.by}", original.source, "train", tokens)
    candidate.key = dedup_key(full_text(row))
    candidate.generated = generated.by
    return candidate


def _generated_problem(
    candidate: Candidate, seen: set[str], leaks: LeakIndex, config: DataConfig
) -> str | None:
    if candidate.key in seen:
        return "duplicate"
    if leaks.match(candidate.row) is not None:
        return "matches_a_val_or_test_question"
    if candidate.tokens is not None and candidate.tokens > config.max_length:
        return "too_long"
    return None


# --- mixing and writing -------------------------------------------------------------------


def _mix(
    candidates: list[Candidate], config: DataConfig, ledger: Ledger
) -> tuple[dict[str, list[Candidate]], dict]:
    splits: dict[str, list[Candidate]] = {name: [] for name in SPLITS}
    for candidate in candidates:
        splits[candidate.split].append(candidate)
    if not any(s.ratio for s in config.sources):
        return splits, {}
    by_source = {s.path: [c for c in splits["train"] if c.source == s.path] for s in config.sources}
    ratios = {s.path: s.ratio for s in config.sources}
    empty = [p for p, rows in by_source.items() if not rows]
    if empty:
        raise DataError(
            f"mixing needs train rows from every source; none left from {', '.join(empty)}"
        )
    mixed, counts = mix_sources(by_source, ratios, seed=config.split.seed)
    used = {id(c) for c in mixed}
    for candidate in splits["train"]:
        if id(candidate) not in used:
            ledger.reject(
                candidate.where,
                "mixing_ratio",
                "not drawn: its source is over its mixing ratio",
                candidate.row,
            )
    splits["train"] = mixed
    report = {
        name: {"available": c.available, "drawn": c.drawn, "repeats": c.repeats}
        for name, c in counts.items()
    }
    return splits, report


def _write(
    out: Path,
    config: DataConfig,
    tokenizer,
    inputs: list[dict],
    splits: dict[str, list[Candidate]],
    ledger: Ledger,
    mixing: dict,
    replay: str | None = None,
) -> DatasetManifest:
    outputs = {}
    for name, rows in splits.items():
        lines = [json.dumps(_output_row(c), ensure_ascii=False) for c in rows]
        path = atomic_write_text(out / f"{name}.jsonl", "".join(line + "\n" for line in lines))
        outputs[name] = {"path": path.name, "rows": len(rows), "sha256": sha256_file(path)}
    for name, records in (("rejects", ledger.rejects), ("changes", ledger.changes)):
        text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in records)
        path = atomic_write_text(out / f"{name}.jsonl", text)
        outputs[name] = {"path": path.name, "rows": len(records), "sha256": sha256_file(path)}
    manifest = DatasetManifest(
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        config=config.model_dump(mode="json"),
        tokenizer=config.model,
        inputs=inputs,
        outputs=outputs,
        counts=_counts(inputs, splits, ledger),
        tokens=_token_stats(splits, config.max_length) if tokenizer is not None else {},
        audio=_audio_stats(splits),
        leakage={
            "removed_from_train": {
                how: sum(r["reason"] == f"leak_{how}" for r in ledger.rejects)
                for how in ("exact", "near", "image")
            },
            "eval_files": config.leakage.eval_files,
        },
        mixing=mixing,
        replay=replay,
        images=_image_manifest(splits),
    )
    manifest.write(out / "manifest.json")
    return manifest


def _image_manifest(splits: dict[str, list[Candidate]]) -> dict:
    """Every image the dataset uses, by sha256, with its size and the splits that use it."""
    files: dict[str, dict] = {}
    for name, rows in splits.items():
        for candidate in rows:
            for ref in row_images(candidate.row):
                info = image_info(ref)
                shown = f"data-url:{info.sha256[:16]}" if is_data_url(ref) else ref
                entry = files.setdefault(
                    shown,
                    {
                        "sha256": info.sha256,
                        "dhash": f"{info.dhash:016x}",
                        "size": [info.width, info.height],
                        "mode": info.mode,
                        "splits": [],
                    },
                )
                if name not in entry["splits"]:
                    entry["splits"].append(name)
    if not files:
        return {}
    by_split = {name: sum(name in f["splits"] for f in files.values()) for name in splits}
    return {"count": len(files), "by_split": by_split, "files": files}


def _output_row(candidate: Candidate) -> dict:
    # `id` ties a row to its content; `origin` to the input line it came from.
    return {**candidate.row, "id": candidate.key[:16], "origin": candidate.where}


def _counts(inputs: list[dict], splits: dict[str, list[Candidate]], ledger: Ledger) -> dict:
    total = sum(i["rows"] for i in inputs)
    # Generated rows (fact augmentation) are no input: counted apart, under "generated".
    unique_kept = sum(len({id(c) for c in rows if not c.generated}) for rows in splits.values())
    kept_unique_train = len({id(c) for c in splits["train"]})
    repeats = len(splits["train"]) - kept_unique_train
    counts = {
        "input": total,
        "kept": unique_kept,
        "rejected": len(ledger.rejects),
        "kept_by_split": {name: len(rows) for name, rows in splits.items()},
        "repeated_by_mixing": repeats,
        "rejected_by_reason": dict(Counter(r["reason"] for r in ledger.rejects).most_common()),
        "changed_by_reason": dict(Counter(c["reason"] for c in ledger.changes).most_common()),
        "warnings_by_category": dict(ledger.warnings.most_common()),
        "pii_rows_by_kind": dict(ledger.pii.most_common()),
        "pii_rows_by_detail": dict(ledger.pii_detail.most_common()),
    }
    # The invariant the whole stage exists for; a failure here is a bug, not a user error.
    if counts["input"] != counts["kept"] + counts["rejected"]:
        raise AssertionError(f"row accounting is off: {counts}")
    return counts


def _token_stats(splits: dict[str, list[Candidate]], max_length: int) -> dict:
    stats: dict[str, Any] = {}
    for name, rows in splits.items():
        lengths = [c.tokens for c in rows if c.tokens is not None]
        stats[name] = {
            "rows": len(lengths),
            "total": sum(lengths),
            "mean": round(sum(lengths) / len(lengths), 1) if lengths else 0,
            "max": max(lengths, default=0),
            "truncated_at_max_length": sum(1 for n in lengths if n > max_length),
        }
    train = [c.tokens for c in splits["train"] if c.tokens is not None]
    stats["train_tokens_per_epoch"] = sum(min(n, max_length) for n in train)
    return stats


def _audio_stats(splits: dict[str, list[Candidate]]) -> dict:
    """Return per-split recording counts and durations (empty when there is no speech row)."""
    stats: dict[str, Any] = {}
    for name, rows in splits.items():
        seconds = [c.row["seconds"] for c in rows if "audio_sha256" in c.row]
        if seconds:
            stats[name] = {
                "recordings": len(seconds),
                "unique_recordings": len(
                    {c.row["audio_sha256"] for c in rows if "audio_sha256" in c.row}
                ),
                "total_seconds": round(sum(seconds), 1),
                "mean_seconds": round(sum(seconds) / len(seconds), 2),
                "max_seconds": max(seconds),
                "sample_rates": dict(
                    Counter(str(c.row["sample_rate"]) for c in rows if "sample_rate" in c.row)
                ),
            }
    return stats


def _describe_input(source: SourceConfig, kinds: Counter) -> dict:
    path = Path(source.path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        digest = sha256_text("".join(f"{p.relative_to(path)}:{sha256_file(p)}\n" for p in files))
    else:
        digest = sha256_file(path)
    return {
        "path": str(path),
        "sha256": digest,
        "rows": sum(kinds.values()),
        "kinds": dict(kinds),
        "split": source.split,
    }


def _tokenizer(model: str | None, chat_template: str | None = None):
    if model is None:
        return None
    from specialize.data.templates import resolve_chat_template, use_chat_template
    from specialize.models.loading import load_tokenizer

    template = resolve_chat_template(chat_template) if chat_template else None
    return use_chat_template(load_tokenizer(model), template, "data config chat_template")
