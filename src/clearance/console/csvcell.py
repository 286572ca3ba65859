"""CSV cells a spreadsheet will not run: text starting with = + - @ (or a tab or carriage return,
which some spreadsheets skip before looking) gets one quote in front, the OWASP advice. The
values themselves (customer ids, a gateway's reasons) come from files and gateways, not us."""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def row(values: list[object]) -> list[object]:
    return [cell(v) for v in values]
