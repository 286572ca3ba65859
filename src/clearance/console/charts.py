"""Charts drawn on the server as SVG: the outcome breakdown and the latency histogram with its
p50 / p95 / p99 (no JavaScript, no library). Autoescaped by the templates that embed them."""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import Markup, escape

COLOURS = {
    "allowed": "#2e7d32",
    "denied": "#c62828",
    "timeout": "#ef6c00",
    "error": "#6a1b9a",
    "invalid": "#ad1457",
    "no_gateway": "#546e7a",
    "circuit_open": "#4e342e",
    "not_conditional": "#1565c0",
}


def percentile(sorted_values: list[float], p: float) -> float | None:
    if not sorted_values:
        return None
    k = max(0, math.ceil(p / 100 * len(sorted_values)) - 1)
    return sorted_values[k]


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None


def percentiles(values: list[float]) -> Percentiles:
    s = sorted(values)
    return Percentiles(percentile(s, 50), percentile(s, 95), percentile(s, 99))


def outcome_bars(counts: dict[str, int], width: int = 520) -> Markup:
    total = sum(counts.values())
    rows = sorted(counts.items(), key=lambda kv: -kv[1])
    height = 26 * max(1, len(rows)) + 10
    parts = [
        f'<svg class="chart" role="img" aria-label="Outcome breakdown" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    if not rows:
        parts.append('<text x="4" y="20">no decisions</text>')
    for i, (outcome, n) in enumerate(rows):
        y = 6 + i * 26
        bar = 0 if total == 0 else max(2, int((width - 260) * n / total))
        colour = COLOURS.get(outcome, "#607d8b")
        label = escape(outcome)
        parts.append(
            f'<text x="0" y="{y + 15}">{label}</text>'
            f'<rect x="120" y="{y}" width="{bar}" height="20" fill="{colour}"/>'
            f'<text x="{126 + bar}" y="{y + 15}">{n} ({100 * n / total:.1f}%)</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def latency_histogram(values: list[float], width: int = 520, height: int = 200) -> Markup:
    p = percentiles(values)
    parts = [
        f'<svg class="chart" role="img" aria-label="Latency histogram" width="{width}" '
        f'height="{height + 40}" viewBox="0 0 {width} {height + 40}" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    if not values:
        parts.append('<text x="4" y="20">no decisions</text></svg>')
        return Markup("".join(parts))
    top = max(max(values), 1.0)
    bins = 40
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, int(v / top * bins))] += 1
    most = max(counts)
    bw = width / bins
    for i, n in enumerate(counts):
        h = 0 if most == 0 else int((height - 10) * n / most)
        parts.append(
            f'<rect x="{i * bw:.1f}" y="{height - h}" width="{bw - 1:.1f}" height="{h}" '
            'fill="#1565c0"/>'
        )
    for name, value, colour in (
        ("p50", p.p50, "#2e7d32"),
        ("p95", p.p95, "#ef6c00"),
        ("p99", p.p99, "#c62828"),
    ):
        if value is None:
            continue
        x = min(width - 1, value / top * width)
        parts.append(
            f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="{colour}" '
            f'stroke-width="2"/><text x="{min(x + 3, width - 90):.1f}" y="{height + 16}" '
            f'fill="{colour}">{name} {value:.1f} ms</text>'
        )
    parts.append(
        f'<text x="0" y="{height + 34}">0 ms</text>'
        f'<text x="{width - 70}" y="{height + 34}">{top:.0f} ms</text></svg>'
    )
    return Markup("".join(parts))
