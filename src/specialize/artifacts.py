"""Files written between stages: atomic writes, content hashes, and one typed class per artifact.

Every JSON artifact a stage writes for another to read has one class here, its only owner:
`RunRecord` (run.json), `DatasetManifest` (a dataset's manifest.json), `RetentionReport`
(retention.json), `EvalReport` (eval.json), `LadderRecord` (ladder.json), `SimulationRecord`
(simulation.json), `SweepRecord` (sweep.json). Each is a dataclass
deriving from `Artifact`: `write(path)` and `read(path)`, with a `schema_version` checked on
reading (an unknown one is a one-line error). Adding an artifact is one class here; readers go
through `read`, never `json.loads` of the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from specialize.errors import UserFileError

T = TypeVar("T")
A = TypeVar("A", bound="Artifact")
# The replay source that the base model's own answers come from (generated, re-made on demand).
SELF_REPLAY = "builtin:self-replay"
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """Return the hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Return the hex sha256 of a string's UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text so that readers see the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically, indented for people to read."""
    return atomic_write_text(
        path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    )


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling directory that becomes `final` only if the block succeeds.

    An interrupted writer leaves a `.tmp-*` folder that no reader looks at, never a half-written
    `final`. An existing `final` is replaced.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".tmp-{final.name}-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary folder
    try:
        yield tmp
        _write_through(tmp)
        if final.exists():
            old = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_through(folder: Path) -> None:
    """fsync every file under `folder`: after a crash the renamed folder holds whole files, and
    their pages are clean, which the kernel can drop and read back (a model's weights, paged out
    while training reads their bf16 copies: train/weight_pages.py)."""
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def write_manifest(path: str | Path, manifest: Any) -> Path:
    """Write a dataclass manifest (which carries `schema_version`) as JSON, atomically."""
    if isinstance(manifest, Artifact):
        return manifest.write(path)
    data = {"schema_version": type(manifest).schema_version, **dataclasses.asdict(manifest)}
    return atomic_write_json(path, data)


def read_manifest(path: str | Path, cls: type[T]) -> T:
    """Read a manifest written by `write_manifest`; refuse a newer schema than this code knows."""
    if isinstance(cls, type) and issubclass(cls, Artifact):
        return cls.read(path)  # type: ignore[return-value]
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserFileError("manifest not found", where=str(path)) from None
    except json.JSONDecodeError as exc:
        raise UserFileError(
            f"manifest is not valid JSON ({exc.msg})", where=f"{path}:{exc.lineno}"
        ) from None
    known = cls.schema_version  # type: ignore[attr-defined]
    found = data.get("schema_version", 0)
    if found > known:
        raise UserFileError(
            f"manifest schema_version {found} is newer than this version of specialize knows ({known})",
            where=str(path),
            fix="upgrade specialize",
        )
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in data.items() if k in names})


class Artifact:
    """Base of the typed artifacts (each a dataclass): versioned JSON, written atomically.

    `schema_version` is the newest version this code writes; `known_versions` those it reads
    (a file without a version is version 1, from before versions were written). A field named
    `extra` keeps keys this code does not know, so a record round-trips unchanged.
    """

    schema_version: ClassVar[int] = 1
    known_versions: ClassVar[tuple[int, ...]] = (1,)
    what: ClassVar[str] = "artifact"

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]
        extra = data.pop("extra", None) or {}
        return {"schema_version": type(self).schema_version, **extra, **data}

    def write(self, path: str | Path) -> Path:
        return atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls: type[A], data: dict[str, Any], where: str = "") -> A:
        found = data.get("schema_version", 1)
        if found not in cls.known_versions:
            raise UserFileError(
                f"{cls.what} has schema_version {found!r}, which this version of specialize does "
                f"not know (it reads {', '.join(map(str, cls.known_versions))})",
                where=where or None,
                fix="upgrade specialize"
                if isinstance(found, int) and found > cls.schema_version
                else "the file was not written by specialize; write it again",
            )
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        known = {k: v for k, v in data.items() if k in names and k != "extra"}
        if "extra" in names:
            known["extra"] = {
                k: v for k, v in data.items() if k not in names and k != "schema_version"
            }
        try:
            return cls(**known)
        except TypeError as exc:
            raise UserFileError(f"{cls.what} is incomplete ({exc})", where=where or None) from None

    @classmethod
    def read(cls: type[A], path: str | Path) -> A:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserFileError(f"{cls.what} not found", where=str(path)) from None
        except json.JSONDecodeError as exc:
            raise UserFileError(
                f"{cls.what} is not valid JSON ({exc.msg})", where=f"{path}:{exc.lineno}"
            ) from None
        if not isinstance(data, dict):
            raise UserFileError(f"{cls.what} is not a JSON object", where=str(path))
        return cls.from_dict(data, str(path))

    @classmethod
    def read_if_present(cls: type[A], path: str | Path) -> A | None:
        return cls.read(path) if Path(path).is_file() else None


@dataclasses.dataclass
class RunRecord(Artifact):
    """run.json: a training run's identity, status, timings, data and outcome."""

    what: ClassVar[str] = "run record (run.json)"

    id: str | None = None
    name: str | None = None
    method: str | None = None
    model: str | None = None
    status: str | None = None
    created: str | None = None
    started: str | None = None
    finished: str | None = None
    duration_s: float | None = None
    base_model: dict = dataclasses.field(default_factory=dict)
    outcome: dict = dataclasses.field(default_factory=dict)
    data: list[dict] = dataclasses.field(default_factory=list)
    data_hash: str | None = None
    adapter_name: str | None = None
    extra: dict = dataclasses.field(default_factory=dict)

    def merged(self, **fields: Any) -> RunRecord:
        """Return a copy with `fields` set (unknown names go to `extra`)."""
        names = {f.name for f in dataclasses.fields(self)}
        known = {k: v for k, v in fields.items() if k in names}
        extra = {**self.extra, **{k: v for k, v in fields.items() if k not in names}}
        return dataclasses.replace(self, **known, extra=extra)

    @property
    def retention(self) -> dict:
        """The retention headline in the outcome ({} when none was measured)."""
        return self.outcome.get("retention") or {}

    @property
    def chosen(self) -> dict:
        return self.outcome.get("chosen") or {}


@dataclasses.dataclass
class DatasetManifest(Artifact):
    """A prepared dataset's manifest.json: inputs and outputs with sha256, counts, reasons."""

    what: ClassVar[str] = "dataset manifest (manifest.json)"

    created: str
    config: dict
    tokenizer: str | None
    inputs: list[dict]
    outputs: dict[str, dict]
    counts: dict
    tokens: dict
    leakage: dict
    mixing: dict
    # Set when a training run prepared this dataset as replay of general data (the replay source
    # as configured, e.g. builtin:self-replay); None for task data. Readers ask this, never a path.
    replay: str | None = None
    audio: dict = dataclasses.field(
        default_factory=dict
    )  # speech rows: seconds per split, sample rates
    images: dict = dataclasses.field(default_factory=dict)  # image rows: sha256 and hash per image

    @property
    def generated(self) -> bool:
        """Whether its inputs were generated from the base model (re-made on demand, not kept)."""
        return self.replay == SELF_REPLAY


def delta_text(row: dict, unit: str = "") -> str:
    """A retention delta as people read it: `-1.2 pts [-3.0, +0.6]` (paired 95% CI)."""
    low, high = row["delta_ci95_points"]
    return f"{row['delta_points']:+.1f}{unit} [{low:+.1f}, {high:+.1f}]"


@dataclasses.dataclass
class RetentionReport(Artifact):
    """retention.json: base and tuned on the retention suite, paired deltas, drift, verdict."""

    what: ClassVar[str] = "retention report (retention.json)"

    suite: str
    base: dict
    tuned: dict | None = None
    comparison: dict = dataclasses.field(default_factory=dict)
    drift: dict | None = None
    general_perplexity: dict | None = None
    verdict: str | None = None
    seconds: float | None = None
    items: dict = dataclasses.field(default_factory=dict)

    def headline(self) -> dict:
        """What a run's record keeps of it: per task metric, delta with CI, p, verdict."""
        keep = ("metric", "delta_points", "delta_ci95_points", "p_value", "verdict")
        tasks = {
            name: {k: row[k] for k in keep}
            | {"base": row["base"]["mean"], "tuned": row["tuned"]["mean"]}
            for name, row in self.comparison.items()
        }
        return {
            "suite": self.suite,
            "verdict": self.verdict,
            "tasks": tasks,
            "drift_kl": (self.drift or {}).get("kl", {}).get("mean"),
            "general_perplexity": self.general_perplexity,
        }


@dataclasses.dataclass
class EvalReport(Artifact):
    """eval.json: every item's prompt, output and score, and summaries with n and 95% CI."""

    what: ClassVar[str] = "eval report (eval.json)"

    created: str
    model: dict
    adapter: str | None = None
    task: dict | None = None
    retention: dict | None = None
    # The skew check: the requests' layout against the adapter's training rows (None: no adapter).
    prompt_format: dict | None = None

    @property
    def retention_report(self) -> RetentionReport | None:
        return RetentionReport.from_dict(self.retention) if self.retention else None


@dataclasses.dataclass
class LadderRecord(Artifact):
    """ladder.json: each rung's score on each task, cost, latency, and the recommendation."""

    what: ClassVar[str] = "ladder record (ladder.json)"
    # 2: per-rung `few_shot` and `context`, top-level `prompt_format`, tasks that are `unsolved`.
    schema_version: ClassVar[int] = 2
    known_versions: ClassVar[tuple[int, ...]] = (1, 2)

    created: str
    model: dict
    config: dict
    order: list[str]
    rule: str
    tasks: dict
    overall: dict
    adapters: dict = dataclasses.field(default_factory=dict)
    # The skew check per tuned rung: its requests' layout against the adapter's training rows.
    prompt_format: dict = dataclasses.field(default_factory=dict)
    # Spoken questions (`speech:` in the config): the speech model and each task's question WER.
    speech: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class SimulationRecord(Artifact):
    """simulation.json: pass rates per contestant, scenario and check with n and CI, paired tests."""

    what: ClassVar[str] = "simulation record (simulation.json)"

    created: str
    model: str | None
    scenario_file: str | None = None
    scenario_file_sha256: str | None = None
    contestants: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)  # the summaries (see simulate/report.py)


@dataclasses.dataclass
class SweepRecord(Artifact):
    """sweep.json: every trial, the Pareto front, importances and the recommendation."""

    what: ClassVar[str] = "sweep record (sweep.json)"

    created: str
    name: str
    trials: list
    front: list
    recommendation: dict | None = None
    extra: dict = dataclasses.field(default_factory=dict)  # objectives, counts, importances, ...


@dataclasses.dataclass
class ParityReport(Artifact):
    """parity.json: the same multiple-choice items scored by specialize and by lm-evaluation-harness."""

    what: ClassVar[str] = "parity report (parity.json)"

    created: str
    model: dict
    harness: dict
    tolerance: dict
    dtype: str
    tasks: dict  # per task: n, both sides' acc/acc_norm with CIs, ll differences, passed
    passed: bool
    skipped: dict = dataclasses.field(default_factory=dict)  # task -> why it was not compared
    items: dict = dataclasses.field(default_factory=dict)  # task -> per-item scorings side by side
