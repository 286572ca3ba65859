"""Compliance rules declared in a TOML file, evaluated against the operator's customer data.

    [[rule]]
    name = "minimum deposit"          # shown as the reason when this rule refuses
    type = "min_deposit"              # min_deposit · status_in · country_allow · country_deny ·
    field = "total_deposits"          #   min_age · not_self_excluded · condition
    min = 20

    [[rule]]
    name = "UK and IE only"
    type = "condition"                # any CEL expression over the customer's fields
    expression = 'country in ["UK", "IE"] && kyc_level >= 2'

Every rule must pass; the first that does not names itself as the refusal reason, and the field it
could not accept: `"self-exclusion: field self_excluded is missing"`.

Rules fail closed: a customer passes a rule only if the data positively says so. A field that is
missing, null (None), empty or blank, or that the rule cannot read, is a refusal, as is a customer
with no record at all (`"no customer data"`), a customer whose data conflicts (more than one
record: `"conflicting customer data: 2 records for C1"`) and a rule that raises. What each type
accepts:

- `min_deposit`, `min_age`: an int, float or Decimal (PostgreSQL NUMERIC), finite, at least `min`.
  Booleans, NaN, infinity (float or Decimal) and strings (even "50") are not numbers. (The CSV
  reader turns "50" into 50, and "nan" into NaN.)
- `status_in`: a string, trimmed of surrounding whitespace and then matched exactly (case
  included) against `values`; or an int (not a bool) equal to one of them.
- `country_allow`, `country_deny`: a non-empty printable string. Both the data and `values` are
  compared after Unicode NFKC normalisation, trimming and case folding, so " uk" is "UK". A deny
  list only catches the spellings it lists: prefer `country_allow`.
- `not_self_excluded`: passes only for an explicit no: False, the int 0, or a string that is,
  ignoring case and surrounding whitespace, one of "false", "f", "no", "n", "off", "0". Everything
  else refuses: True, 1, "yes", "y", "true", "t", "on", "x", 2, 0.5, an empty cell, None.
- `condition`: the CEL result must be exactly `true`. Every field the expression names must be
  present with a value (not null, blank, NaN or infinity, float or Decimal), even in a branch
  that would not be evaluated; names bound by macros such as `exists(x, …)` are exempt (type
  names used as values, as in `type(x) == string`, count as fields). An expression that errors or
  gives anything but a bool refuses. The expression itself can still fail open: CEL `!=` compares
  across types (`self_excluded != true` passes "Yes"), and `has(…) ? … : true` or `… || true`
  pass missing data. Prefer the typed rules.

Loading refuses (RuleError) a file without `[[rule]]` tables, with unknown keys (a misspelt
`feild` would silently check the default field), a `min` that is not a finite number, or `values`
that are not a list of non-empty strings (status codes may be integers).
"""

from __future__ import annotations

import math
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import cel

from clearance.integrator.customers import UnusableRecord

DEFAULT_FIELDS = {
    "min_deposit": "deposit",
    "status_in": "status",
    "country_allow": "country",
    "country_deny": "country",
    "min_age": "age",
    "not_self_excluded": "self_excluded",
}
NOT_EXCLUDED = frozenset({"false", "f", "no", "n", "off", "0"})
EXCLUDED = frozenset({"true", "t", "yes", "y", "on", "1"})
RULE_KEYS = frozenset({"name", "type", "field", "min", "values", "expression"})
# names that CEL comprehension macros and cel.bind bind inside an expression: not customer fields
_BOUND = re.compile(
    r"\b(?:all|exists|exists_one|existsOne|map|filter|transformList|transformMap|bind)\s*\(\s*"
    r"([A-Za-z_]\w*)\s*,(?:\s*([A-Za-z_]\w*)\s*,)?"
)
_SHOW = 60


def sample_rules_text() -> str:
    """The sample rules file that ships with the package (`sample_rules.toml`, the rules
    `clearance demo` runs with), as TOML text."""
    sample = resources.files("clearance.integrator").joinpath("sample_rules.toml")
    return sample.read_text(encoding="utf-8")


class RuleError(ValueError):
    """A rules file that cannot be used: says which rule and why."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW else text[: _SHOW - 1] + "…"


def _unknown(record: Mapping[str, Any], name: str) -> str | None:
    """Why the field has no usable value (missing, null, blank, NaN/inf), or None if it has one."""
    if name not in record:
        return "is missing"
    value = record[name]
    if value is None:
        return "is null"
    if isinstance(value, str) and not value.strip():
        return "is empty"
    if (isinstance(value, float) and not math.isfinite(value)) or (
        isinstance(value, Decimal) and not value.is_finite()
    ):
        return f"is not a finite number ({_show(value)})"
    return None


def _status_key(value: Any) -> str | int | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def _country_key(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = unicodedata.normalize("NFKC", value).strip().casefold()
    return text if text and text.isprintable() else None


@dataclass(frozen=True)
class Rule:
    name: str
    type: str
    field: str = ""
    min: float | None = None
    values: frozenset[Any] = frozenset()
    program: Any = None
    required: tuple[str, ...] = ()  # condition: fields that must be present with a value
    variables: tuple[str, ...] = ()  # condition: every name the expression references

    def check(self, record: Mapping[str, Any]) -> str | None:
        """None if the customer passes; otherwise why not."""
        if self.type == "condition":
            return self._condition(record)
        missing = _unknown(record, self.field)
        if missing is not None:
            return f"{self.name}: field {self.field} {missing}"
        value = record[self.field]
        if self.type in ("min_deposit", "min_age"):
            if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
                return f"{self.name}: field {self.field} is not a number ({_show(value)})"
            assert self.min is not None
            if value >= self.min:
                return None
            return (
                f"{self.name}: field {self.field} is {_show(value)}, below the minimum {self.min:g}"
            )
        if self.type == "status_in":
            key = _status_key(value)
            if key is None:
                return f"{self.name}: field {self.field} is not a readable status ({_show(value)})"
            if key in self.values:
                return None
            return f"{self.name}: field {self.field} is {_show(value)}"
        if self.type in ("country_allow", "country_deny"):
            country = _country_key(value)
            if country is None:
                return f"{self.name}: field {self.field} is not a readable country ({_show(value)})"
            if (country in self.values) == (self.type == "country_allow"):
                return None
            denied = ", which is denied" if self.type == "country_deny" else ""
            return f"{self.name}: field {self.field} is {_show(value)}{denied}"
        if self.type == "not_self_excluded":
            if value is False or (type(value) is int and value == 0):
                return None
            text = value.strip().casefold() if isinstance(value, str) else None
            if text in NOT_EXCLUDED:
                return None
            if value is True or (type(value) is int and value == 1) or text in EXCLUDED:
                return (
                    f"{self.name}: customer is self-excluded (field {self.field} is {_show(value)})"
                )
            return f"{self.name}: field {self.field} is {_show(value)}, not an explicit no"
        raise RuleError(f"unknown rule type {self.type!r}")

    def _condition(self, record: Mapping[str, Any]) -> str | None:
        for name in self.required:
            missing = _unknown(record, name)
            if missing is not None:
                return f"{self.name}: field {name} {missing}"
        # only the names the expression uses, and only those with a value: an unrelated column CEL
        # cannot convert does not break the rule, and an unknown value is an undefined variable
        context = {n: record[n] for n in self.variables if _unknown(record, n) is None}
        try:
            result = self.program.execute(context)
        except Exception as exc:
            detail = (str(exc).split(". ", 1)[0] or type(exc).__name__)[:120]
            return f"{self.name}: could not be evaluated ({detail}{self._given(context)})"
        if result is True:
            return None
        if result is False:
            return f"{self.name}: condition is not met{self._given(context)}"
        return (
            f"{self.name}: condition gave {_show(result)}, not true or false{self._given(context)}"
        )

    def _given(self, context: Mapping[str, Any]) -> str:
        """The fields the expression read, for the reason: "; field kyc_level is 1"."""
        shown = ", ".join(
            f"field {n} is {_show(v)}" for n, v in context.items() if n in self.required
        )
        if not shown:
            return ""
        return "; " + (shown if len(shown) <= 200 else shown[:199] + "…")


@dataclass
class Rules:
    rules: list[Rule] = field(default_factory=list)

    def check(self, record: Mapping[str, Any] | None) -> str | None:
        """None if every rule passes; otherwise the refusal reason (the first failing rule).
        Never raises: a rule that raises refuses, naming itself."""
        if not self.rules:  # an empty rule set is a mistake, not a licence to approve everyone
            return "no rules are configured: nothing is approved"
        if record is None:
            return "no customer data"
        if isinstance(record, UnusableRecord):  # e.g. two records for one customer
            return record.reason
        if not isinstance(record, dict) and not isinstance(record, Mapping):  # dict: fast path
            return f"customer data is not a record ({type(record).__name__})"
        for rule in self.rules:
            try:
                reason = rule.check(record)
            except Exception as exc:
                detail = str(exc)[:200]
                reason = f"{rule.name}: could not be evaluated ({type(exc).__name__}: {detail})"
            if reason is not None:
                return reason
        return None

    @classmethod
    def from_toml(cls, path: str | Path) -> Rules:
        with open(path, "rb") as fh:
            try:
                data = tomllib.load(fh)
            except tomllib.TOMLDecodeError as exc:
                raise RuleError(f"{path}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except RuleError as exc:
            raise RuleError(f"{path}: {exc}") from exc

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rules:
        unknown = sorted(set(data) - {"rule"})
        if unknown:
            raise RuleError(f"unknown top-level keys {unknown} (rules are [[rule]] tables)")
        raws = data.get("rule")
        if not isinstance(raws, list) or not raws:
            raise RuleError("no [[rule]] tables: a rules file must declare at least one rule")
        return cls([_parse(i, raw) for i, raw in enumerate(raws)])


def _parse(i: int, raw: Any) -> Rule:
    if not isinstance(raw, Mapping):
        raise RuleError(f"rule {i + 1} is not a table")
    kind = raw.get("type")
    name = str(raw.get("name") or f"rule {i + 1} ({kind})")
    unknown = sorted(set(raw) - RULE_KEYS)
    if unknown:
        raise RuleError(f"{name}: unknown keys {unknown} (a rule has {sorted(RULE_KEYS)})")
    if kind == "condition":
        expression = raw.get("expression")
        if not isinstance(expression, str):
            raise RuleError(f"{name}: a condition rule needs an expression")
        try:
            program = cel.compile(expression)
        except (ValueError, RuntimeError) as exc:
            raise RuleError(f"{name}: expression does not compile: {exc}") from exc
        variables = tuple(program.variables())
        bound = {n for m in _BOUND.finditer(expression) for n in m.groups() if n}
        required = tuple(v for v in variables if v not in bound)
        return Rule(name, kind, program=program, required=required, variables=variables)
    if kind not in DEFAULT_FIELDS:
        raise RuleError(f"{name}: unknown rule type {kind!r}")
    column = raw.get("field", DEFAULT_FIELDS[kind])
    if not isinstance(column, str) or not column:
        raise RuleError(f"{name}: 'field' must be a non-empty string")
    minimum: float | None = None
    if kind in ("min_deposit", "min_age"):
        raw_min = raw.get("min")
        try:
            if isinstance(raw_min, bool) or not isinstance(raw_min, (int, float)):
                raise ValueError
            minimum = float(raw_min)
            if not math.isfinite(minimum):
                raise ValueError
        except (ValueError, OverflowError):
            raise RuleError(f"{name}: needs a numeric 'min' (a finite number)") from None
    values: frozenset[Any] = frozenset()
    if kind in ("status_in", "country_allow", "country_deny"):
        listed = raw.get("values")
        if not isinstance(listed, list) or not listed:
            raise RuleError(f"{name}: needs a non-empty 'values' list")
        key = _status_key if kind == "status_in" else _country_key
        keys = [key(v) for v in listed]
        if any(k is None for k in keys):
            what = "strings or integers" if kind == "status_in" else "country names or codes"
            raise RuleError(f"{name}: 'values' must be non-empty {what}: {listed!r}")
        values = frozenset(keys)
    return Rule(name, kind, column, minimum, values)
