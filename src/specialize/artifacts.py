"""Files written between stages: atomic writes, content hashes, versioned JSON manifests."""

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
from typing import Any, TypeVar

from specialize.errors import UserFileError

T = TypeVar("T")
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


def write_manifest(path: str | Path, manifest: Any) -> Path:
    """Write a dataclass manifest (which carries `schema_version`) as JSON, atomically."""
    data = {"schema_version": type(manifest).schema_version, **dataclasses.asdict(manifest)}
    return atomic_write_json(path, data)


def read_manifest(path: str | Path, cls: type[T]) -> T:
    """Read a manifest written by `write_manifest`; refuse a newer schema than this code knows."""
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
