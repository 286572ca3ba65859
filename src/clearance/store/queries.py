"""The store's longer statements, one file each in `sql/`, read once and then kept by name.

`query("claim_notifications", skip_locked=db.skip_locked)` is the text of
`sql/claim_notifications.sql` without its `--` comment lines, with each `{field}` filled in (as
the migrations' `{table_options}` are). A statement only one backend runs is named for it:
`insert_approvals.postgres`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def query(name: str, **fields: str) -> str:
    path = resources.files("clearance.store") / "sql" / f"{name}.sql"
    lines = path.read_text(encoding="utf-8").splitlines()
    text = "\n".join(line for line in lines if not line.lstrip().startswith("--")).strip()
    return text.format(**fields)
