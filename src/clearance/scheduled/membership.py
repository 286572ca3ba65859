"""Which customers are in a frozen target group, answered from memory.

Once a campaign is processed its target group never changes, so each API process keeps, per
campaign, the sorted 64-bit hashes of its customer ids (8 bytes a customer) and checks a
10,000-entry approval call against them in memory instead of with 10,000 index probes (figures in
bench/README.md).
A hash collision could only let an id from outside the target group into the approvals log; it
still never reaches a send, because the freeze and the executor join on the exact target rows.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from clearance.domain import State
from clearance.store import Store

Entries = Sequence[tuple[str, bool]]


class TargetIndex:
    def __init__(self, hashes: npt.NDArray[np.int64]) -> None:
        hashes.sort()
        self.hashes = hashes

    def __len__(self) -> int:
        return len(self.hashes)

    def split(self, entries: Entries) -> tuple[Entries, list[str]]:
        """(entries whose customer is in the target group, ids that are not)."""
        if not entries:
            return [], []
        wanted = np.fromiter(map(hash, [cid for cid, _ in entries]), np.int64, len(entries))
        if not len(self.hashes):
            return [], [cid for cid, _ in entries]
        # Sorted probes walk the 8-byte-a-customer index in order, which is faster than probing
        # it at random. Every probe found: the common case, answered from that alone.
        probes = np.sort(wanted)
        pos = np.searchsorted(self.hashes, probes)
        pos[pos == len(self.hashes)] = 0
        if (self.hashes[pos] == probes).all():
            return entries, []
        pos = np.searchsorted(self.hashes, wanted)
        pos[pos == len(self.hashes)] = 0
        found = self.hashes[pos] == wanted
        members = [e for e, ok in zip(entries, found.tolist(), strict=True) if ok]
        missing = [e[0] for e, ok in zip(entries, found.tolist(), strict=True) if not ok]
        return members, missing


class MembershipCache:
    """Per-process LRU of frozen target groups, bounded by the number of customers held."""

    def __init__(self, store: Store, max_customers: int = 10_000_000) -> None:
        self.store = store
        self.max_customers = max_customers
        self._indexes: OrderedDict[int, TargetIndex] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self._building: dict[int, threading.Lock] = {}

    def prefetch(self, campaign_id: int) -> None:
        """Start building the index in the background (listeners page before they approve, so
        the first approval call then finds it ready)."""
        with self._lock:
            if campaign_id in self._indexes or campaign_id in self._building:
                return
        threading.Thread(
            target=self.index_for,
            args=(campaign_id,),
            daemon=True,
            name=f"membership-{campaign_id}",
        ).start()

    def index_for(self, campaign_id: int) -> TargetIndex | None:
        """The campaign's index, built on first use; None unless the campaign is awaiting
        clearance, or when it is too large to hold (callers then ask the database)."""
        with self._lock:
            index = self._indexes.get(campaign_id)
            if index is not None:
                self._indexes.move_to_end(campaign_id)
                return index
            build_lock = self._building.setdefault(campaign_id, threading.Lock())
        with build_lock:
            with self._lock:
                if campaign_id in self._indexes:
                    return self._indexes[campaign_id]
            campaign = self.store.get_campaign(campaign_id)
            if not campaign.conditional or campaign.state != State.AWAITING_CLEARANCE:
                return None  # approvals will be refused anyway; let the store say why
            if campaign.target_count > self.max_customers:
                return None
            hashes = np.empty(campaign.target_count, dtype=np.int64)
            n = 0
            for ids in self.store.iter_target_ids(campaign_id):
                hashes[n : n + len(ids)] = np.fromiter(
                    (hash(c) for c in ids), dtype=np.int64, count=len(ids)
                )
                n += len(ids)
            index = TargetIndex(hashes[:n])
            with self._lock:
                self._indexes[campaign_id] = index
                self._held += len(index)
                while self._held > self.max_customers and len(self._indexes) > 1:
                    _, evicted = self._indexes.popitem(last=False)
                    self._held -= len(evicted)
                self._building.pop(campaign_id, None)
            return index
