"""Open a database from its URL: the one place that knows which driver serves which URL.

The drivers (`sqlite`, `postgres`) import the seam in `db`; nothing in `db` imports them back.
"""

from __future__ import annotations

from clearance.errors import InvalidInput
from clearance.store.db import Database


def open_database(url: str) -> Database:
    """`sqlite:///path/to.db` (the embedded default) or `postgresql://…`."""
    if url.startswith("sqlite:"):
        from clearance.store.sqlite import SQLiteDatabase

        path = url.removeprefix("sqlite:").removeprefix("//")
        if path.startswith("/./") or path.startswith("/../"):
            path = path[1:]
        return SQLiteDatabase(path or "clearance.db")
    if url.startswith(("postgresql:", "postgres:")):
        from clearance.store.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise InvalidInput(
        f"unsupported database URL {url!r}: use sqlite:///path or postgresql://…",
        field="database_url",
    )
