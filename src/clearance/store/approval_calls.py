"""Who approved: the key or user behind each accepted approval call, by the time its entries
were stored with (approval rows stay narrow: the hot path writes one row here per call)."""

from __future__ import annotations

from clearance.store.db import Database


class ApprovalCallStore:
    db: Database

    def record_approval_call(self, campaign_id: int, at_ms: int, actor: str, entries: int) -> None:
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO approval_calls (campaign_id, at, actor, entries) VALUES (?, ?, ?, ?)",
                (campaign_id, at_ms, actor, entries),
            )

    def approvers(self, campaign_id: int, at_ms: int) -> list[str]:
        """The actors of the calls stored at `at_ms` (two calls in one millisecond: both)."""
        with self.db.reader() as tx:
            rows = tx.fetchall(
                "SELECT DISTINCT actor FROM approval_calls WHERE campaign_id = ? AND at = ? "
                "ORDER BY actor",
                (campaign_id, at_ms),
            )
        return [str(r[0]) for r in rows]
