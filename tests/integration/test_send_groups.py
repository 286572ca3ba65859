"""Send groups (Conditional Execution V2) against the real store (SQLite file and PostgreSQL):
each group notified with its own deadline, frozen and executed on its own, and its heads-up."""

from __future__ import annotations

import contextlib
from datetime import timedelta

import pytest

from clearance.domain import State, format_wire_time
from clearance.errors import ClearanceError, DeadlinePassed
from clearance.scheduled.worker import Worker
from tests.helpers import new_campaign, new_grouped_campaign

HOUR = timedelta(hours=1)


def three_groups(engine):
    # send times 2 h, 3 h and 4 h from now; the default lead is 30 minutes
    return new_grouped_campaign(
        engine, [(2 * HOUR, 4), (3 * HOUR, 4), (4 * HOUR, 4)], templates=(901, 902, 903)
    )


def test_three_groups_an_hour_apart_are_notified_three_times_with_three_deadlines(
    engine, worker, store, clock, listener
):
    store.register_listener(5, None, listener.url, 0)
    start = clock.now()
    c = three_groups(engine)
    worker.drain()
    assert store.get_campaign(c.campaign_id).state == State.AWAITING_CLEARANCE
    notes = sorted(listener.bodies(5), key=lambda b: b["ClearanceRequiredBy"])
    assert len(notes) == 3
    for k, note in enumerate(notes):
        send = start + (2 + k) * HOUR
        assert note == {
            "EventTypeID": 5,
            "TimeStamp": format_wire_time(start, engine.settings.tz),
            "CampaignID": c.campaign_id,
            "CampaignDuration": 1,
            "ClearanceRequiredBy": format_wire_time(
                send - timedelta(minutes=30), engine.settings.tz
            ),
            "SendGroupID": f"{901 + k}@{send.strftime('%Y%m%dT%H%M%SZ')}",
            "TemplateID": 901 + k,
            "ScheduledTime": format_wire_time(send, engine.settings.tz),
        }
    groups = engine.send_groups(c.campaign_id)
    assert [(g.target, g.state, g.at_risk) for g in groups] == [(4, "awaiting", True)] * 3


def test_a_frozen_groups_approvals_are_refused_per_entry_while_the_next_groups_apply(
    engine, worker, store, clock
):
    c = three_groups(engine)
    cid = c.campaign_id
    worker.drain()
    engine.approve(cid, [("g0c0", True), ("g0c1", True)])
    clock.advance(minutes=90)  # group 0's deadline, exactly: late before its freeze has run
    with pytest.raises(DeadlinePassed):
        engine.approve(cid, [("g0c3", True)])
    assert engine.approve(cid, [("g1c3", True), ("g0c3", False)]).deadline_passed == ["g0c3"]
    worker.drain()
    [g0, g1, g2] = store.send_groups(cid)
    assert (g0.state, g1.state, g2.state) == ("cleared", "awaiting", "awaiting")
    result = engine.approve(cid, [("g0c2", True), ("g1c0", True), ("g2c3", True), ("nobody", True)])
    assert result.applied == 2
    assert result.not_in_target_group == ["nobody"]
    assert result.deadline_passed == ["g0c2"]
    with pytest.raises(DeadlinePassed) as refused:  # every entry late: the call is a 409
        engine.approve(cid, [("g0c3", True)])
    assert refused.value.extra["clearance_required_by_text"] == format_wire_time(
        g0.clearance_required_by, engine.settings.tz
    )
    status = {g.send_group_id: g.approved for g in engine.send_groups(cid)}
    assert status == {g0.send_group_id: 2, g1.send_group_id: 2, g2.send_group_id: 1}


def sends_by_group(store, cid):
    with store.db.reader() as tx:
        rows = tx.fetchall(
            "SELECT customer_id, send_group_id, template_id, scheduled_at FROM sends "
            "WHERE campaign_id = ? ORDER BY customer_id",
            (cid,),
        )
    return rows


def test_each_group_executes_at_its_own_time_to_its_own_approved_only(
    engine, worker, store, clock, listener
):
    store.register_listener(1, None, listener.url, 0)
    start = clock.now()
    c = three_groups(engine)
    cid = c.campaign_id
    worker.drain()
    engine.approve(cid, [("g0c0", True), ("g1c1", True), ("g1c2", True), ("g2c3", False)])
    clock.advance(hours=2)  # group 0's send time
    worker.drain()
    rows = sends_by_group(store, cid)
    assert [(r[0], r[2]) for r in rows] == [("g0c0", 901)]
    assert store.get_campaign(cid).state == State.AWAITING_CLEARANCE  # groups 1, 2 await
    assert listener.bodies(1) == []
    clock.advance(hours=1)
    worker.drain()
    rows = sends_by_group(store, cid)
    assert sorted((r[0], r[2], int(r[3])) for r in rows) == [
        ("g0c0", 901, int((start + 2 * HOUR).timestamp() * 1000)),
        ("g1c1", 902, int((start + 3 * HOUR).timestamp() * 1000)),
        ("g1c2", 902, int((start + 3 * HOUR).timestamp() * 1000)),
    ]
    clock.advance(hours=1)
    worker.drain()
    assert len(sends_by_group(store, cid)) == 3  # group 2's one answer was "no"
    assert store.get_campaign(cid).state == State.EXECUTED
    assert len(listener.bodies(1)) == 1
    assert store.counts(cid) == {
        "target": 12,
        "approved": 3,
        "sent": 3,
        "undelivered": 0,
        "excluded": 9,
    }


def test_the_heads_up_fires_once_per_group_at_its_time_on_the_injected_clock(
    store, settings, clock, engine, listener
):
    worker = Worker(store, settings.with_(heads_up_url=listener.url), clock, worker_id="w")
    try:
        c = three_groups(engine)
        worker.drain()
        engine.approve(c.campaign_id, [("g0c0", True), ("g0c1", True), ("g0c2", True)])
        deadlines = [g.clearance_required_by for g in store.send_groups(c.campaign_id)]
        seen = []
        for k, crb in enumerate(deadlines):
            clock.set(crb - timedelta(minutes=15, seconds=1))
            worker.drain()
            assert len(listener.received) == k  # not yet
            clock.set(crb - timedelta(minutes=15))
            worker.drain()
            assert len(listener.received) == k + 1
            clock.set(crb - timedelta(minutes=1))
            worker.drain()  # nothing more for this group
            assert len(listener.received) == k + 1
            seen.append(listener.received[-1])
        bodies = [r["body"] for r in seen]
        assert [b["send_group_id"] for b in bodies] == [
            g.send_group_id for g in store.send_groups(c.campaign_id)
        ]
        assert (bodies[0]["approved"], bodies[0]["target"], bodies[0]["at_risk"]) == (3, 4, True)
        assert bodies[0]["approval_rate"] == 0.75 and bodies[0]["seconds_left"] == 900
        assert "3/4 approved (75%)" in bodies[0]["text"] and "AT RISK" in bodies[0]["text"]
        assert bodies[1]["approved"] == 0
        for r in seen:  # signed like every other outbound call
            assert r["headers"]["webhook-id"].startswith("msg_")
            assert "webhook-signature" in r["headers"] or engine.settings.signing_secret is None
    finally:
        worker.notifier.close()


def test_a_v1_campaign_is_one_group_and_has_no_send_group_rows(engine, worker, store):
    c = new_campaign(engine, 3)
    worker.drain()
    assert store.send_groups(c.campaign_id) == []
    [g] = engine.send_groups(c.campaign_id)
    assert (g.target, g.state, g.template_id) == (3, "awaiting", 5040)


def test_approvals_racing_the_processing_still_go_to_their_groups(engine, worker, store, clock):
    """The first approval call comes while the campaign is being processed: the service must
    not take a V2 campaign for a V1 one (whose one deadline, the first group's, would then
    refuse every later group's approvals)."""
    c = three_groups(engine)
    real = store.send_groups
    calls = []

    def processed_meanwhile(campaign_id):
        found = real(campaign_id)
        if not calls:  # the worker processes the campaign right after this read
            calls.append(1)
            worker.drain()
        return found

    store.send_groups = processed_meanwhile
    try:
        with contextlib.suppress(ClearanceError):  # too early or not: it is the next that count
            engine.approve(c.campaign_id, [("g1c0", True)])
    finally:
        store.send_groups = real
    worker.drain()
    clock.advance(minutes=90)  # group 0's deadline; groups 1 and 2 are still open
    worker.drain()
    result = engine.approve(c.campaign_id, [("g1c0", True), ("g0c0", True)])
    assert (result.applied, result.deadline_passed) == (1, ["g0c0"])


def test_once_every_groups_deadline_passed_any_call_is_a_409_as_for_v1(engine, worker, clock):
    """A one-group campaign answers as a V1 one after its deadline, even for a call naming only
    outsiders (or nobody); while a group is open, outsiders are named and nothing refused."""
    v1 = new_campaign(engine, 2)
    one = new_grouped_campaign(engine, [(2 * HOUR, 2)])
    two = new_grouped_campaign(engine, [(2 * HOUR, 2), (3 * HOUR, 2)])
    worker.drain()
    clock.advance(minutes=90)  # the V1 and first groups' deadline
    worker.drain()
    for calls in ([("nobody", True)], []):
        with pytest.raises(DeadlinePassed) as a:
            engine.approve(v1.campaign_id, calls)
        with pytest.raises(DeadlinePassed) as b:
            engine.approve(one.campaign_id, calls)
        assert (
            a.value.extra["clearance_required_by_text"]
            == (b.value.extra["clearance_required_by_text"])
        )
        assert engine.approve(two.campaign_id, calls).applied == 0  # its second group is open
    clock.advance(hours=1)
    with pytest.raises(DeadlinePassed):
        engine.approve(two.campaign_id, [("nobody", True)])
