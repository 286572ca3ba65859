from pathlib import Path

import pytest

from clearance.integrator.customers import CsvCustomers, coerce
from clearance.integrator.rules import RuleError, Rules

RULES = """
[[rule]]
name = "minimum deposit"
type = "min_deposit"
field = "deposit"
min = 20

[[rule]]
name = "active accounts only"
type = "status_in"
values = ["active"]

[[rule]]
name = "allowed countries"
type = "country_allow"
values = ["UK", "IE", "MT"]

[[rule]]
name = "blocked countries"
type = "country_deny"
values = ["MT"]

[[rule]]
name = "adults"
type = "min_age"
min = 18

[[rule]]
name = "self-exclusion"
type = "not_self_excluded"

[[rule]]
name = "verified"
type = "condition"
expression = "kyc_level >= 2"
"""

OK = {
    "deposit": 50,
    "status": "active",
    "country": "UK",
    "age": 30,
    "self_excluded": False,
    "kyc_level": 2,
}


@pytest.fixture
def rules(tmp_path: Path) -> Rules:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return Rules.from_toml(path)


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"deposit": 5}, "minimum deposit"),
        ({"deposit": None}, "minimum deposit"),
        ({"status": "closed"}, "active accounts only"),
        ({"country": "DE"}, "allowed countries"),
        ({"country": "MT"}, "blocked countries"),
        ({"age": 17}, "adults"),
        ({"self_excluded": True}, "self-exclusion"),
        ({"kyc_level": 1}, "verified"),
        ({"kyc_level": "high"}, "verified"),
    ],
)
def test_each_refusal_names_its_rule(rules, change, reason):
    assert rules.check(OK) is None
    refused = rules.check({**OK, **change})
    assert refused is not None and refused.startswith(reason)


def test_no_data_is_a_refusal(rules):
    assert rules.check(None) == "no customer data"


@pytest.mark.parametrize(
    "text,message",
    [
        ('[[rule]]\ntype = "min_deposit"\n', "numeric 'min'"),
        ('[[rule]]\ntype = "status_in"\n', "values"),
        ('[[rule]]\ntype = "telepathy"\n', "unknown rule type"),
        ('[[rule]]\ntype = "condition"\nexpression = "a >= "\n', "does not compile"),
        ("[[rule]\n", "rules.toml"),
    ],
)
def test_bad_rules_files_say_what_is_wrong(tmp_path, text, message):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(RuleError, match=message):
        Rules.from_toml(path)


def test_csv_customers_are_typed_and_reloaded(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("customer_id,deposit,self_excluded,country\nA,25,false,UK\nB,7.5,true,IE\n")
    data = CsvCustomers(path)
    assert data.lookup(["A", "Z"]) == {
        "A": {"customer_id": "A", "deposit": 25, "self_excluded": False, "country": "UK"}
    }
    import os
    import time

    path.write_text("customer_id,deposit\nA,99\n")
    os.utime(path, (time.time() + 5, time.time() + 5))
    assert data.lookup(["A"])["A"]["deposit"] == 99
    assert coerce("007") == 7 and coerce("x1") == "x1"
