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

Every rule must pass; the first that does not names itself as the refusal reason.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import cel

DEFAULT_FIELDS = {
    "min_deposit": "deposit",
    "status_in": "status",
    "country_allow": "country",
    "country_deny": "country",
    "min_age": "age",
    "not_self_excluded": "self_excluded",
}


def sample_rules_text() -> str:
    """The sample rules file that ships with the package (`sample_rules.toml`, the rules
    `clearance demo` runs with), as TOML text."""
    sample = resources.files("clearance.integrator").joinpath("sample_rules.toml")
    return sample.read_text(encoding="utf-8")


class RuleError(ValueError):
    """A rules file that cannot be used: says which rule and why."""


@dataclass(frozen=True)
class Rule:
    name: str
    type: str
    field: str = ""
    min: float | None = None
    values: frozenset[Any] = frozenset()
    program: Any = None

    def check(self, record: Mapping[str, Any]) -> str | None:
        """None if the customer passes; otherwise why not."""
        if self.type == "condition":
            try:
                result = self.program.execute(dict(record))
            except (RuntimeError, TypeError, ValueError) as exc:
                return f"{self.name}: could not be evaluated ({exc})"
            return None if result is True else f"{self.name}: condition is not met"
        value = record.get(self.field)
        if self.type in ("min_deposit", "min_age"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"{self.name}: {self.field} is missing or not a number"
            assert self.min is not None
            return None if value >= self.min else f"{self.name}: {self.field} {value} < {self.min}"
        if self.type in ("status_in", "country_allow"):
            return None if value in self.values else f"{self.name}: {self.field} is {value!r}"
        if self.type == "country_deny":
            return f"{self.name}: {self.field} is {value!r}" if value in self.values else None
        if self.type == "not_self_excluded":
            return (
                f"{self.name}: customer is self-excluded"
                if value in (True, 1, "1", "yes")
                else None
            )
        raise RuleError(f"unknown rule type {self.type!r}")


@dataclass
class Rules:
    rules: list[Rule] = field(default_factory=list)

    def check(self, record: Mapping[str, Any] | None) -> str | None:
        """None if every rule passes; otherwise the refusal reason (the first failing rule)."""
        if record is None:
            return "no customer data"
        for rule in self.rules:
            reason = rule.check(record)
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
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rules:
        rules = []
        for i, raw in enumerate(data.get("rule", [])):
            kind = raw.get("type")
            name = raw.get("name") or f"rule {i + 1} ({kind})"
            if kind == "condition":
                expression = raw.get("expression")
                if not isinstance(expression, str):
                    raise RuleError(f"{name}: a condition rule needs an expression")
                try:
                    program = cel.compile(expression)
                except (ValueError, RuntimeError) as exc:
                    raise RuleError(f"{name}: expression does not compile: {exc}") from exc
                rules.append(Rule(name, kind, program=program))
                continue
            if kind not in DEFAULT_FIELDS:
                raise RuleError(f"{name}: unknown rule type {kind!r}")
            minimum = raw.get("min")
            if kind in ("min_deposit", "min_age") and not isinstance(minimum, (int, float)):
                raise RuleError(f"{name}: needs a numeric 'min'")
            values = raw.get("values", [])
            if kind in ("status_in", "country_allow", "country_deny") and not values:
                raise RuleError(f"{name}: needs a non-empty 'values' list")
            rules.append(
                Rule(
                    name,
                    kind,
                    raw.get("field", DEFAULT_FIELDS[kind]),
                    None if minimum is None else float(minimum),
                    frozenset(values),
                )
            )
        return cls(rules)
