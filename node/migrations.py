"""Forward-only, versioned, idempotent schema migrations for a shard file.

The schema version lives in `PRAGMA user_version`. Each migration runs in one
transaction together with the version bump, so a crash mid-migration leaves
the file at the previous version and the migration simply runs again.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: list[tuple[int, tuple[str, ...]]] = [
    (
        1,
        (
            "CREATE TABLE kv ("
            " key TEXT PRIMARY KEY, value BLOB NOT NULL, version INTEGER NOT NULL"
            ") WITHOUT ROWID",
            "CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
            "INSERT INTO meta (name, value) VALUES ('applied_index', 0)",
        ),
    ),
    (
        2,
        (
            # Exactly-once retries (Raft dissertation §6.3): the result of each
            # (client_id, seq), kept for a bounded window of indices.
            "CREATE TABLE requests ("
            " client_id TEXT NOT NULL, seq INTEGER NOT NULL,"
            " idx INTEGER NOT NULL, result BLOB NOT NULL,"
            " PRIMARY KEY (client_id, seq)"
            ") WITHOUT ROWID",
            "CREATE INDEX requests_by_idx ON requests (idx)",
        ),
    ),
    (
        3,
        (
            # What applying each frame produced (applied, which condition failed,
            # or why it was refused), for Subscribe; pruned by index like requests.
            "CREATE TABLE outcomes (idx INTEGER PRIMARY KEY, result BLOB NOT NULL)",
        ),
    ),
]

LATEST = MIGRATIONS[-1][0]


class SchemaTooNew(Exception):
    pass


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the shard up to the latest schema; return the version it started at.

    `conn` must be in autocommit mode (isolation_level=None)."""
    start = schema_version(conn)
    if start > LATEST:
        raise SchemaTooNew(f"shard schema version {start} is newer than this build's {LATEST}")
    for version, statements in MIGRATIONS:
        if version <= start:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check inside the write lock: another connection may have migrated.
            if schema_version(conn) < version:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return start
