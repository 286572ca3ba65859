"""`clearance integrator serve`: listener and gateway from a rules file and customer data, no code.

One ASGI app: the listener at /listener, the gateway at /gateway. With `register`, it registers
the listener for EventTypeID 5 and sets itself as the triggered gateway on the engine at start.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Mount

from clearance.integrator.client import Client
from clearance.integrator.customers import CsvCustomers, CustomerData
from clearance.integrator.gateway import GatewayApp
from clearance.integrator.listener import Listener
from clearance.integrator.promo import Activate, rules_decide, rules_review
from clearance.integrator.rules import Rules
from clearance.integrator.verify import check_secrets

log = logging.getLogger("clearance.integrator")


@dataclass
class KitConfig:
    engine_url: str
    api_key: str
    rules: Rules
    customers: CustomerData
    secret: str | None = None
    timezone: str = "UTC"
    gateway_budget_ms: int = 1500
    engine_gateway_timeout_ms: int = 2000
    public_url: str | None = None  # where the engine reaches this service, for `register`
    register: bool = False

    def __post_init__(self) -> None:
        if self.secret:  # refuse a malformed or short secret before anything is served
            check_secrets(self.secret, "secret (--secret)")


def build(
    config: KitConfig, activate: Activate | None = None
) -> tuple[Starlette, Listener, GatewayApp]:
    client = Client(config.engine_url, api_key=config.api_key)
    listener = Listener(
        client,
        rules_review(config.rules, config.customers, activate),
        secret=config.secret,
        timezone=config.timezone,
    )
    # the gateway is registered with the engine with this secret, so it demands the signature too
    gateway = GatewayApp(
        rules_decide(config.rules, config.customers),
        budget_ms=config.gateway_budget_ms,
        secret=config.secret,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if config.register and config.public_url:
            base = config.public_url.rstrip("/")
            await client.register_listener(5, f"{base}/listener/")
            await client.set_gateway(
                f"{base}/gateway/", config.engine_gateway_timeout_ms, config.secret
            )
            log.info(
                "registered %s/listener/ for EventTypeID 5 and %s/gateway/ as gateway", base, base
            )
        yield
        await client.close()

    app = Starlette(
        routes=[Mount("/listener", listener.app), Mount("/gateway", gateway.app)], lifespan=lifespan
    )
    return app, listener, gateway


def from_files(
    engine_url: str, api_key: str, rules_path: str, customers_path: str, **kw: Any
) -> KitConfig:
    return KitConfig(
        engine_url, api_key, Rules.from_toml(rules_path), CsvCustomers(customers_path), **kw
    )
