"""The kit's rules fail closed: every rule type against missing, empty, odd and wrong-typed values.

A customer passes a rule only when the data positively says so; anything else is a refusal that
names the rule and the field (see the rules module docstring for the accepted spellings).
"""

from __future__ import annotations

import asyncio
import datetime
import math
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance.integrator import (
    CallableCustomers,
    CsvCustomers,
    GateDecision,
    GatewayApp,
    RuleError,
    Rules,
    rules_decide,
    rules_review,
)
from clearance.integrator.client import Customer
from clearance.integrator.rules import Rule
from tests.conftest import AsgiServer

MISSING = object()  # the field is absent from the record

# values no rule may accept, whatever its type
UNKNOWN: list[Any] = [MISSING, None, "", "   ", math.nan, math.inf, -math.inf]
ODD: list[Any] = ["Yes", "Y", "T", "x", 2, "on", "TRUE", " no ", True, [], {}, b"0", object()]

RULES: dict[str, dict[str, Any]] = {
    "min_deposit": {"name": "minimum deposit", "type": "min_deposit", "min": 20},
    "min_age": {"name": "adults", "type": "min_age", "min": 18},
    "status_in": {"name": "active accounts", "type": "status_in", "values": ["active"]},
    "country_allow": {"name": "licensed", "type": "country_allow", "values": ["UK", "IE"]},
    "country_deny": {"name": "blocked", "type": "country_deny", "values": ["MT"]},
    "not_self_excluded": {"name": "self-exclusion check", "type": "not_self_excluded"},
    "condition": {"name": "verified", "type": "condition", "expression": "kyc_level >= 2"},
}
FIELD = {
    "min_deposit": "deposit",
    "min_age": "age",
    "status_in": "status",
    "country_allow": "country",
    "country_deny": "country",
    "not_self_excluded": "self_excluded",
    "condition": "kyc_level",
}
GOOD: dict[str, list[Any]] = {
    "min_deposit": [20, 50, 20.0, 1e9],
    "min_age": [18, 30, 18.5],
    "status_in": ["active", " active ", "active\n"],
    "country_allow": ["UK", "IE", "uk", " ie ", "\u00a0UK", "\uff35\uff2b"],
    # a deny list refuses only what it lists (and what it cannot read): any other readable text
    # passes, so "Malta" is not caught by ["MT"]; prefer country_allow
    "country_deny": ["UK", "DE", "Malta", "Yes", "Y", "T", "x", "on", "TRUE", " no "],
    "not_self_excluded": [
        False,
        0,
        "false",
        "FALSE",
        "False",
        "f",
        "F",
        "no",
        "No",
        " no ",
        "n",
        "N",
        "0",
        " 0 ",
        "off",
        "OFF",
    ],
    "condition": [2, 3, 2.0, 2.5],
}
# values each type must refuse on top of UNKNOWN and ODD
BAD: dict[str, list[Any]] = {
    "min_deposit": [19, 19.99, -1, "50", "20", "abc", "1e9"],
    "min_age": [17, 0, -18, "30", "adult"],
    "status_in": ["closed", "Active", "ACTIVE", "act ive", 1, 0, ["active"], ("active",)],
    "country_allow": ["DE", "U K", "UK\u200b", "GB", 1, ["UK"], ("UK",), 0],
    "country_deny": [
        "MT",
        "mt",
        " mt ",
        "Mt",
        "\uff2d\uff34",
        "MT\u200b",
        "\u200bMT",
        1,
        ["MT"],
        0,
    ],
    "not_self_excluded": [
        True,
        1,
        "1",
        "yes",
        "YES",
        "y",
        "true",
        "t",
        "ON",
        "X",
        "excluded",
        "nein",
        "none",
        "null",
        "no!",
        "n o",
        "00",
        0.0,
        1.0,
        0.5,
        -1,
        ["no"],
        {"no": False},
    ],
    "condition": [1, 0, "2", "high", -math.inf],
}


def _cases() -> list[tuple[str, Any]]:
    out = []
    for kind in RULES:
        seen: list[Any] = []
        for value in [*UNKNOWN, *ODD, *BAD[kind]]:
            # a value this type rightly accepts (2 for `kyc_level >= 2`) is no refusal case
            if any(value is g or (type(value) is type(g) and value == g) for g in GOOD[kind]):
                continue
            if any(value is s or (type(value) is type(s) and value == s) for s in seen):
                continue
            seen.append(value)
            out.append((kind, value))
    return out


REFUSAL_CASES = _cases()
ACCEPT_CASES = [(kind, v) for kind, values in GOOD.items() for v in values]


def _one(kind: str) -> Rules:
    return Rules.from_dict({"rule": [RULES[kind]]})


def _record(kind: str, value: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"customer_id": "c1", "other": "unrelated"}
    if value is not MISSING:
        record[FIELD[kind]] = value
    return record


def _id(case: tuple[str, Any]) -> str:
    kind, value = case
    if value is MISSING:
        return f"{kind}-MISSING"
    return f"{kind}-{'object()' if type(value) is object else repr(value)[:20]}"


@pytest.mark.parametrize("case", REFUSAL_CASES, ids=[_id(c) for c in REFUSAL_CASES])
def test_every_rule_type_refuses_missing_and_odd_values_naming_rule_and_field(case):
    kind, value = case
    reason = _one(kind).check(_record(kind, value))
    assert reason is not None, f"{kind} let {value!r} through"
    assert reason.startswith(RULES[kind]["name"] + ": "), reason
    assert f"field {FIELD[kind]}" in reason, reason


@pytest.mark.parametrize("case", ACCEPT_CASES, ids=[_id(c) for c in ACCEPT_CASES])
def test_explicit_good_values_still_pass(case):
    kind, value = case
    assert _one(kind).check(_record(kind, value)) is None


def test_refusal_reasons_say_what_was_wrong():
    def why(kind: str, value: Any) -> str | None:
        return _one(kind).check(_record(kind, value))

    assert (
        why("not_self_excluded", MISSING) == "self-exclusion check: field self_excluded is missing"
    )
    assert why("not_self_excluded", None) == "self-exclusion check: field self_excluded is null"
    assert why("not_self_excluded", "") == "self-exclusion check: field self_excluded is empty"
    assert why("not_self_excluded", "Yes") == (
        "self-exclusion check: customer is self-excluded (field self_excluded is 'Yes')"
    )
    assert why("not_self_excluded", 2) == (
        "self-exclusion check: field self_excluded is 2, not an explicit no"
    )
    assert why("country_deny", MISSING) == "blocked: field country is missing"
    assert why("country_deny", " mt ") == "blocked: field country is ' mt ', which is denied"
    assert why("country_allow", 1) == "licensed: field country is not a readable country (1)"
    assert why("min_deposit", math.nan) == (
        "minimum deposit: field deposit is not a finite number (nan)"
    )
    assert why("min_deposit", True) == "minimum deposit: field deposit is not a number (True)"
    assert why("min_deposit", 5) == "minimum deposit: field deposit is 5, below the minimum 20"
    assert why("status_in", "closed") == "active accounts: field status is 'closed'"
    assert why("condition", MISSING) == "verified: field kyc_level is missing"
    long = why("status_in", "x" * 10_000)
    assert long is not None and len(long) < 120  # reasons are kept in reports: bounded


@pytest.mark.parametrize(
    "expression,record",
    [
        ("deposit / kyc_level > 1", {"deposit": 10, "kyc_level": 0}),  # ZeroDivisionError
        ("tags[0] == 'vip'", {"tags": []}),  # IndexError
        ("profile.tier == 'gold'", {"profile": {}}),  # KeyError
        ("a + b > 0", {"a": 2**62, "b": 2**62}),  # OverflowError
        ("int(code) > 1", {"code": "abc"}),  # RuntimeError
        ("when > 0", {"when": datetime.date(2020, 1, 1)}),  # CEL cannot convert the value
        ("kyc_level", {"kyc_level": 1}),  # not a bool
        ("kyc_level", {"kyc_level": "true"}),  # not a bool
        ("[true]", {}),
        ("self_excluded != true", {"self_excluded": None}),  # null != true is true in CEL
        ("self_excluded != true", {"self_excluded": ""}),  # an empty cell is unknown
        ("self_excluded != true", {}),
        ("!(deposit < 20.0)", {"deposit": math.nan}),
        ("deposit >= 20", {"deposit": math.inf}),
        ("vip == true || kyc_level >= 2", {"vip": True}),  # kyc_level missing: still refused
        ("vip == true || kyc_level >= 2", {"vip": True, "kyc_level": None}),
        ("country != 'MT'", {"country": "   "}),
    ],
)
def test_a_condition_that_errors_is_not_bool_or_names_an_unknown_field_refuses(expression, record):
    rules = Rules.from_dict(
        {"rule": [{"name": "cond", "type": "condition", "expression": expression}]}
    )
    reason = rules.check(record)
    assert reason is not None and reason.startswith("cond: "), reason


def test_a_condition_only_sees_the_fields_it_names_and_macro_variables_are_not_fields():
    def check(expression: str, record: dict[str, Any]) -> str | None:
        rule = {"name": "cond", "type": "condition", "expression": expression}
        return Rules.from_dict({"rule": [rule]}).check(record)

    # an unrelated column CEL cannot convert (a date from SQL) does not break the rule
    assert check("kyc_level >= 2", {"kyc_level": 2, "born": datetime.date(1990, 1, 1)}) is None
    assert check("tags.exists(t, t == 'vip')", {"tags": ["new", "vip"]}) is None
    assert check("tags.all(t, t != 'banned')", {"tags": ["new", "banned"]}) is not None
    assert (
        check("has(profile.tier) && profile.tier == 'gold'", {"profile": {"tier": "gold"}}) is None
    )
    assert (
        check("has(profile.tier)", {"profile": {}})
        == "cond: condition is not met; field profile is {}"
    )


def test_a_rule_that_raises_refuses_instead_of_escaping():
    rules = Rules([Rule("telepathy", "telepathy", "mind")])
    reason = rules.check({"mind": "open"})
    assert reason is not None and reason.startswith("telepathy: could not be evaluated")

    class Exploding(dict[str, Any]):
        def __contains__(self, key: object) -> bool:
            raise RuntimeError("database cursor closed")

    reason = _one("min_deposit").check(Exploding(deposit=50))
    assert (
        reason == "minimum deposit: could not be evaluated (RuntimeError: database cursor closed)"
    )


@pytest.mark.parametrize("record", [None, [], "c1", 42, [("deposit", 50)]])
def test_no_record_or_one_that_is_not_a_mapping_refuses(record):
    assert _one("min_deposit").check(record) is not None


@pytest.mark.parametrize(
    "data,message",
    [
        ({}, "no \\[\\[rule\\]\\] tables"),
        ({"rule": []}, "no \\[\\[rule\\]\\] tables"),
        ({"rules": [RULES["min_deposit"]]}, "unknown top-level keys \\['rules'\\]"),
        ({"rule": [RULES["min_deposit"]], "rulez": []}, "unknown top-level keys"),
        ({"rule": ["min_deposit"]}, "rule 1 is not a table"),
        ({"rule": [{**RULES["min_deposit"], "min": math.nan}]}, "finite number"),
        ({"rule": [{**RULES["min_deposit"], "min": math.inf}]}, "finite number"),
        ({"rule": [{**RULES["min_age"], "min": -math.inf}]}, "finite number"),
        ({"rule": [{**RULES["min_age"], "min": True}]}, "numeric 'min'"),
        ({"rule": [{**RULES["min_age"], "min": "18"}]}, "numeric 'min'"),
        ({"rule": [{**RULES["min_age"], "min": 10**400}]}, "numeric 'min'"),
        ({"rule": [{**RULES["country_deny"], "values": "MT"}]}, "non-empty 'values' list"),
        ({"rule": [{**RULES["country_allow"], "values": ["UK", ""]}]}, "country names"),
        ({"rule": [{**RULES["country_allow"], "values": ["UK", 44]}]}, "country names"),
        ({"rule": [{**RULES["status_in"], "values": [True]}]}, "strings or integers"),
        ({"rule": [{**RULES["status_in"], "values": [None]}]}, "strings or integers"),
        ({"rule": [{**RULES["not_self_excluded"], "field": ""}]}, "'field'"),
        ({"rule": [{**RULES["not_self_excluded"], "field": 3}]}, "'field'"),
        ({"rule": [{**RULES["min_deposit"], "feild": "recent_deposits"}]}, "unknown keys"),
        ({"rule": [{**RULES["min_age"], "minimum": 21}]}, "unknown keys"),
    ],
)
def test_rules_files_that_would_fail_open_do_not_load(data, message):
    with pytest.raises(RuleError, match=message):
        Rules.from_dict(data)


def test_a_rules_file_with_a_typo_in_its_tables_does_not_load(tmp_path: Path):
    path = tmp_path / "rules.toml"
    path.write_text('[[rules]]\nname = "self-exclusion"\ntype = "not_self_excluded"\n')
    with pytest.raises(RuleError, match=r"rules\.toml: unknown top-level keys"):
        Rules.from_toml(path)


def test_status_lists_may_hold_integer_codes():
    rules = Rules.from_dict({"rule": [{"type": "status_in", "values": [1, 2]}]})
    assert rules.check({"status": 1}) is None
    assert rules.check({"status": True}) is not None  # True == 1, but a flag is not a status code
    assert rules.check({"status": 1.0}) is not None
    assert rules.check({"status": "1"}) is not None


CSV = """customer_id,deposit,country,self_excluded
ok,50,UK,false
ok-spaced,50, uk , no
yes,50,UK,Yes
y,50,UK,Y
t,50,UK,T
x,50,UK,x
two,50,UK,2
on,50,UK,on
blank-flag,50,UK,
blank-country,50,,false
malta,50, mt ,no
nan-deposit,nan,UK,no
inf-deposit,inf,UK,no
"""
CSV_RULES = {
    "rule": [
        {"name": "minimum deposit", "type": "min_deposit", "min": 20},
        {"name": "blocked countries", "type": "country_deny", "values": ["MT"]},
        {"name": "self-exclusion", "type": "not_self_excluded"},
    ]
}


def test_listener_review_over_a_csv_approves_only_explicit_values(tmp_path: Path):
    path = tmp_path / "customers.csv"
    path.write_text(CSV)
    review = rules_review(Rules.from_dict(CSV_RULES), CsvCustomers(path))
    ids = [line.split(",")[0] for line in CSV.splitlines()[1:]] + ["not-in-the-file"]
    batch = [Customer(cid, 7, "P1") for cid in ids]
    decisions = {d.customer_id: d for d in asyncio.run(review(batch))}
    assert {cid for cid, d in decisions.items() if d.approved} == {"ok", "ok-spaced"}
    reasons = {cid: d.reason for cid, d in decisions.items() if not d.approved}
    assert reasons["not-in-the-file"] == "no customer data"
    assert reasons["blank-flag"] == "self-exclusion: field self_excluded is empty"
    assert reasons["blank-country"] == "blocked countries: field country is empty"
    assert reasons["malta"] == "blocked countries: field country is ' mt ', which is denied"
    assert reasons["nan-deposit"].startswith("minimum deposit: field deposit is not a finite")
    assert reasons["inf-deposit"].startswith("minimum deposit: field deposit is not a finite")
    for cid in ("yes", "y", "t", "x", "two", "on"):
        assert reasons[cid].startswith("self-exclusion: "), (cid, reasons[cid])


def test_gateway_over_real_http_refuses_missing_and_odd_customers():
    data = {
        "ok": {"deposit": 50, "country": "UK", "self_excluded": "no"},
        "yes": {"deposit": 50, "country": "UK", "self_excluded": "Yes"},
        "on": {"deposit": 50, "country": "UK", "self_excluded": "on"},
        "no-flag": {"deposit": 50, "country": "UK"},
        "no-country": {"deposit": 50, "self_excluded": False},
        "odd-record": ["deposit", 50],
    }
    rules = Rules.from_dict(CSV_RULES)
    gateway = GatewayApp(
        rules_decide(rules, CallableCustomers(lambda ids: {i: data[i] for i in ids if i in data}))
    )
    server = AsgiServer(gateway.app)
    try:
        allowed = {}
        for user in [*data, "not-in-the-data"]:
            body = {"user": {"user_id": user, "is_visitor": False}, "campaign": {"id": 1}}
            r = httpx.post(server.url + "/", json=body)
            assert r.status_code == 200
            allowed[user] = r.json()["allowed"]
        assert allowed == {
            "ok": True,
            "yes": False,
            "on": False,
            "no-flag": False,
            "no-country": False,
            "odd-record": False,
            "not-in-the-data": False,
        }
        assert httpx.get(server.url + "/stats").json() == {"allowed": 1, "denied": 6}
    finally:
        server.stop()


def test_an_empty_rule_set_approves_no_one():
    assert Rules([]).check({"deposit": 100}) == "no rules are configured: nothing is approved"


@pytest.mark.parametrize(
    "verdict",
    ["yes", 1, None, GateDecision("yes", ""), GateDecision(1, ""), GateDecision(True, "x")],  # type: ignore[arg-type]
)
def test_the_gateway_app_allows_only_on_a_real_true(verdict):
    async def decide(user, campaign):
        return verdict

    server = AsgiServer(GatewayApp(decide, budget_ms=500).app)
    try:
        body = {"user": {"user_id": "C-1", "is_visitor": False}, "campaign": {"id": "K"}}
        answer = httpx.post(server.url + "/", json=body, timeout=5).json()
        expected = isinstance(verdict, GateDecision) and verdict.allowed is True
        assert answer == {"user_id": "C-1", "allowed": expected}
    finally:
        server.stop()
