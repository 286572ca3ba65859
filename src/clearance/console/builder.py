"""The Campaign Builder's form: read, check, and turn into a campaign (nothing is saved unless
every field and every target group row is valid)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from starlette.datastructures import FormData, UploadFile

from clearance.console.targetfile import TargetFile, parse_target_file
from clearance.domain import Campaign, ChannelRef, State, Template, parse_time
from clearance.errors import ClearanceError
from clearance.runtime import Runtime
from clearance.scheduled.deadline import deadline_for

MAX_ID = 2**31 - 1


@dataclass
class Draft:
    """What the form said, kept to show it again with the errors."""

    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    target: TargetFile | None = None


def _int(text: str, name: str, errors: dict[str, str], lo: int, hi: int) -> int | None:
    text = text.strip()
    if not text:
        return None
    if not re.fullmatch(r"\d{1,10}", text) or not lo <= int(text) <= hi:
        errors[name] = f"a whole number from {lo} to {hi}"
        return None
    return int(text)


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def channels_from(form: FormData, errors: dict[str, str]) -> list[ChannelRef]:
    channels: list[ChannelRef] = []
    picked = [v for v in form.getlist("channel") if isinstance(v, str)]
    other = _text(form, "other_channel").strip()
    if other:
        picked.append(other)
    for raw in picked:
        cid = _int(raw, "channels", errors, 1, MAX_ID)
        if cid is None or any(c.id == cid for c in channels):
            continue
        tid = _int(_text(form, f"template_{cid}"), f"template_{cid}", errors, 1, MAX_ID)
        channels.append(ChannelRef(cid, "", (Template(tid),) if tid else ()))
    if not channels and "channels" not in errors:
        errors["channels"] = "pick at least one channel"
    return channels


def read_builder(runtime: Runtime, form: FormData, data: bytes | None, filename: str) -> Draft:
    """Check the form; `Draft.values['campaign']` is the Campaign when there are no errors."""
    d = Draft()
    e = d.errors
    name = _text(form, "name").strip()
    d.values = {k: _text(form, k) for k in form if k not in ("target_file", "csrf")}
    d.values["channel"] = [v for v in form.getlist("channel") if isinstance(v, str)]
    if not name or len(name) > 200:
        e["name"] = "1 to 200 characters"
    execute_at: datetime | None = None
    try:
        execute_at = parse_time(
            _text(form, "execute_at").strip(), runtime.settings.tz, "Execute at"
        )
    except ClearanceError as exc:
        e["execute_at"] = exc.message
    duration = _int(_text(form, "duration_days") or "1", "duration_days", e, 1, 365) or 1
    lead = _int(_text(form, "clearance_lead"), "clearance_lead", e, 0, 7 * 86400)
    action_id = _int(_text(form, "action_id") or "1", "action_id", e, 1, 2**53) or 1
    codes = [c for c in re.split(r"[\s,]+", _text(form, "promo_codes")) if c]
    if any(len(c) > 200 for c in codes) or len(codes) > 10_000:
        e["promo_codes"] = "at most 10,000 codes of at most 200 characters"
    channels = channels_from(form, e)
    conditional = _text(form, "conditional") == "on"
    if data is not None and filename:
        d.target = parse_target_file(filename, data)
        if d.target.error_count:
            e["target_file"] = f"{d.target.error_count} invalid rows; nothing was saved"
    if execute_at is None or e:
        return d
    d.values["campaign"] = Campaign(
        campaign_id=0,
        name=name,
        execute_at=execute_at,
        duration_days=duration,
        conditional=conditional,
        action_id=action_id,
        action_name=name,
        promo_codes=codes,
        channels=channels,
        state=State.DRAFT,
        clearance_lead_seconds=lead,
    )
    return d


async def read_upload(form: FormData) -> tuple[bytes | None, str]:
    upload = form.get("target_file")
    if isinstance(upload, UploadFile) and upload.filename:
        return await upload.read(), upload.filename
    return None, ""


def preview_deadline(runtime: Runtime, form: FormData) -> dict[str, Any]:
    """What ClearanceRequiredBy the campaign would get, for the builder's live preview."""
    errors: dict[str, str] = {}
    try:
        execute_at = parse_time(
            _text(form, "execute_at").strip(), runtime.settings.tz, "Execute at"
        )
    except ClearanceError as exc:
        return {"error": exc.message}
    channels = channels_from(form, errors)
    lead = _int(_text(form, "clearance_lead"), "clearance_lead", errors, 0, 7 * 86400)
    if "clearance_lead" in errors:
        return {"error": "Clearance lead: " + errors["clearance_lead"]}
    probe = Campaign(0, "", execute_at, 1, True, 1, "", [], channels, State.DRAFT, lead)
    crb = deadline_for(runtime.store, probe, runtime.settings.default_clearance_lead_seconds)
    now = runtime.clock.now()
    text = crb.astimezone(runtime.settings.tz).strftime("%Y-%m-%d %H:%M:%S")
    return {
        "clearance_required_by": text,
        "zone": runtime.settings.timezone,
        "seconds_from_now": int((crb - now).total_seconds()),
        "past": crb <= now,
    }
