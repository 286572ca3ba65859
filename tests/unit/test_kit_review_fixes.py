"""Review fixes in the integrator kit: conflicting customer data, secrets the engine would refuse,
Decimal values (PostgreSQL NUMERIC) and non-finite timestamps all fail closed."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from decimal import Decimal

import pytest

from clearance.clock import FakeClock
from clearance.integrator import CsvCustomers, Rules, SqlCustomers, rules_review, verify
from clearance.integrator.client import Customer
from clearance.integrator.service import KitConfig
from clearance.integrator.verify import Rejected, Verifier

SELF_EXCLUSION = Rules.from_dict(
    {"rule": [{"name": "self-exclusion", "type": "not_self_excluded"}]}
)
GOOD = "whsec_" + base64.b64encode(b"k" * 32).decode()


def _decide(rules, data, customer_id="C1"):
    review = rules_review(rules, data)
    [decision] = asyncio.run(review([Customer(customer_id, 1, "P")]))
    return decision


# --- B: several records for one customer, repeated columns, short rows ---------------------------


def test_csv_customer_on_two_rows_is_refused_as_conflicting(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("customer_id,self_excluded\nC1,true\nC1,false\nC2,false\n")
    data = CsvCustomers(path)
    decision = _decide(SELF_EXCLUSION, data)
    assert not decision.approved
    assert decision.reason == "conflicting customer data: 2 records for C1"
    assert _decide(SELF_EXCLUSION, data, "C2").approved


def test_csv_header_with_a_repeated_column_does_not_load(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("customer_id,self_excluded,self_excluded\nC1,true,false\n")
    with pytest.raises(ValueError, match="repeats column names \\['self_excluded'\\]"):
        CsvCustomers(path).lookup(["C1"])


def test_csv_row_with_too_few_cells_loads_and_refuses_for_the_missing_field(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("customer_id,deposit,self_excluded\nC1,50\nC2,50,false\n")
    data = CsvCustomers(path)
    assert data.lookup(["C1"])["C1"] == {"customer_id": "C1", "deposit": 50}
    decision = _decide(SELF_EXCLUSION, data)
    assert not decision.approved and decision.reason == (
        "self-exclusion: field self_excluded is missing"
    )
    assert _decide(SELF_EXCLUSION, data, "C2").approved


def test_csv_row_with_too_many_cells_is_refused(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("customer_id,name,self_excluded\nC1,Smith, John,false\n")
    decision = _decide(SELF_EXCLUSION, CsvCustomers(path))
    assert not decision.approved and "more cells than the header" in decision.reason


def _sqlite(tmp_path):
    db = tmp_path / "c.db"
    conn = sqlite3.connect(db)
    conn.executescript(
        """
        create table customers(customer_id text);
        insert into customers values ('C1'), ('C2');
        create table exclusions(customer_id text, brand text, self_excluded int);
        insert into exclusions values ('C1','sports',0),('C1','casino',1),('C2','sports',0);
        """
    )
    conn.commit()
    conn.close()
    return f"sqlite:///{db}"


def test_sql_customer_with_two_rows_is_refused_as_conflicting(tmp_path):
    data = SqlCustomers(
        _sqlite(tmp_path),
        "select c.customer_id, e.self_excluded from customers c join exclusions e "
        "using (customer_id) order by e.self_excluded desc",
    )
    decision = _decide(SELF_EXCLUSION, data)
    assert not decision.approved
    assert decision.reason == "conflicting customer data: 2 records for C1"
    assert _decide(SELF_EXCLUSION, data, "C2").approved


def test_sql_query_with_a_repeated_column_refuses_everyone(tmp_path):
    data = SqlCustomers(
        _sqlite(tmp_path),
        "select customer_id, 1 as self_excluded, 0 as self_excluded from customers",
    )
    decision = _decide(SELF_EXCLUSION, data, "C2")
    assert not decision.approved and "repeats column names" in decision.reason


# --- C: secrets validated as the engine validates them -------------------------------------------


@pytest.mark.parametrize(
    "bad", ["whsec_", "whsec_!!!!", "whsec_AAAA", f"{GOOD} whsec_AAAA", f"{GOOD} {GOOD} {GOOD}"]
)
def test_kit_refuses_a_secret_the_engine_would_refuse(bad):
    with pytest.raises(ValueError, match="secret") as refused:
        Verifier(bad, FakeClock())
    assert "AAAA" not in str(refused.value) and "!!!!" not in str(refused.value)
    with pytest.raises(ValueError, match="--secret"):
        KitConfig("http://e", "k", SELF_EXCLUSION, CsvCustomers("x.csv"), secret=bad)


def test_kit_accepts_engine_secrets_with_or_without_prefix_and_two_while_rotating():
    bare = base64.b64encode(b"o" * 24).decode()
    assert verify.check_secrets(f"{GOOD} {bare}") == [GOOD, bare]
    Verifier(f"{GOOD} {bare}", FakeClock())


@pytest.mark.parametrize("stamp", ["nan", "inf", "-inf"])
def test_non_finite_timestamp_is_rejected_not_a_crash(stamp):
    v = Verifier(GOOD, FakeClock())
    headers = {"webhook-id": "m", "webhook-timestamp": stamp, "webhook-signature": "v1,AAAA"}
    with pytest.raises(Rejected) as rejected:
        v.verify(b"{}", headers)
    assert rejected.value.status == 400


# --- D: Decimal -----------------------------------------------------------------------------------


def test_min_deposit_and_min_age_accept_finite_decimals():
    rules = Rules.from_dict(
        {"rule": [{"type": "min_deposit", "min": 20}, {"type": "min_age", "min": 18}]}
    )
    assert rules.check({"deposit": Decimal("50.00"), "age": Decimal("30")}) is None
    assert rules.check({"deposit": Decimal("19.9999999999999999999"), "age": 30}) is not None


@pytest.mark.parametrize("bad", ["NaN", "sNaN", "Infinity", "-Infinity"])
def test_decimal_nan_and_infinity_refuse_in_every_rule_type(bad):
    value = Decimal(bad)
    typed = Rules.from_dict({"rule": [{"type": "min_deposit", "min": 20}]})
    assert "not a finite number" in (typed.check({"deposit": value}) or "")
    cond = Rules.from_dict({"rule": [{"type": "condition", "expression": "deposit >= 20"}]})
    assert "not a finite number" in (cond.check({"deposit": value}) or "")


def test_a_review_that_raises_marks_the_report_failed_not_running(tmp_path):
    from clearance.integrator import Listener

    path = tmp_path / "c.csv"
    path.write_text("customer_id,x,x\nC1,1,2\n")  # will not load

    class Pages:
        async def iter_customer_pages(self, campaign_id, **kw):
            yield [Customer("C1", 1, "P")]

        async def approve(self, *a, **kw):  # pragma: no cover - never reached
            raise AssertionError("nothing may be approved")

        async def close(self):
            pass

    listener = Listener(Pages(), rules_review(SELF_EXCLUSION, CsvCustomers(path)))
    asyncio.run(listener.review_campaign(7, "2999-01-01 00:00:00"))
    report = listener.reports[7]
    assert report.state == "failed" and report.approved == 0
    assert "repeats column names" in report.errors[0]
