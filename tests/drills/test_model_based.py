"""Drill 5 — a model-based check of the scheduled-campaign rules.

Hypothesis drives random sequences of: create a campaign (conditional or not, a few customers),
approve / revoke (`Status: false`) over the wire API, cancel, move the fake clock (also exactly onto
a ClearanceRequiredBy, or a millisecond before it) and run the worker — against the real store on
a SQLite file and on PostgreSQL, through the real HTTP app. Every reply, every campaign state and,
at the end, every customer's outcome (sent once per channel / excluded with its reason) must agree
with a small pure-Python model of the rules:

- a conditional campaign is processed (target frozen, ClearanceRequiredBy = execute_at - lead) by
  the first worker step; approvals before that are refused (409), approvals for a non-conditional
  or canceled campaign too;
- approvals count while the clock is before ClearanceRequiredBy; at or after it they are refused
  with 409, nothing applies, and a refused `Status: true` marks the customer `approved_late`;
- the latest word per customer counts; within one call the last entry wins; a tie in time between
  calls goes to false;
- canceled campaigns send nothing (reason `campaign_canceled`); non-conditional campaigns send to
  the whole target group; everyone else is `refused`, `approved_late` or `not_approved`;
- exactly one send per sent customer per channel;
- send groups (Conditional Execution V2): a campaign may place its customers in 3 groups sent 0,
  1 and 2 s after execute_at (deadlines 1 s apart); each group's entries count before its own
  deadline and are refused after it (named in `DeadlinePassed`; the call is a 409 only when every
  entry was late); each group freezes and executes on its own; the campaign is awaiting clearance
  while a group is, cleared when all are frozen, executed when all are; a cancel keeps the sends of
  groups already executed.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from clearance.clock import FakeClock, to_ms
from clearance.scheduled.worker import Worker
from clearance.store import Store

CHANNELS = (504, 505)
DEFAULT_LEAD = 1800
APPROVE = "/current/integrations/UpdateCustomerPromotionStatus"
OUTSIDER = "not-a-member"


@dataclass
class Model:
    """One campaign as the rules say it should be."""

    campaign_id: int
    conditional: bool
    customers: list[str]
    execute_at: datetime
    lead: int
    state: str = "scheduled"
    crb: datetime | None = None
    words: dict[str, list[tuple[int, bool]]] = field(default_factory=dict)  # (at, status)s
    late: set[str] = field(default_factory=set)
    offsets: tuple[int, ...] = ()  # send groups: seconds after execute_at; () = V1
    groups: list[str] = field(default_factory=list)  # each group's state

    def group_of(self, customer: str) -> int:
        return int(customer.rsplit("-", 1)[1]) % len(self.offsets)

    def deadlines(self) -> list[datetime]:
        if not self.offsets:
            return [] if self.crb is None else [self.crb]
        base = self.execute_at - timedelta(seconds=self.lead)
        return [base + timedelta(seconds=o) for o in self.offsets]

    def is_open(self, customer: str, now: datetime) -> bool:
        """Whether an approval for `customer` counts now (the campaign awaits clearance)."""
        if not self.offsets:
            return self.crb is not None and now < self.crb
        return now < self.deadlines()[self.group_of(customer)]

    def _group_step(self, now: datetime) -> bool:
        changed = False
        deadlines = self.deadlines()
        for k, g in enumerate(self.groups):
            if g == "awaiting" and now >= deadlines[k]:
                self.groups[k] = "cleared"
                changed = True
            elif g == "cleared" and now >= self.execute_at + timedelta(seconds=self.offsets[k]):
                self.groups[k] = "executed"
                changed = True
        if all(g == "executed" for g in self.groups):
            self.state = "executed"
        elif "awaiting" not in self.groups:
            self.state = "cleared"
        return changed

    def step(self, now: datetime) -> bool:
        """One worker step, if one is due; False when none is."""
        if self.offsets and self.state == "scheduled":
            self.groups = ["awaiting" if self.conditional else "cleared" for _ in self.offsets]
            self.state = "awaiting_clearance" if self.conditional else "cleared"
            self.crb = self.deadlines()[0] if self.conditional else None
            return True
        if self.offsets:
            return self.state in ("awaiting_clearance", "cleared") and self._group_step(now)
        if self.state == "scheduled":
            if self.conditional:
                self.state, self.crb = (
                    "awaiting_clearance",
                    self.execute_at - timedelta(seconds=self.lead),
                )
            else:
                self.state = "cleared"
            return True
        if self.state == "awaiting_clearance" and self.crb is not None and now >= self.crb:
            self.state = "cleared"
            return True
        if self.state == "cleared" and now >= self.execute_at:
            self.state = "executed"
            return True
        return False

    def final_word(self, customer: str) -> bool | None:
        words = self.words.get(customer)
        if not words:
            return None
        latest = max(at for at, _ in words)
        return all(status for at, status in words if at == latest)  # a tie goes to false

    def expected_outcomes(self) -> dict[str, tuple[str, str | None]]:
        out: dict[str, tuple[str, str | None]] = {}
        for c in self.customers:
            # a grouped campaign canceled before processing has no groups: nobody was sent
            ran = bool(self.offsets and self.groups) and self.groups[self.group_of(c)] == "executed"
            kept = ran and (not self.conditional or bool(self.final_word(c)))
            if self.state == "canceled" and not kept:
                out[c] = ("excluded", "campaign_canceled")
            elif not self.conditional:
                out[c] = ("sent", None)
            else:
                word = self.final_word(c)
                if word:
                    out[c] = ("sent", None)
                elif word is False:
                    out[c] = ("excluded", "refused")
                elif c in self.late:
                    out[c] = ("excluded", "approved_late")
                else:
                    out[c] = ("excluded", "not_approved")
        return out


def wire_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def make_machine(
    http: httpx.Client, store: Store, worker: Worker, clock: FakeClock, stats: Counter[str]
) -> type[RuleBasedStateMachine]:
    ids = itertools.count(1)

    class CampaignRules(RuleBasedStateMachine):
        campaigns = Bundle("campaigns")

        def __init__(self) -> None:
            super().__init__()
            self.models: list[Model] = []
            stats["examples"] += 1

        # --- actions ---------------------------------------------------------------------------
        @initialize(
            target=campaigns,
            size=st.integers(1, 3),
            lead=st.sampled_from([None, 600]),
            grouped=st.booleans(),
        )
        def first_campaign(self, size: int, lead: int | None, grouped: bool) -> Model | Any:
            """Every example starts with a processed conditional campaign awaiting clearance
            (half of them in send groups)."""
            return self.create(True, size, 3600, lead, True, grouped)

        @rule(
            target=campaigns,
            conditional=st.sampled_from([True, True, True, False]),
            size=st.integers(1, 3),
            execute_in=st.sampled_from([300, 660, 1800, 1801, 2400, 3600, 7200]),
            lead=st.sampled_from([None, 60, 600]),
            then_worker=st.sampled_from([True, True, False]),
            grouped=st.sampled_from([False, True]),
        )
        def create(
            self,
            conditional: bool,
            size: int,
            execute_in: int,
            lead: int | None,
            then_worker: bool,
            grouped: bool = False,
        ) -> Model | Any:
            cid = next(ids)
            now = clock.now()
            execute_at = now.replace(microsecond=0) + timedelta(seconds=execute_in)
            customers = [f"m{cid}-{i}" for i in range(size)]
            body: dict[str, Any] = {
                "campaign_id": cid,
                "name": f"model {cid}",
                "execute_at": wire_time(execute_at),
                "conditional": conditional,
                "action": {"id": 1, "name": "a", "promo_codes": ["P1"]},
                "channels": [{"id": ch} for ch in CHANNELS],
                "target_group": [{"customer_id": c} for c in customers],
            }
            # a group exists only with customers in it; one customer alone is in the campaign's
            # own group, which makes a V1 campaign
            offsets = (0, 1, 2)[:size] if grouped and size > 1 else ()
            if offsets:  # group 0: the campaign's time and first template; 1, 2: their own
                body["channels"][0]["templates"] = [{"id": 1}, {"id": 2}]
                for i, row in enumerate(body["target_group"]):
                    k = i % 3
                    if k:
                        row["send_at"] = wire_time(execute_at + timedelta(seconds=k))
                    if k == 1:
                        row["template_id"] = 2
                stats["created_grouped"] += 1
            if lead is not None:
                body["clearance_lead_seconds"] = lead
            r = http.post("/api/v1/campaigns", json=body)
            effective = DEFAULT_LEAD if lead is None else lead
            if conditional and execute_at - timedelta(seconds=effective) <= now:
                assert r.status_code == 400, r.text
                assert r.json()["field"] == "execute_at"
                stats["create_refused"] += 1
                return multiple()
            assert r.status_code == 201, r.text
            assert r.json()["state"] == "scheduled"
            model = Model(cid, conditional, customers, execute_at, effective, offsets=offsets)
            self.models.append(model)
            stats["created"] += 1
            if then_worker:  # most campaigns get processed before the next action
                self._run_worker()
            return model

        @rule(
            model=campaigns,
            picks=st.lists(st.tuples(st.integers(0, 3), st.booleans()), min_size=1, max_size=4),
            outsider=st.booleans(),
        )
        def approve(self, model: Model, picks: list[tuple[int, bool]], outsider: bool) -> None:
            self._call(model, [(i, status) for i, status in picks], outsider)

        @rule(model=campaigns, picks=st.lists(st.integers(0, 3), min_size=1, max_size=2))
        def revoke(self, model: Model, picks: list[int]) -> None:
            self._call(model, [(i, False) for i in picks], False)

        @rule(model=campaigns, picks=st.lists(st.integers(0, 3), min_size=1, max_size=4))
        def approve_all_true(self, model: Model, picks: list[int]) -> None:
            self._call(model, [(i, True) for i in picks], False)

        def _call(self, model: Model, picks: list[tuple[int, bool]], outsider: bool) -> None:
            entries = [(model.customers[i % len(model.customers)], status) for i, status in picks]
            if outsider:
                entries.append((OUTSIDER, True))
            r = http.post(
                APPROVE,
                json={
                    "CampaignID": model.campaign_id,
                    "PromosUpdated": [{"CustomerID": c, "Status": s} for c, s in entries],
                },
            )
            now = clock.now()
            last_word = dict(entries)  # within one call the last entry wins
            members = {c: s for c, s in last_word.items() if c != OUTSIDER}
            if not model.conditional or model.state in ("canceled", "scheduled"):
                assert r.status_code == 409, r.text
                why = model.state if model.conditional else "not_conditional"
                stats[f"approve_409_{why}"] += 1
            elif model.offsets and model.state != "awaiting_clearance":
                assert r.status_code == 409, r.text  # cleared or executed: every group is frozen
                assert "ClearanceRequiredBy" in r.json()
                model.late |= {c for c, s in members.items() if s}
                stats["approve_409_late_groups"] += 1
            elif model.offsets and not any(model.is_open(c, now) for c in members):
                assert r.status_code == 409, r.text  # every entry for the target group late
                assert "ClearanceRequiredBy" in r.json()
                model.late |= {c for c, s in members.items() if s}
                stats["approve_409_late_groups"] += 1
            elif model.offsets:  # each entry to its group
                late = [c for c in members if not model.is_open(c, now)]
                assert r.status_code == 200, r.text
                assert r.json() == {
                    "Applied": len(members) - len(late),
                    "NotInTargetGroup": [OUTSIDER] if outsider else [],
                    "DeadlinePassed": late,
                }
                for c, s in members.items():
                    if c not in late:
                        model.words.setdefault(c, []).append((to_ms(now), s))
                    elif s:
                        model.late.add(c)
                stats["approve_200_groups" + ("_partly_late" if late else "")] += 1
            elif model.state == "awaiting_clearance" and model.is_open("", now):
                assert r.status_code == 200, r.text
                assert r.json() == {
                    "Applied": len(members),
                    "NotInTargetGroup": [OUTSIDER] if outsider else [],
                }
                for c, s in members.items():
                    model.words.setdefault(c, []).append((to_ms(now), s))
                stats["approve_200"] += 1
            else:  # at or after ClearanceRequiredBy: refused, nothing applied
                assert r.status_code == 409, r.text
                assert "ClearanceRequiredBy" in r.json()
                model.late |= {c for c, s in members.items() if s}
                stats["approve_409_late"] += 1

        @rule(model=campaigns, really=st.sampled_from([True, False, False]))
        def cancel(self, model: Model, really: bool) -> None:
            if not really:  # cancel less often than the other actions
                return
            r = http.post(f"/api/v1/campaigns/{model.campaign_id}/cancel")
            if model.state in ("scheduled", "awaiting_clearance", "cleared"):
                assert r.status_code == 200, r.text
                assert r.json()["state"] == "canceled"
                model.state = "canceled"
                stats["cancel_200"] += 1
            else:
                assert r.status_code == 409, r.text
                stats["cancel_409"] += 1

        @rule(seconds=st.sampled_from([1, 1, 30, 59, 60, 299, 600, 1199, 1800, 3600]))
        def advance(self, seconds: int) -> None:
            clock.advance(seconds)

        @rule(model=campaigns, before_ms=st.sampled_from([0, 0, 1]), k=st.integers(0, 2))
        def advance_to_deadline(self, model: Model, before_ms: int, k: int) -> None:
            """Exactly onto a ClearanceRequiredBy (a tie is late), or a millisecond before it; with
            send groups, onto one of the groups' deadlines."""
            deadlines = model.deadlines()
            if not deadlines:
                return
            target = deadlines[k % len(deadlines)] - timedelta(milliseconds=before_ms)
            if target > clock.now():
                clock.set(target)
                stats["to_deadline"] += 1

        @rule(model=campaigns, k=st.integers(0, 1))
        def between_group_deadlines(self, model: Model, k: int) -> None:
            """With send groups: half a second after group k's deadline, before the next one's."""
            if model.offsets and model.crb is not None:
                target = model.deadlines()[k] + timedelta(milliseconds=500)
                if target > clock.now():
                    clock.set(target)
                    stats["between_deadlines"] += 1

        @rule()
        def worker_step(self) -> None:
            self._run_worker()

        def _run_worker(self) -> None:
            worker.run_once()
            now = clock.now()
            for m in self.models:
                while m.step(now):
                    pass

        # --- checks ----------------------------------------------------------------------------
        @invariant()
        def states_agree(self) -> None:
            for m in self.models:
                assert store.get_campaign(m.campaign_id).state == m.state, m

        def teardown(self) -> None:
            """Run every campaign to its end, then compare each customer's outcome."""
            clock.advance(days=3)
            worker.drain()
            self._run_worker()
            for m in self.models:
                got_state = http.get(f"/api/v1/campaigns/{m.campaign_id}").json()["state"]
                assert got_state == m.state == ("canceled" if m.state == "canceled" else "executed")
                got: dict[str, tuple[str, str | None]] = {}
                for outcome in ("sent", "excluded"):
                    r = http.get(
                        f"/api/v1/campaigns/{m.campaign_id}/customers", params={"outcome": outcome}
                    )
                    for row in r.json()["customers"]:
                        assert row["customer_id"] not in got, row
                        got[row["customer_id"]] = (row["outcome"], row["reason"])
                expected = m.expected_outcomes()
                assert got == expected, (m, got)
                with store.db.reader() as tx:
                    sends = tx.fetchall(
                        "SELECT customer_id, channel_id FROM sends WHERE campaign_id = ?",
                        (m.campaign_id,),
                    )
                per_send = Counter((r[0], int(r[1])) for r in sends)
                sent = {c for c, (o, _) in expected.items() if o == "sent"}
                assert per_send == Counter({(c, ch): 1 for c in sent for ch in CHANNELS})
                stats["customers_checked"] += len(m.customers)
                stats["sends_checked"] += len(sends)
                for o, reason in expected.values():
                    stats[f"outcome_{reason or o}"] += 1

    return CampaignRules


def test_engine_agrees_with_the_model_of_the_rules(
    api: httpx.Client, store: Store, worker: Worker, clock: FakeClock
) -> None:
    started = time.monotonic()
    stats: Counter[str] = Counter()
    machine = make_machine(api, store, worker, clock, stats)
    examples = 100 if store.dialect == "sqlite" else 40
    run_state_machine_as_test(
        machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    summary = " ".join(f"{k}={v}" for k, v in sorted(stats.items()))
    print(
        f"\n[drill model] db={store.dialect} max_examples={examples} steps<=30 {summary} "
        f"time={time.monotonic() - started:.1f}s"
    )
