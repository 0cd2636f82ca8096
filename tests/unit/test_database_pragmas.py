"""Every SQLite connection gets WAL and a page cache that holds the event-id index."""

from __future__ import annotations

from pathlib import Path

from sidecar.store.database import SQLITE_CACHE_KIB, create_database_engine


def test_sqlite_connections_get_the_ingest_page_cache(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'pragmas.db'}")
    try:
        with engine.connect() as connection:
            cache = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
            journal = connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()
    finally:
        engine.dispose()
    assert cache == -SQLITE_CACHE_KIB
    assert journal == "wal"
