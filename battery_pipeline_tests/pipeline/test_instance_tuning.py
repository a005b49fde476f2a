"""The SQLite hook of instance_tuning: NORMAL on the instance's files, nothing else touched."""

from __future__ import annotations

import sqlalchemy

from battery_pipeline import instance_tuning

NORMAL, FULL = 1, 2  # PRAGMA synchronous values


def synchronous(path) -> int:
    engine = sqlalchemy.create_engine(f"sqlite:///{path}", poolclass=sqlalchemy.pool.NullPool)
    with engine.connect() as conn:
        value = conn.execute(sqlalchemy.text("PRAGMA synchronous")).scalar()
    engine.dispose()
    return value


def test_instance_files_get_normal_and_other_sqlite_files_keep_the_default(tmp_path, monkeypatch):
    home, elsewhere = tmp_path / "dagster_home", tmp_path / "elsewhere"
    (home / "history").mkdir(parents=True)
    elsewhere.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    instance_tuning.install()
    assert synchronous(home / "history" / "runs.db") == NORMAL
    assert synchronous(elsewhere / "other.db") == FULL
    monkeypatch.setenv(instance_tuning.SETTING_ENV, "full")
    assert synchronous(home / "history" / "runs.db") == FULL
