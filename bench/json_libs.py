"""JSON libraries on the engine's hot payloads (issue 13: measure before choosing).

    .venv/bin/python -m bench.json_libs [--repeat N]

Times, in one process and interleaved, what each library costs the engine for: decoding a
10,000-entry `UpdateCustomerPromotionStatus` body, encoding a 10,000-row
`GetProcessedCampaignCustomers` page as a list of objects, and decoding a batch of 100 events.
Ids are random strings of 8-16 characters. The standard library's `json` and `orjson` (the
engine's) always run; `msgspec` runs when it is importable (it is not a dependency: install it
somewhere on PYTHONPATH for the comparison). Prints the best of `--repeat` per library and
payload, and the load average.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import string
import time
from collections.abc import Callable
from typing import Any


def payloads(seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    ids = [
        "".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(8, 16)))
        for _ in range(10_000)
    ]
    approvals = {
        "CampaignID": 1001,
        "PromosUpdated": [{"CustomerID": c, "Status": rng.random() < 0.7} for c in ids],
    }
    page = [{"CustomerID": c, "ActionID": 7, "PromoCode": "P1"} for c in ids]
    events = {
        "events": [
            {
                "event_id": f"ev-{i}",
                "event": "deposit",
                "customer_id": ids[i],
                "context": {"deposit_amount": rng.randint(1, 500), "currency": "EUR"},
            }
            for i in range(100)
        ]
    }
    return {"approvals": approvals, "page": page, "events": events}


def libraries() -> dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]]:
    out: dict[str, tuple[Callable[[Any], bytes], Callable[[bytes], Any]]] = {
        "json (stdlib)": (lambda o: json.dumps(o).encode(), json.loads),
    }
    orjson = importlib.import_module("orjson")
    out["orjson"] = (orjson.dumps, orjson.loads)
    try:
        msgspec_json = importlib.import_module("msgspec.json")
        encoder, decoder = msgspec_json.Encoder(), msgspec_json.Decoder()
        out["msgspec"] = (encoder.encode, decoder.decode)
    except ImportError:
        print("msgspec: not importable, skipped")
    return out


def best(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args()
    data = payloads()
    libs = libraries()
    bodies = {name: json.dumps(obj).encode() for name, obj in data.items()}
    jobs = {
        "decode a 10,000-entry approval body": lambda lib: lambda: lib[1](bodies["approvals"]),
        "encode a 10,000-row page": lambda lib: lambda: lib[0](data["page"]),
        "decode a batch of 100 events": lambda lib: lambda: lib[1](bodies["events"]),
    }
    one, five, _ = os.getloadavg()
    print(f"best of {args.repeat}, interleaved; load average {one:.2f}/{five:.2f}")
    print(f"{'payload':<40}" + "".join(f"{name:>16}" for name in libs))
    for label, job in jobs.items():
        results = {name: float("inf") for name in libs}
        for _ in range(5):  # interleaved rounds, so a busy moment hits every library alike
            for name, lib in libs.items():
                results[name] = min(results[name], best(job(lib), max(1, args.repeat // 5)))
        print(f"{label:<40}" + "".join(f"{results[n] * 1e3:>13.3f} ms" for n in libs))
    one, five, _ = os.getloadavg()
    print(f"load average at the end {one:.2f}/{five:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
