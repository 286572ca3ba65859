"""Which customers are in a frozen target group, and where, answered from memory.

Once a campaign is processed its target group never changes, so each API process keeps, per
campaign, the sorted 64-bit hashes of its customer ids with each one's position (`seq`) in the
group (16 bytes a customer), and places a 10,000-entry approval call with them in memory instead
of with 10,000 index probes (figures in bench/README.md). Approvals are stored at those positions.
A hash collision cannot make an entry count for another customer: every approval row carries the
id it named, and the freeze and every read match the target row on position and id both. A group
in which two members' hashes collide gets no index (callers then ask the database).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from clearance.domain import State
from clearance.store import Store
from clearance.store.db import Placed

Entries = Sequence[tuple[str, bool]]


class TargetIndex:
    def __init__(self, hashes: npt.NDArray[np.int64], seqs: npt.NDArray[np.int64]) -> None:
        order = np.argsort(hashes, kind="stable")
        self.hashes = hashes[order]
        self.seqs = seqs[order]

    def __len__(self) -> int:
        return len(self.hashes)

    def unique(self) -> bool:
        """No two members share a hash (else a hash could not name one position)."""
        return not bool((self.hashes[1:] == self.hashes[:-1]).any())

    def split(self, entries: Entries) -> tuple[list[Placed], list[str]]:
        """(entries whose customer is in the target group, as (seq, customer_id, status) in
        the call's order; ids that are not)."""
        if not entries:
            return [], []
        if not len(self.hashes):
            return [], [cid for cid, _ in entries]
        ids = [cid for cid, _ in entries]
        wanted = np.fromiter(map(hash, ids), np.int64, len(entries))
        pos = np.searchsorted(self.hashes, wanted)
        pos[pos == len(self.hashes)] = 0
        found = self.hashes[pos] == wanted
        seqs = self.seqs[pos].tolist()
        if found.all():
            return list(zip(seqs, ids, [status for _, status in entries], strict=True)), []
        ok = found.tolist()
        members = [
            (seq, cid, status)
            for seq, (cid, status), hit in zip(seqs, entries, ok, strict=True)
            if hit
        ]
        missing = [e[0] for e, hit in zip(entries, ok, strict=True) if not hit]
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
        self._unindexed: set[int] = set()  # groups with colliding hashes: the database answers

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
                if campaign_id in self._unindexed:
                    return None
            campaign = self.store.get_campaign(campaign_id)
            if not campaign.conditional or campaign.state != State.AWAITING_CLEARANCE:
                return None  # approvals will be refused anyway; let the store say why
            if campaign.target_count > self.max_customers:
                return None
            hashes = np.empty(campaign.target_count, dtype=np.int64)
            seqs = np.empty(campaign.target_count, dtype=np.int64)
            n = 0
            for page_seqs, ids in self.store.iter_target_rows(campaign_id):
                if n + len(ids) > len(hashes):  # the group is frozen: more rows is a surprise
                    raise RuntimeError(
                        f"campaign {campaign_id}: target group larger than its target_count"
                    )
                hashes[n : n + len(ids)] = np.fromiter(map(hash, ids), np.int64, len(ids))
                seqs[n : n + len(ids)] = page_seqs
                n += len(ids)
            index = TargetIndex(hashes[:n], seqs[:n])
            if not index.unique():
                with self._lock:
                    self._unindexed.add(campaign_id)
                    self._building.pop(campaign_id, None)
                return None
            with self._lock:
                self._indexes[campaign_id] = index
                self._held += len(index)
                while self._held > self.max_customers and len(self._indexes) > 1:
                    _, evicted = self._indexes.popitem(last=False)
                    self._held -= len(evicted)
                self._building.pop(campaign_id, None)
            return index
