"""The wire for campaigns with send groups (Conditional Execution V2): GetProcessedCampaign-
Customers by group, with each row's SendGroupID and ScheduledTime. A campaign without groups
answers as before, byte for byte (wire.py)."""

from __future__ import annotations

from typing import Any

import orjson

from clearance.domain import (
    Campaign,
    first_template,
    format_wire_time,
    parse_send_group_id,
    send_group_id,
)
from clearance.errors import InvalidInput, NotFound
from clearance.runtime import Runtime
from clearance.store import GroupApprovalResult


def grouped_page(
    runtime: Runtime,
    c: Campaign,
    group_id: str | None,
    top: int,
    skip: int,
    names: list[str],
) -> bytes | None:
    """The page for a campaign with send groups; None for a V1 campaign (not given a group)."""
    groups = {g.send_group_id: g for g in runtime.store.send_groups(c.campaign_id)}
    if not groups:  # V1: one group, the campaign's time and first template (as the native API)
        if group_id is not None and group_id != send_group_id(
            first_template(c.channels), c.execute_at
        ):
            raise NotFound(
                f"campaign {c.campaign_id} has no send group {group_id!r}", field="SendGroupID"
            )
        return None
    if group_id is not None and group_id not in groups:
        raise NotFound(
            f"campaign {c.campaign_id} has no send group {group_id!r}", field="SendGroupID"
        )
    tz = runtime.settings.tz
    times: dict[str, str] = {}
    out: list[dict[str, Any]] = []
    for row in runtime.store.page_group_target(c.campaign_id, group_id, skip, top, bool(names)):
        seq, cid, gid = row[0], row[1], row[2]
        if gid not in times:
            times[gid] = format_wire_time(parse_send_group_id(gid)[1], tz)
        item: dict[str, Any] = {
            "CustomerID": cid,
            "ActionID": c.action_id,
            "PromoCode": c.promo_code_for(int(seq)),
        }
        if names:
            values = orjson.loads(row[3]) if row[3] else {}
            item["CustomerAttributes"] = [values.get(n) for n in names]
        item["SendGroupID"] = gid
        item["ScheduledTime"] = times[gid]
        out.append(item)
    return orjson.dumps(out)


def approval_reply(result: Any) -> dict[str, Any]:
    """UpdateCustomerPromotionStatus's reply; with send groups, the entries refused because
    their group's deadline had passed are named."""
    reply = {"Applied": result.applied, "NotInTargetGroup": result.not_in_target_group}
    if isinstance(result, GroupApprovalResult):
        reply["DeadlinePassed"] = result.deadline_passed
        if result.send_group_mismatch:
            reply["SendGroupMismatch"] = result.send_group_mismatch
    return reply


def named_groups(body: dict[str, Any], updates: list[Any]) -> dict[str, str]:
    """The SendGroupID each approval names (customer → group): an entry's own, else the call's.
    An entry approved for one group must never apply to a customer of another."""
    default = body.get("SendGroupID")
    out: dict[str, str] = {}
    for i, entry in enumerate(updates):
        gid = entry.get("SendGroupID", default)
        if gid is None:
            continue
        if not isinstance(gid, str) or not gid:
            raise InvalidInput(
                f"PromosUpdated[{i}].SendGroupID must be a send group id",
                field=f"PromosUpdated[{i}].SendGroupID",
            )
        out[str(entry["CustomerID"])] = gid
    return out
