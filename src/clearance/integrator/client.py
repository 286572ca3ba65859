"""An async client for the wire-format calls of Conditional Execution.

Works against the clearance engine and any server that speaks the same wire format: only the
base URL and the key change. Every call has a timeout; retries happen only on failures that are
safe to repeat (connection errors, 429, 502/503/504; approvals are idempotent), always inside an
overall deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from clearance.integrator.errors import (
    ApiError,
    AuthError,
    ClearanceDeadlinePassed,
    TransportError,
)
from clearance.integrator.verify import check_secrets

MAX_APPROVALS_PER_CALL = 10_000
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass(frozen=True)
class Customer:
    customer_id: str
    action_id: int
    promo_code: str
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class ApprovalSummary:
    applied: int = 0
    not_in_target_group: list[str] = field(default_factory=list)

    def add(self, other: ApprovalSummary) -> None:
        self.applied += other.applied
        self.not_in_target_group.extend(other.not_in_target_group)


class Client:
    """`async with Client(base_url, api_key=...) as client:` (or username/password for the legacy
    login token)."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
        deadline: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not api_key and not (username and password):
            raise ValueError("give api_key, or username and password")
        self.api_key = api_key
        self.username, self.password = username, password
        self.deadline = deadline
        self._token: str | None = None
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
        )

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    # --- plumbing --------------------------------------------------------------------------------
    async def _headers(self) -> dict[str, str]:
        if self.api_key:
            return {"X-API-KEY": self.api_key}
        if self._token is None:
            await self.login()
        assert self._token is not None
        return {"Authorization-Token": self._token}

    async def login(self) -> None:
        response = await self._http.post(
            "/current/general/login",
            content=orjson.dumps({"Username": self.username, "Password": self.password}),
            headers={"content-type": "application/json"},
        )
        if response.status_code != 200:
            raise _error("general/login", response)
        self._token = response.json()

    async def _call(
        self,
        method: str,
        call: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        deadline: float | None = None,
        idempotent: bool = True,
    ) -> Any:
        end = time.monotonic() + (self.deadline if deadline is None else deadline)
        attempt = 0
        content = None if body is None else orjson.dumps(body)
        while True:
            attempt += 1
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise TransportError(f"{call}: no success before the deadline")
            try:
                response = await self._http.request(
                    method,
                    f"/current/{call}",
                    params=params,
                    content=content,
                    headers={**await self._headers(), "content-type": "application/json"},
                    timeout=min(self._http.timeout.read or remaining, remaining),
                )
            except httpx.TimeoutException as exc:
                if not idempotent:
                    raise TransportError(f"{call}: timed out: {exc}") from exc
                error: Exception = exc
            except httpx.TransportError as exc:
                error = exc
            else:
                if response.status_code == 403 and self._token and "expired" in response.text:
                    self._token = None  # legacy token expired: log in again and retry
                    continue
                if response.status_code not in RETRY_STATUSES:
                    if response.status_code >= 400:
                        raise _error(call, response)
                    return response.json() if response.content else None
                error = ApiError(call, response.status_code, response.text[:200])
            pause = min(2.0, 0.1 * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            if time.monotonic() + pause >= end:
                raise TransportError(f"{call}: gave up before the deadline: {error}") from error
            await asyncio.sleep(pause)

    # --- listeners -------------------------------------------------------------------------------
    async def register_listener(
        self, event_type_id: int, url: str, channel_id: int | None = None
    ) -> None:
        body: dict[str, Any] = {"EventTypeID": event_type_id, "ListenerURL": url}
        if channel_id is not None:
            body["ChannelID"] = channel_id
        await self._call("POST", "general/RegisterEventListener", body=body)

    async def unregister_listener(self, event_type_id: int, channel_id: int | None = None) -> None:
        body: dict[str, Any] = {"EventTypeID": event_type_id}
        if channel_id is not None:
            body["ChannelID"] = channel_id
        await self._call("POST", "general/UnregisterEventListener", body=body)

    async def listeners(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call(
            "GET", "general/GetRegisteredEventListeners"
        )
        return result

    # --- customers and approvals -----------------------------------------------------------------
    async def iter_customer_pages(
        self, campaign_id: int, *, page_size: int = 10_000, attributes: Sequence[str] = ()
    ) -> AsyncIterator[list[Customer]]:
        """The campaign's processed customers a page at a time; only one page is held."""
        skip = 0
        while True:
            params: dict[str, Any] = {"CampaignID": campaign_id, "$top": page_size, "$skip": skip}
            if attributes:
                params["CustomerAttributes"] = ";".join(attributes)
                params["CustomerAttributesDelimiter"] = ";"
            rows = await self._call("GET", "customers/GetProcessedCampaignCustomers", params=params)
            if not rows:
                return
            yield [
                Customer(
                    r["CustomerID"],
                    r.get("ActionID", 0),
                    r.get("PromoCode", ""),
                    dict(zip(attributes, r.get("CustomerAttributes") or (), strict=False)),
                )
                for r in rows
            ]
            if len(rows) < page_size:
                return
            skip += len(rows)

    async def iter_customers(self, campaign_id: int, **kw: Any) -> AsyncIterator[Customer]:
        async for page in self.iter_customer_pages(campaign_id, **kw):
            for customer in page:
                yield customer

    async def approve(
        self,
        campaign_id: int,
        decisions: Iterable[tuple[str, bool]],
        *,
        concurrency: int = 2,
        deadline: float | None = None,
    ) -> ApprovalSummary:
        """Send approvals (True) and refusals/revocations (False) in calls of 10,000, at most
        `concurrency` at once. Repeating is safe: the engine applies them idempotently."""
        chunks: list[list[dict[str, Any]]] = []
        chunk: list[dict[str, Any]] = []
        for customer_id, status in decisions:
            chunk.append({"CustomerID": customer_id, "Status": bool(status)})
            if len(chunk) == MAX_APPROVALS_PER_CALL:
                chunks.append(chunk)
                chunk = []
        if chunk:
            chunks.append(chunk)
        summary = ApprovalSummary()
        gate = asyncio.Semaphore(max(1, concurrency))

        async def send(part: list[dict[str, Any]]) -> None:
            async with gate:
                reply = await self._call(
                    "POST",
                    "integrations/UpdateCustomerPromotionStatus",
                    body={"CampaignID": campaign_id, "PromosUpdated": part},
                    deadline=deadline,
                )
            summary.add(
                ApprovalSummary(
                    int((reply or {}).get("Applied", len(part))),
                    list((reply or {}).get("NotInTargetGroup", [])),
                )
            )

        await asyncio.gather(*(send(c) for c in chunks))
        return summary

    async def canceled_customers(self, campaign_id: int) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self._call(
            "GET", "customers/GetCanceledCampaignCustomers", params={"CampaignID": campaign_id}
        )
        return result

    # --- the triggered gateway -------------------------------------------------------------------
    async def set_gateway(
        self, url: str, timeout_ms: int = 2000, secret: str | None = None
    ) -> dict[str, Any]:
        """Set the triggered gateway. `secret` may hold two secrets separated by a space while one
        is rotated ("new old", as the listener and gateway take it): the first is sent as
        `secret`, the second as `previous_secret`, and the engine signs with both."""
        body: dict[str, Any] = {"url": url, "timeout_ms": timeout_ms}
        if secret:
            parts = check_secrets(secret)
            body["secret"] = parts[0]
            if len(parts) > 1:
                body["previous_secret"] = parts[1]
        response = await self._http.put(
            "/triggered_conditional_execution_gateway",
            content=orjson.dumps(body),
            headers={**await self._headers(), "content-type": "application/json"},
        )
        if response.status_code != 200:
            raise _error("triggered_conditional_execution_gateway", response)
        result: dict[str, Any] = response.json()
        return result


def _error(call: str, response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = {}
    message = body.get("message") if isinstance(body, dict) else None
    message = message or response.text[:300] or response.reason_phrase
    field_name = body.get("field") if isinstance(body, dict) else None
    if response.status_code in (401, 403):
        return AuthError(call, response.status_code, message, field_name)
    if response.status_code == 409 and isinstance(body, dict) and "ClearanceRequiredBy" in body:
        return ClearanceDeadlinePassed(
            call, 409, message, field_name, body.get("ClearanceRequiredBy")
        )
    return ApiError(call, response.status_code, message, field_name)
