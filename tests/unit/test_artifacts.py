import dataclasses
import json

import pytest

from specialize.artifacts import (
    atomic_dir,
    atomic_write_json,
    read_manifest,
    sha256_file,
    write_manifest,
)
from specialize.errors import UserFileError


def test_atomic_dir_publishes_only_on_success(tmp_path):
    final = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        (tmp / "weights").write_text("half")
        raise RuntimeError("killed mid-write")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("whole")
    assert (final / "weights").read_text() == "whole"


def test_atomic_dir_replaces_existing(tmp_path):
    final = tmp_path / "d"
    for text in ("one", "two"):
        with atomic_dir(final) as tmp:
            (tmp / "f").write_text(text)
    assert (final / "f").read_text() == "two"
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


@dataclasses.dataclass
class Manifest:
    schema_version = 1
    name: str
    rows: int


def test_manifest_round_trip_and_newer_schema_refused(tmp_path):
    path = tmp_path / "manifest.json"
    write_manifest(path, Manifest("train", 3))
    assert read_manifest(path, Manifest) == Manifest("train", 3)
    assert json.loads(path.read_text())["schema_version"] == 1
    atomic_write_json(path, {"schema_version": 99, "name": "x", "rows": 1})
    with pytest.raises(UserFileError, match="newer"):
        read_manifest(path, Manifest)


def test_sha256_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert sha256_file(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert json.loads(atomic_write_json(tmp_path / "j.json", {"a": 1}).read_text()) == {"a": 1}
