"""Drill: hostile input against the real CLI on loopback.

1. Schemathesis over every native operation in the OpenAPI document (fetched with the admin key),
   a bounded number of examples per operation and a fixed seed (CLEARANCE_FUZZ_SEED to vary it):
   no 5xx, responses conform to their schemas.
2. A hand-written fuzz of the wire-format calls under /current/: malformed JSON, bodies over the
   limit, deep nesting, wrong types, unicode and control characters (NUL included) in ids, odd
   `$top`/`$skip`/`CampaignID` values. No 5xx, every refusal in the JSON error shape, nothing
   applied from a refused call, and the server's RSS bounded over a few thousand such requests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from bench.serveproc import ServeProcess

from tests.conftest import FakeGateway

ROOT = Path(__file__).resolve().parents[2]
BODY_LIMIT = 1024 * 1024  # the server under test refuses bodies over 1 MiB
RSS_BOUND_MIB = 32
ROUNDS = 12  # hand-written cases x rounds ~ a few thousand requests


def wire_time(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def seed_data(http: httpx.Client, gateway_url: str) -> None:
    """Something for the fuzzed ids to find: a draft and an awaiting campaign, a triggered one."""
    http.put(
        "/triggered_conditional_execution_gateway", json={"url": gateway_url, "timeout_ms": 500}
    ).raise_for_status()
    later = wire_time(datetime.now(UTC) + timedelta(days=3))
    for campaign_id, draft in ((1, True), (2, False)):
        http.post(
            "/api/v1/campaigns",
            json={
                "campaign_id": campaign_id,
                "name": f"fuzz {campaign_id}",
                "draft": draft,
                "execute_at": later,
                "conditional": True,
                "clearance_lead_seconds": 86400,
                "action": {"id": 1, "promo_codes": ["P1", "P2"]},
                "channels": [{"id": 504, "templates": [{"id": 7}]}],
                "target_group": [
                    {"customer_id": f"c-{i}", "attributes": {"Country": "UK"}} for i in range(50)
                ],
            },
        ).raise_for_status()
    http.post(
        "/api/v1/triggered-campaigns",
        json={
            "id": "T-1",
            "conditional": True,
            "action": {"id": 5, "channels": [{"id": 506}]},
            "trigger": {"event": "deposit", "condition": "amount >= 100"},
        },
    ).raise_for_status()


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[ServeProcess]:
    """PostgreSQL: the stricter store (NUL in text, 32-bit columns)."""
    gateway = FakeGateway()
    s = ServeProcess(postgres_url, tmp_path, CLEARANCE_MAX_BODY_BYTES=str(BODY_LIMIT))
    s.database_url = postgres_url  # type: ignore[attr-defined]
    try:
        with s.client() as http:
            seed_data(http, gateway.url)
        yield s
    finally:
        s.stop()
        gateway.stop()


def server_errors(served: ServeProcess) -> list[str]:
    return [line for line in served.log().splitlines() if "Traceback" in line or " ERROR " in line]


def test_schemathesis_finds_no_server_errors_on_the_native_api(
    served: ServeProcess, tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        # ids the fuzzer can hit, besides the ones it makes up
        "[dictionaries.ids]\n"
        'values = [1, 2, "T-1", 504]\n'
        "[parameters]\n"
        '"path.campaign_id" = { dictionary = "ids", probability = 0.5 }\n'
        '"path.channel_id" = { dictionary = "ids", probability = 0.3 }\n'
    )
    seed = os.environ.get("CLEARANCE_FUZZ_SEED", "20261127")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{served.url}/openapi.json",
            "--header",
            f"X-API-KEY: {served.key}",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            seed,
            "--workers",
            "2",
            "--request-timeout",
            "10",
        ],
        cwd=tmp_path,
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.drills.schemathesis_hooks",
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT / "src"), str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = r.stdout + r.stderr
    cases = re.search(r"(\d+) generated", out)
    operations = re.search(r"Tested: (\d+)", out)
    print(
        f"\nDRILL hostile-input/schemathesis: seed {seed}, "
        f"{operations.group(1) if operations else '?'} operations, "
        f"{cases.group(1) if cases else '?'} cases, exit {r.returncode}"
    )
    assert r.returncode == 0, out[-6000:]
    assert operations and int(operations.group(1)) >= 18, out[-3000:]
    assert not server_errors(served), served.log()[-4000:]


# --- hand-written fuzz of /current/ ------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    method: str
    path: str
    params: dict[str, str] | None = None
    content: bytes | None = None
    headers: dict[str, str] | None = None
    reject: bool = True  # must be refused with a 4xx (and apply nothing)
    chunked: bool = False  # send the body without a content-length


APPROVE = "/current/integrations/UpdateCustomerPromotionStatus"
REGISTER = "/current/general/RegisterEventListener"
ADD_PROMOS = "/current/integrations/AddPromotions"
PAGING = [
    "/current/customers/GetProcessedCampaignCustomers",
    "/current/customers/GetCanceledCampaignCustomers",
    "/current/customers/GetCustomerSendDetailsByCampaign",
]
ODD_NUMBERS = [
    "0", "-1", "-0", "--5", "1e3", "1.5", "abc", "", " ", "²", "١٢", "9" * 30, "99999999999999999",
    "5\x00", "0x10", "+7", "NaN", "∞",
]  # fmt: skip
HOSTILE_IDS: list[Any] = [
    "", "\x00", "a\x00b", "\x1b[31m", "\n", "\ud800", "🙂" * 10, "x" * 201, "x" * 100_000,
    "\u202eRTL", None, True, 1.5, [], {}, -1, 2**64, "\t", "c-1\n",
]  # fmt: skip


def dumps(value: Any) -> bytes:
    import json

    return json.dumps(value, ensure_ascii=False).encode("utf-8", "surrogatepass")


def valid_entries(n: int) -> list[dict[str, Any]]:
    return [{"CustomerID": f"c-{i}", "Status": True} for i in range(n)]


def customer_id_is_valid(value: Any) -> bool:
    """The documented rule: 1..200 characters, no control characters; numbers read as text."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    text = str(value)
    return 0 < len(text) <= 200 and not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)


def hostile_cases() -> list[Case]:
    cases: list[Case] = []
    malformed = [
        b"{",
        b'{"CampaignID": 2,',
        b"\xff\xfe\x00",
        b"nul\x00",
        b"[" * 50_000 + b"]" * 50_000,  # deep nesting, under the body limit
        b'{"a":' * 20_000 + b"1" + b"}" * 20_000,
        b'{"CampaignID": NaN}',
        b'{"CampaignID": 1e400}',
        b'{"CampaignID": Infinity}',
        b"\x00" * 1000,
        b"",
        b"null",
        b"[]",
        b'"str"',
        b'{"CampaignID": 2, "PromosUpdated": [{"CustomerID": "\\ud800"}]}',
    ]
    for path in (APPROVE, REGISTER, ADD_PROMOS, "/current/general/login"):
        # an empty array is a valid (empty) promotion list
        cases += [
            Case("POST", path, content=body, reject=not (path == ADD_PROMOS and body == b"[]"))
            for body in malformed
        ]
        over = b"{" + b" " * (BODY_LIMIT + 10) + b"}"
        cases.append(Case("POST", path, content=over))
        cases.append(Case("POST", path, content=over, chunked=True))
    # wrong types and odd values in every field of an approval; valid entries first, so a
    # partial write would show
    for bad in [*HOSTILE_IDS, *ODD_NUMBERS]:
        cases.append(Case("POST", APPROVE, content=dumps({"CampaignID": bad, "PromosUpdated": []})))
        cases.append(
            Case(
                "POST",
                APPROVE,
                content=dumps(
                    {
                        "CampaignID": 2,
                        "PromosUpdated": [*valid_entries(30), {"CustomerID": bad, "Status": True}],
                    }
                ),
                # an odd but valid id is simply not in the target group
                reject=not customer_id_is_valid(bad),
            )
        )
        cases.append(
            Case(
                "POST",
                APPROVE,
                content=dumps(
                    {
                        "CampaignID": 2,
                        "PromosUpdated": [*valid_entries(30), {"CustomerID": "c-1", "Status": bad}],
                    }
                ),
                reject=not isinstance(bad, bool),
            )
        )
    cases.append(
        Case(
            "POST",
            APPROVE,
            content=dumps({"CampaignID": 2, "PromosUpdated": valid_entries(10_001)}),
        )
    )
    for bad_list in ("x", 1, {"CustomerID": "c-1"}, [1, 2], [[]], None):
        cases.append(
            Case("POST", APPROVE, content=dumps({"CampaignID": 2, "PromosUpdated": bad_list}))
        )
    # listeners and promotions
    for bad in [*HOSTILE_IDS, "ftp://x", "http://", "javascript:alert(1)", "http://a\x00b/"]:
        cases.append(Case("POST", REGISTER, content=dumps({"EventTypeID": 5, "ListenerURL": bad})))
    for bad in [*HOSTILE_IDS[10:], *ODD_NUMBERS, 5 * 10**20, 2**31]:
        cases.append(
            Case(
                "POST",
                REGISTER,
                content=dumps(
                    {"EventTypeID": 13, "ChannelID": bad, "ListenerURL": "http://127.0.0.1:9/"}
                ),
                reject=bad not in ("", None),  # no ChannelID: every channel
            )
        )
        cases.append(
            Case(
                "POST",
                REGISTER,
                content=dumps({"EventTypeID": bad, "ListenerURL": "http://127.0.0.1:9/"}),
            )
        )
    for bad in HOSTILE_IDS:
        cases.append(
            Case(
                "POST",
                ADD_PROMOS,
                content=dumps(
                    [
                        {"PromoCode": "OK1", "PromotionName": "fine"},
                        {"PromoCode": bad, "PromotionName": "x"},
                    ]
                ),
                reject=not (isinstance(bad, str) and customer_id_is_valid(bad)),
            )
        )
    # paging: every odd number in $top, $skip and CampaignID
    for path in PAGING:
        for bad in ODD_NUMBERS:
            for name in ("$top", "$skip", "CampaignID"):
                params = {"CampaignID": "2", "$top": "10", "$skip": "0", name: bad}
                # an empty $top/$skip is the default; "-0" and a 17-digit $skip are just numbers
                fine = (name != "CampaignID" and bad == "") or (
                    name == "$skip" and bad in ("0", "-0", "99999999999999999")
                )
                cases.append(Case("GET", path, params=params, reject=not fine))
        for top in ("0", "-5", "100001", "9" * 19):
            cases.append(Case("GET", path, params={"CampaignID": "2", "$top": top}))
        cases.append(
            Case(
                "GET",
                path,
                params={"CampaignID": "2", "CustomerAttributes": "a;" * 5000, "$top": "5"},
                reject=False,
            )
        )
    cases.append(
        Case(
            "GET",
            PAGING[0],
            params={"CampaignID": "2", "CustomerAttributesDelimiter": "\x00"},
        )
    )
    # odd paths, methods and credentials
    for path in (
        "/current/%00/x",
        "/current/customers/GetProcessedCampaignCustomers%00",
        "/current/\uff43\uff55\uff53\uff54\uff4f\uff4d\uff45\uff52\uff53/x"  # fullwidth,
        "/current/" + "a" * 5000 + "/b",
        "/current/integrations",
    ):
        cases.append(Case("GET", path))
    cases.append(Case("DELETE", APPROVE))
    cases.append(Case("PUT", REGISTER, content=b"{}"))
    for token in ("", "x" * 10_000, "\xe9t\xe9", "' OR 1=1 --"):
        cases.append(
            Case("GET", PAGING[0], params={"CampaignID": "2"}, headers={"X-API-KEY": token})
        )
        cases.append(
            Case(
                "GET",
                PAGING[0],
                params={"CampaignID": "2"},
                headers={"X-API-KEY": "", "Authorization-Token": token},
            )
        )
    return cases


def counts(database_url: str) -> dict[str, int]:
    with psycopg.connect(database_url) as conn:
        return {
            table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # type: ignore[index]
            for table in ("approvals", "listeners", "promotions", "target_customers", "sessions")
        }


def send(http: httpx.Client, case: Case) -> httpx.Response:
    content: Any = case.content
    if case.chunked and content is not None:
        content = iter([content[i : i + 65536] for i in range(0, len(content), 65536)])
    if case.headers is None:
        return http.request(case.method, case.path, params=case.params, content=content)
    # these credentials instead of the client's key
    headers = {k: v.encode("latin-1") for k, v in case.headers.items() if v}
    with httpx.Client(base_url=http.base_url, timeout=http.timeout) as anon:
        return anon.request(
            case.method, case.path, params=case.params, content=content, headers=headers
        )


def test_wire_calls_survive_hostile_input(served: ServeProcess) -> None:
    cases = hostile_cases()
    database_url = served.database_url  # type: ignore[attr-defined]
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    with served.client(timeout=30) as http:

        def round_() -> None:
            for case in cases:
                before = counts(database_url) if case.reject and case.method == "POST" else None
                r = send(http, case)
                statuses[r.status_code] += 1
                raw = case.content or b""
                label = (
                    f"{case.method} {case.path[:60]} {case.params} {case.headers} "
                    f"{raw[:60]!r}..{raw[-60:]!r}"
                )
                if r.status_code >= 500:
                    failures.append(f"{r.status_code} for {label}: {r.text[:200]}")
                elif case.reject and not 400 <= r.status_code < 500:
                    failures.append(f"{r.status_code} (not a refusal) for {label}")
                if r.status_code >= 400:
                    body = r.json()
                    if body.get("status") != r.status_code or not body.get("message"):
                        failures.append(f"error shape {body} for {label}")
                if before is not None and counts(database_url) != before:
                    failures.append(f"refused call changed the store: {label}")

        round_()  # warm-up: caches, pools, first-use allocations
        rss_before = served.rss_bytes()
        for _ in range(ROUNDS - 1):
            sample = [
                c
                for c in cases
                if c.method == "GET" or c.content is None or len(c.content) < BODY_LIMIT // 2
            ]
            for case in sample:  # the bulk rounds skip the per-call counts (speed)
                r = send(http, case)
                statuses[r.status_code] += 1
                if r.status_code >= 500:
                    failures.append(f"{r.status_code} for {case.method} {case.path[:60]}")
        rss_after = served.rss_bytes()
        # and the server still works
        ok = http.post(APPROVE, json={"CampaignID": 2, "PromosUpdated": valid_entries(3)})
        assert ok.status_code == 200, ok.text

    total = sum(statuses.values())
    growth = (rss_after - rss_before) / 2**20
    print(
        f"\nDRILL hostile-input/wire: {len(cases)} cases, {total} requests, statuses "
        f"{dict(sorted(statuses.items()))}; RSS {rss_before / 2**20:.1f} -> "
        f"{rss_after / 2**20:.1f} MiB (+{growth:.1f}, bound {RSS_BOUND_MIB}); "
        f"{len(failures)} failures"
    )
    assert not failures, "\n".join(sorted(set(failures))[:40])
    assert growth <= RSS_BOUND_MIB
    assert not server_errors(served), served.log()[-4000:]
