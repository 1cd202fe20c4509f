"""Registry migrations run in one transaction: a failing one leaves the registry as it was."""

import sqlite3

import pytest

from specialize.track import registry


def test_a_failing_migration_leaves_the_registry_untouched(tmp_path, monkeypatch):
    path = tmp_path / "registry.sqlite"
    with registry.connect(path):
        pass
    version = len(registry.MIGRATIONS)

    def half_done(db):
        db.execute("CREATE TABLE half (x INTEGER)")
        db.execute(
            "INSERT INTO runs (id, name, path, method, base_model, config_json, status, started_at) VALUES ('r', 'n', 'p', 'sft', 'b', '{}', 'done', 't')"
        )
        raise RuntimeError("killed in the middle")

    monkeypatch.setattr(registry, "MIGRATIONS", [*registry.MIGRATIONS, half_done])
    with pytest.raises(RuntimeError), registry.connect(path):
        pass
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == version
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'half'").fetchone() is None
    assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 0
    db.close()

    def whole(db):
        db.execute("CREATE TABLE whole (x INTEGER)")
        db.execute("CREATE INDEX whole_x ON whole(x)")

    monkeypatch.setattr(registry, "MIGRATIONS", [*registry.MIGRATIONS[:-1], whole])
    with registry.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == version + 1
        assert db.execute("SELECT COUNT(*) FROM whole").fetchone()[0] == 0
