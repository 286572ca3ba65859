"""API keys and the audit trail (admin key): create (the key is shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from clearance.api.auth import KeyCache
from clearance.api.deps import Admin, RuntimeDep


class KeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    type: Literal["admin", "integrations"]
    name: Annotated[str, Field(max_length=200)] = ""
    rate_limit_per_second: Annotated[float, Field(gt=0, le=1_000_000)] | None = Field(
        None, description="this key's own limit; default: the server's setting"
    )


def admin_router() -> APIRouter:
    r = APIRouter(prefix="/api/v1")

    @r.post("/keys", status_code=201)
    def create_key(body: KeyIn, runtime: RuntimeDep, who: Admin) -> dict[str, Any]:
        """The reply is the only time the key is shown: only a salted hash of it is kept."""
        key_id, key = runtime.store.create_api_key(
            body.type, body.name, runtime.now_ms(), rate_limit_per_second=body.rate_limit_per_second
        )
        runtime.audit(who.name, "key.create", key_id, type=body.type, name=body.name)
        return {"key_id": key_id, "key": key, "type": body.type, "name": body.name}

    @r.get("/keys")
    def list_keys(runtime: RuntimeDep, who: Admin) -> list[dict[str, Any]]:
        return runtime.store.list_api_keys()

    @r.delete("/keys/{key_id}")
    def revoke_key(
        key_id: str, request: Request, runtime: RuntimeDep, who: Admin
    ) -> dict[str, Any]:
        """Revoked at once in this process; other API processes stop accepting the key within
        CLEARANCE_KEY_CACHE_SECONDS."""
        runtime.store.revoke_api_key(key_id, runtime.now_ms())
        cache: KeyCache = request.app.state.key_cache
        cache.forget(key_id)
        runtime.audit(who.name, "key.revoke", key_id)
        return {"revoked": key_id}

    @r.get("/audit")
    def audit(
        runtime: RuntimeDep,
        who: Admin,
        after: Annotated[int, Query(ge=0)] = 0,
        target: Annotated[str | None, Query(max_length=300)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> dict[str, Any]:
        """Who changed campaigns, channels, listeners, the gateway, triggered campaigns,
        promotions and keys, oldest first; page with `after` = the last `audit_id`."""
        rows = runtime.store.audit_page(after, limit, target)
        return {"entries": rows, "next_after": rows[-1]["audit_id"] if len(rows) == limit else None}

    return r
