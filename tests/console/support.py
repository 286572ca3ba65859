"""The engine and the integrator kit for the browser tests, and signing in by clicking."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.acceptance.test_cli import KEY, Served
from tests.console.conftest import UvicornThread

USER, PASSWORD = "ops", "pa55word"
RULES = """
[[rule]]
name = "minimum deposit"
type = "min_deposit"
field = "deposit"
min = 20
"""


class Kit:
    """The integrator kit: its Listener (a slow reviewer: a page of 5 customers at a time, 0.3 s
    each, so approvals arrive over seconds) and its GatewayApp with the rules' decide."""

    def __init__(self, engine_url: str, tmp: Path, customers: dict[str, int]) -> None:
        from clearance.integrator import Client, GatewayApp, Listener
        from clearance.integrator.customers import CsvCustomers
        from clearance.integrator.promo import rules_decide, rules_review
        from clearance.integrator.rules import Rules

        data_path = tmp / "customers.csv"
        data_path.write_text(
            "customer_id,deposit\n" + "".join(f"{c},{d}\n" for c, d in customers.items())
        )
        rules_path = tmp / "rules.toml"
        rules_path.write_text(RULES)
        rules, data = Rules.from_toml(str(rules_path)), CsvCustomers(str(data_path))
        review = rules_review(rules, data)

        async def slow_review(page: list[Any]) -> Sequence[Any]:
            await asyncio.sleep(0.3)
            return await review(page)

        self.listener = Listener(Client(engine_url, api_key=KEY), slow_review, page_size=5)
        self.listener_server = UvicornThread(self.listener.app)
        self.gateway_server = UvicornThread(GatewayApp(rules_decide(rules, data)).app)
        self.listener_url = self.listener_server.url + "/"
        self.gateway_url = self.gateway_server.url + "/"

    def stop(self) -> None:
        self.listener_server.stop()
        self.gateway_server.stop()


def engine(tmp: Path) -> Served:
    return Served(f"sqlite:///{tmp / 'console.db'}", tmp)


def sign_in(page: Any, base: str, user: str = USER, password: str = PASSWORD) -> None:
    page.goto(base + "/")
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
