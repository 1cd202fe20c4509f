import dataclasses
import json
import os
from pathlib import Path

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


def test_atomic_dir_writes_every_file_through_before_it_publishes(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append((os.readlink(f"/proc/self/fd/{fd}"), (tmp_path / "d").exists()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with atomic_dir(tmp_path / "d") as tmp:
        (tmp / "weights.safetensors").write_bytes(b"w" * 10)
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")
    names = sorted(Path(path).name for path, _ in synced)
    assert names == ["config.json", "weights.safetensors"]
    assert not any(published for _, published in synced)  # synced before the rename


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


# --- the typed artifacts --------------------------------------------------------------------


def test_run_json_of_an_unknown_schema_version_is_one_line(tmp_path, cli):
    from specialize.artifacts import RunRecord

    path = tmp_path / "run.json"
    path.write_text(json.dumps({"schema_version": 99, "id": "x", "status": "finished"}))
    with pytest.raises(UserFileError) as caught:
        RunRecord.read(path)
    message = caught.value.one_line()
    assert "\n" not in message and "schema_version 99" in message and str(path) in message
    assert "upgrade specialize" in message
    from specialize.track import registry

    registry.record_run(
        {
            "id": "x",
            "name": "x",
            "path": str(tmp_path),
            "method": "sft",
            "base_model": "m",
            "config_json": {},
            "status": "finished",
            "started_at": "2026-01-01T00:00:00",
        }
    )
    (tmp_path / "config.yaml").write_text("method: sft\ndata: {train: [x]}\n")
    code, _, err = cli("runs", "report", "x")  # the CLI: one line, no traceback
    assert code == 1 and "schema_version 99" in err and len(err.strip().splitlines()) == 1, err
    path.write_text(json.dumps({"schema_version": "two"}))
    with pytest.raises(UserFileError, match="schema_version 'two'"):
        RunRecord.read(path)


def test_typed_artifacts_round_trip_and_keep_unknown_keys(tmp_path):
    from specialize.artifacts import (
        DatasetManifest,
        EvalReport,
        LadderRecord,
        RetentionReport,
        RunRecord,
        SimulationRecord,
        SweepRecord,
    )

    legacy = tmp_path / "run.json"  # written before run.json carried a version
    legacy.write_text(json.dumps({"name": "old", "status": "finished", "later_field": 3}))
    record = RunRecord.read(legacy)
    assert record.name == "old" and record.extra == {"later_field": 3} and record.id is None
    record.merged(id="abc").write(legacy)
    again = json.loads(legacy.read_text())
    assert again["schema_version"] == 1 and again["later_field"] == 3 and again["id"] == "abc"

    manifest = DatasetManifest("t", {}, None, [], {}, {}, {}, {}, {}, replay="builtin:self-replay")
    manifest.write(tmp_path / "manifest.json")
    back = DatasetManifest.read(tmp_path / "manifest.json")
    assert back == manifest and back.generated
    row = {
        "metric": "contains",
        "delta_points": -1.25,
        "delta_ci95_points": [-3.0, 0.5],
        "p_value": 0.2,
        "verdict": "no significant change",
        "base": {"mean": 0.5},
        "tuned": {"mean": 0.49},
    }
    report = RetentionReport("core", {}, {}, {"qa": row}, {"kl": {"mean": 0.01}}, {}, "ok", 1.0)
    report.write(tmp_path / "retention.json")
    headline = RetentionReport.read(tmp_path / "retention.json").headline()
    assert headline["tasks"]["qa"]["tuned"] == 0.49 and headline["drift_kl"] == 0.01
    for cls in (EvalReport, LadderRecord, SimulationRecord, SweepRecord):
        (tmp_path / "x.json").write_text(json.dumps({"schema_version": 7}))
        with pytest.raises(UserFileError, match="schema_version 7"):
            cls.read(tmp_path / "x.json")


def test_delta_text_is_one_format():
    from specialize.artifacts import delta_text

    row = {"delta_points": -1.25, "delta_ci95_points": [-3.0, 0.5]}
    assert delta_text(row) == "-1.2 [-3.0, +0.5]"
    assert delta_text(row, " pts") == "-1.2 pts [-3.0, +0.5]"


def test_simulation_and_sweep_records_keep_every_summary(tmp_path):
    from specialize.artifacts import SimulationRecord, SweepRecord

    simulation = {"created": "t", "model": "m", "contestants": [], "pass_rates": {"base": 0.5}}
    SimulationRecord.from_dict(simulation).write(tmp_path / "simulation.json")
    back = SimulationRecord.read(tmp_path / "simulation.json")
    assert back.extra["pass_rates"] == {"base": 0.5} and back.model == "m"
    sweep = {"created": "t", "name": "s", "trials": [{"number": 0}], "front": [0], "counts": {}}
    SweepRecord.from_dict(sweep).write(tmp_path / "sweep.json")
    again = json.loads((tmp_path / "sweep.json").read_text())
    assert again == {"schema_version": 1, **sweep, "recommendation": None}
