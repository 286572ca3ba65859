"""Who approved: the key or user behind each accepted approval call, by the time its entries
were stored with (approval rows stay narrow: the hot path writes one row here per call, in the
transaction that stores the call's approvals, so the two are committed together or not at all)."""

from __future__ import annotations

from clearance.store.db import Database, Tx


def record_approval_call(tx: Tx, campaign_id: int, at_ms: int, actor: str, entries: int) -> None:
    tx.execute(
        "INSERT INTO approval_calls (campaign_id, at, actor, entries) VALUES (?, ?, ?, ?)",
        (campaign_id, at_ms, actor, entries),
    )


class ApprovalCallStore:
    db: Database

    def approvers(self, campaign_id: int, at_ms: int) -> list[str]:
        """The actors of the calls stored at `at_ms` (two calls in one millisecond: both)."""
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT DISTINCT actor FROM approval_calls WHERE campaign_id = ? AND at = ? "
                "ORDER BY actor",
                (campaign_id, at_ms),
            )
        return [str(r[0]) for r in rows]
