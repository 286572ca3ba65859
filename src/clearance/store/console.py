"""What the console reads beyond the API's calls: campaign lists, one customer across campaigns,
a page of every outcome, the review progress, and browser sessions for admin keys."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

import orjson

from clearance.domain import State
from clearance.store.access import hash_key
from clearance.store.campaign_rows import campaign_from_row, exclusion_reason, undelivered_seqs
from clearance.store.campaigns import (
    _HAS_SEND,
    _IN_UNDELIVERED_BATCH,
    LATEST_APPROVALS,
    LATEST_AT,
    LATEST_STATUS,
)
from clearance.store.db import Database
from clearance.store.queries import query
from clearance.store.triggered import DECISION_COLUMNS, DecisionRow, _decision

DONE = (State.EXECUTED, State.CANCELED)


@dataclass(frozen=True)
class OutcomeRow:
    seq: int
    customer_id: str
    outcome: str  # sent · undelivered · excluded · pending (not decided yet)
    reason: str | None
    approved_at_ms: int | None


@dataclass(frozen=True)
class Membership:
    """One scheduled campaign a customer was in, and what became of them."""

    campaign_id: int
    name: str
    state: str
    outcome: str
    reason: str | None
    approved_at_ms: int | None
    clearance_required_by_ms: int | None
    decided_at_ms: int | None  # approvals frozen (cleared) or campaign canceled


class ConsoleStore:
    db: Database

    def list_campaigns(
        self, state: str | None, search: str | None, limit: int
    ) -> list[dict[str, Any]]:
        """Newest first. `search` matches an id exactly or a name by substring."""
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        if state:
            where.append("state = ?")
            params.append(state)
        if search:
            if re.fullmatch(r"[0-9]{1,18}", search):  # an id fits in BIGINT; longer: a name
                where.append("(campaign_id = ? OR LOWER(name) LIKE ?)")
                params += [int(search), f"%{search.lower()}%"]
            else:
                where.append("LOWER(name) LIKE ?")
                params.append("%" + search.lower().replace("%", "").replace("_", "") + "%")
        with self.db.reader() as tx:
            rows = tx.fetchdicts(
                query("campaign", lock="").rsplit("WHERE", 1)[0]
                + " WHERE "
                + " AND ".join(where)
                + " ORDER BY created_at DESC, campaign_id DESC LIMIT ?",
                [*params, limit],
            )
        return rows

    def campaign_of_row(self, row: dict[str, Any]) -> Any:
        return campaign_from_row(row)

    def reviewed_count(self, campaign_id: int, frozen: bool) -> int:
        """Customers the listener has answered for (approved or refused)."""
        with self.db.reader() as tx:
            if frozen:
                row = tx.fetchone(
                    "SELECT COUNT(*) FROM target_customers WHERE campaign_id = ? "
                    "AND approval IS NOT NULL",
                    (campaign_id,),
                )
            else:
                row = tx.fetchone(
                    f"SELECT COUNT(*) FROM ({LATEST_APPROVALS}) x WHERE rn = 1", (campaign_id,)
                )
        return int(row[0]) if row else 0

    def outcome_page(
        self, campaign_id: int, state: State, frozen: bool, after_seq: int, limit: int
    ) -> list[OutcomeRow]:
        """Every customer, by seq, with their outcome: one index range and two probes a row."""
        approval, approval_at = (
            ("t.approval", "t.approval_at")
            if frozen
            else (
                LATEST_STATUS,
                LATEST_AT,
            )
        )
        with self.db.reader() as tx:
            rows = tx.fetchall(
                f"SELECT t.seq, t.customer_id, {approval}, {approval_at}, t.late_attempt_at, "
                f"CASE WHEN {_HAS_SEND} THEN 1 ELSE 0 END, "
                f"CASE WHEN {_IN_UNDELIVERED_BATCH} THEN 1 ELSE 0 END "
                "FROM target_customers t WHERE t.campaign_id = ? AND t.seq > ? "
                "ORDER BY t.seq LIMIT ?",
                (campaign_id, after_seq, limit),
            )
        return [self._outcome(state, r) for r in rows]

    @staticmethod
    def _outcome(state: State, r: Any) -> OutcomeRow:
        seq, cid, approval, approval_at, late_at, has_send, undelivered = r
        done = state in DONE
        if has_send and not undelivered:
            outcome, reason = "sent", None
        elif has_send:
            outcome, reason = ("undelivered", "delivery_failed") if done else ("pending", None)
        elif done:
            outcome, reason = "excluded", exclusion_reason(state, approval, late_at is not None)
        else:
            outcome, reason = "pending", None
        at = None if approval_at is None else int(approval_at)
        return OutcomeRow(int(seq), cid, outcome, str(reason) if reason else None, at)

    def customer_memberships(self, customer_id: str, limit: int = 200) -> list[Membership]:
        """Every scheduled campaign the customer was in, newest first."""
        with self.db.reader() as tx:
            found = tx.fetchall(
                "SELECT t.campaign_id, t.seq FROM target_customers t WHERE t.customer_id = ? "
                "ORDER BY t.campaign_id DESC LIMIT ?",
                (customer_id, limit),
            )
            rows: list[tuple[dict[str, Any], int]] = []
            for campaign_id, seq in found:
                got = tx.fetchdicts(query("campaign", lock=""), (campaign_id,))
                if got:
                    rows.append((got[0], int(seq)))
        out = []
        for c, seq in rows:
            state = State(c["state"])
            frozen = c["cleared_at"] is not None
            page = self.outcome_page(int(c["campaign_id"]), state, frozen, seq - 1, 1)
            if not page:
                continue
            o = page[0]
            decided = c["cleared_at"] or c["canceled_at"]
            out.append(
                Membership(
                    int(c["campaign_id"]),
                    c["name"],
                    state.value,
                    o.outcome,
                    o.reason,
                    o.approved_at_ms,
                    None if c["clearance_required_by"] is None else int(c["clearance_required_by"]),
                    None if decided is None else int(decided),
                )
            )
        return out

    def user_decisions(self, user_id: str, limit: int = 200) -> list[DecisionRow]:
        """A customer's triggered decisions, newest first."""
        with self.db.reader() as tx:
            rows = tx.fetchall(
                f"SELECT {', '.join(DECISION_COLUMNS)} FROM decisions WHERE user_id = ? "
                "ORDER BY at DESC LIMIT ?",
                (user_id, limit),
            )
        return [_decision(r) for r in rows]

    def list_channel_configs(self) -> list[dict[str, Any]]:
        with self.db.reader() as tx:
            return tx.fetchdicts(
                "SELECT channel_id, name, clearance_lead_seconds, delivery, target FROM channels "
                "ORDER BY channel_id"
            )

    def recent_notifications(self, limit: int = 100) -> list[dict[str, Any]]:
        with self.db.reader() as tx:
            return tx.fetchdicts(
                "SELECT notification_id, campaign_id, event_type_id, channel_id, listener_url, "
                "state, attempts, created_at, expires_at FROM notifications "
                "ORDER BY created_at DESC LIMIT ?",
                (limit,),
            )

    # --- browser sessions -------------------------------------------------------------------------
    def open_session(self, name: str, access_type: str, now_ms: int) -> str:
        """A session token for a signed-in console user (login user or admin key id); it expires
        like a login token (`principal_for_token`)."""
        token = secrets.token_urlsafe(32)
        with self.db.transaction() as tx:
            tx.execute(
                "INSERT INTO sessions (token_hash, username, access_type, last_used_at) "
                "VALUES (?, ?, ?, ?)",
                (hash_key(token), name, access_type, now_ms),
            )
        return token

    def close_session(self, token: str) -> None:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM sessions WHERE token_hash = ?", (hash_key(token),))

    def user_access(self, username: str) -> str | None:
        """The login user's access type now, or None when there is no such user."""
        with self.db.reader() as tx:
            row = tx.fetchone("SELECT access_type FROM users WHERE username = ?", (username,))
        return None if row is None else str(row[0])

    def key_active(self, key_id: str) -> bool:
        with self.db.reader() as tx:
            row = tx.fetchone(
                "SELECT 1 FROM api_keys WHERE key_id = ? AND revoked_at IS NULL", (key_id,)
            )
        return row is not None

    def decision_stats(
        self,
        *,
        campaign_key: str | None = None,
        user_id: str | None = None,
        outcome: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        latency_sample: int = 100_000,
    ) -> tuple[dict[str, int], list[float]]:
        """Decisions by outcome, and the latencies of the latest `latency_sample` of them, for
        the explorer's charts (same filters as `query_decisions`)."""
        filters = [
            ("campaign_key = ?", campaign_key),
            ("user_id = ?", user_id),
            ("outcome = ?", outcome),
            ("at >= ?", from_ms),
            ("at < ?", to_ms),
        ]
        where = " AND ".join(["1 = 1", *(sql for sql, value in filters if value is not None)])
        params: list[Any] = [value for _, value in filters if value is not None]
        with self.db.reader() as tx:
            by_outcome = tx.fetchall(
                f"SELECT outcome, COUNT(*) FROM decisions WHERE {where} GROUP BY outcome", params
            )
            latencies = tx.fetchall(
                f"SELECT latency_ms FROM decisions WHERE {where} ORDER BY seq DESC LIMIT ?",
                [*params, latency_sample],
            )
        return {r[0]: int(r[1]) for r in by_outcome}, [float(r[0]) for r in latencies]

    def executed_counts(self, campaign_id: int) -> dict[str, int] | None:
        """`counts` of an executed campaign without counting a million rows: the executor's own
        ledger (`sends_count`, committed with every chunk of sends: one send per approved customer
        and channel) gives the customers with sends, who are exactly the approved ones; only the
        few open batches are read. Equal to `counts` (tests/integration/test_console_counts.py).
        None when the campaign is not executed (use `counts`)."""
        with self.db.reader() as tx:
            row = tx.fetchone(
                "SELECT state, target_count, sends_count, channels, conditional FROM campaigns "
                "WHERE campaign_id = ?",
                (campaign_id,),
            )
            if row is None or row[0] != State.EXECUTED:
                return None
            width = len(orjson.loads(row[3]))
            if width == 0 or int(row[2]) % width:
                return None  # not what the executor writes: count the slow, sure way
            with_sends = int(row[2]) // width
            undelivered = len(undelivered_seqs(tx, campaign_id))
        target = int(row[1])
        return {
            "target": target,
            # approvals only exist for conditional campaigns (the others send to everyone)
            "approved": with_sends if row[4] else 0,
            "sent": with_sends - undelivered,
            "undelivered": undelivered,
            "excluded": target - with_sends,
        }
