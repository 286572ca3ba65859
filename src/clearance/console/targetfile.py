"""A target group file (CSV with a `customer_id` column, or NDJSON of {customer_id, attributes}):
every row checked, the count and the first errors shown before anything is saved."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import orjson

from clearance.domain import check_customer_id
from clearance.errors import InvalidInput

MAX_ERRORS_SHOWN = 10


@dataclass
class TargetFile:
    rows: list[tuple[str, str | None]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    kind: str = ""

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_SHOWN:
            self.errors.append(text)

    @property
    def ok(self) -> bool:
        return self.error_count == 0 and bool(self.rows)

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "rows": len(self.rows),
            "error_count": self.error_count,
            "errors": self.errors,
        }


def _looks_ndjson(name: str, text: str) -> bool:
    lower = name.lower()
    if lower.endswith((".ndjson", ".jsonl", ".json")):
        return True
    if lower.endswith(".csv"):
        return False
    return text.lstrip().startswith("{")


def parse_target_file(name: str, data: bytes) -> TargetFile:
    out = TargetFile()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        out.error("the file is not UTF-8 text")
        return out
    seen: set[str] = set()

    def add(line: int, cid: Any, attributes: Any) -> None:
        try:
            customer = check_customer_id(cid, "customer_id")
        except InvalidInput as exc:
            out.error(f"line {line}: {exc}")
            return
        if not isinstance(attributes, dict):
            out.error(f"line {line}: attributes must be an object")
            return
        if customer in seen:
            out.error(f"line {line}: customer {customer} appears twice")
            return
        seen.add(customer)
        out.rows.append((customer, orjson.dumps(attributes).decode() if attributes else None))

    if _looks_ndjson(name, text):
        out.kind = "NDJSON"
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = orjson.loads(line)
            except orjson.JSONDecodeError:
                out.error(f"line {n}: not valid JSON")
                continue
            if not isinstance(item, dict):
                out.error(f"line {n}: not a JSON object")
                continue
            extra = set(item) - {"customer_id", "attributes"}
            if extra:
                out.error(f"line {n}: unknown fields {sorted(extra)}")
                continue
            add(n, item.get("customer_id"), item.get("attributes") or {})
    else:
        out.kind = "CSV"
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames or "customer_id" not in reader.fieldnames:
            out.error("line 1: the header needs a customer_id column")
            return out
        grouped = sorted({"send_at", "template_id"} & set(reader.fieldnames))
        if grouped:  # read as attributes, every customer would go at execute_at: refuse
            out.error(
                f"line 1: columns {grouped} (send groups) are not supported by the console's "
                "target file; upload it through the API (POST .../target-group)"
            )
            return out
        for n, row in enumerate(reader, start=2):
            if None in row:
                out.error(f"line {n}: more cells than the header has columns")
                continue
            if None in row.values():  # csv fills missing cells with None: refuse, never guess
                out.error(f"line {n}: fewer cells than the header has columns")
                continue
            cid = row.pop("customer_id")
            add(n, cid, {k: v for k, v in row.items() if k})
    if not out.rows and not out.error_count:
        out.error("the file has no customers")
    return out
