"""The store: every read and write the engine makes, behind one object, on SQLite or PostgreSQL.

Imports only `domain`, `errors` and `clock`; the drivers sit behind the seam in `db`."""

from __future__ import annotations

from clearance.store.access import AccessStore, ChannelConfig, Principal
from clearance.store.approval_calls import ApprovalCallStore
from clearance.store.campaigns import ApprovalResult, CampaignStore, CustomerOutcome
from clearance.store.connect import open_database
from clearance.store.console import ConsoleStore
from clearance.store.db import Database
from clearance.store.group_approvals import GroupApprovalResult, GroupApprovalStore
from clearance.store.outbox import OutboxSend, OutboxStore, TriggeredBatch
from clearance.store.page_json import PageStore
from clearance.store.send_groups import SendGroupStore
from clearance.store.triggered import DecisionRow, GatewayConfig, TriggeredStore
from clearance.store.work import Batch, LeaseLost, Notification, WorkStore


class Store(
    AccessStore,
    CampaignStore,
    GroupApprovalStore,
    SendGroupStore,
    PageStore,
    WorkStore,
    TriggeredStore,
    OutboxStore,
    ConsoleStore,
    ApprovalCallStore,
):
    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def dialect(self) -> str:
        return self.db.dialect

    def migrate(self) -> list[int]:
        return self.db.migrate()

    def close(self) -> None:
        self.db.close()


def open_store(url: str, migrate: bool = True) -> Store:
    store = Store(open_database(url))
    if migrate:
        store.migrate()
    return store


__all__ = [
    "ApprovalResult",
    "Batch",
    "ChannelConfig",
    "CustomerOutcome",
    "DecisionRow",
    "GatewayConfig",
    "GroupApprovalResult",
    "LeaseLost",
    "Notification",
    "OutboxSend",
    "Principal",
    "Store",
    "TriggeredBatch",
    "open_store",
]
