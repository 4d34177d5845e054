"""Cost of inline inspection in the shim's process: ``inspection_figures()``.

A fixed-seed mix of clean requests as an API sees them: GETs on templated
paths with 0-3 query arguments, a browser ``User-Agent``, a ``Referer``, a
session ``Cookie`` and an ``x-forwarded-for`` (plus the headers the inspector
skips); and POSTs with JSON bodies of 0.5-8 KB (nested objects, strings,
numbers, free text). Each request is inspected ``repeat`` times by the
shipped rule pack at the default settings (paranoia 1) and its median time
kept. ``us_per_request_p50`` is the median over the GETs; ``us_per_kb`` is the
median over the POSTs of (time - GET median) / body KB.

Run: ``.venv/bin/python -m deploy.lab.bench_inspection``.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from enforcement.decision import RequestView
from enforcement.inspection import WafInspector
from enforcement.settings import InspectionSettings
from enforcement.signatures import DEFAULT_RULES, load_signatures

__all__ = ["inspection_figures", "sample_requests"]

_UA = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
       "okhttp/4.12.0", "python-requests/2.32.3", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15")
_PATHS = ("/api/v1/orders/{n}", "/api/v1/users/{n}/addresses", "/search", "/catalog/items/{n}", "/v2/carts/{n}/lines")
_ARGS = (("page", "{n}"), ("sort", "created_at"), ("q", "blue+running+shoes"), ("limit", "50"), ("lang", "en-US"),
         ("email", "jane.doe%40example.org"), ("from", "2024-03-01T00%3A00%3A00Z"))
_WORDS = "order shipping address blue green small large gift card delivery tomorrow please leave at the door thanks".split()


def _headers(rng: random.Random) -> dict[str, str]:
    return {
        "user-agent": rng.choice(_UA), "referer": f"https://shop.example.com/catalog?page={rng.randrange(9)}",
        "cookie": f"session={rng.getrandbits(96):x}; theme=dark; consent=1", "x-forwarded-for": f"203.0.113.{rng.randrange(255)}",
        "x-request-id": f"{rng.getrandbits(64):x}", "authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig",
    }  # fmt: skip


def _get(rng: random.Random) -> RequestView:
    path = rng.choice(_PATHS).format(n=rng.randrange(1, 10**6))
    args = rng.sample(_ARGS, rng.randrange(4))
    query = "&".join(f"{k}={v.format(n=rng.randrange(1, 99))}" for k, v in args)
    return RequestView("GET", f"{path}?{query}" if query else path, headers=_headers(rng))


def _record(rng: random.Random, i: int) -> dict[str, Any]:
    return {"id": i, "sku": f"SKU-{rng.randrange(10**6):06d}", "qty": rng.randrange(1, 5), "price": round(rng.uniform(1, 300), 2),
            "note": " ".join(rng.choices(_WORDS, k=rng.randrange(3, 12))), "tags": rng.sample(_WORDS, 3),
            "shipping": {"name": "Jane Doe", "city": "Lyon", "zip": f"{rng.randrange(10**5):05d}", "express": rng.random() < 0.3}}


def _post(rng: random.Random, kb: float) -> RequestView:
    items: list[dict[str, Any]] = []
    body = b""
    while len(body) < kb * 1024:
        items.append(_record(rng, len(items)))
        body = json.dumps({"customer": rng.randrange(10**6), "items": items}).encode()
    headers = {**_headers(rng), "content-type": "application/json"}
    return RequestView("POST", f"/api/v1/orders?cart={rng.randrange(999)}", headers=headers, body=body)


def sample_requests(n_get: int = 200, n_post: int = 40, seed: int = 7) -> tuple[list[RequestView], list[RequestView]]:
    """The GET and POST mix described in the module docstring (POST bodies 0.5-8 KB)."""
    rng = random.Random(seed)
    gets = [_get(rng) for _ in range(n_get)]
    posts = [_post(rng, rng.choice((0.5, 1, 2, 4, 8))) for _ in range(n_post)]
    return gets, posts


def _median_us(inspect: Any, req: RequestView, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter_ns()
        inspect(req)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def inspection_figures(repeat: int = 51, n_get: int = 200, n_post: int = 40, rules: Path = DEFAULT_RULES) -> dict[str, float | int]:
    """``us_per_request_p50`` (clean GET, no body), ``us_per_kb`` (JSON body) and ``samples`` (requests timed)."""
    inspector = WafInspector(load_signatures(rules), InspectionSettings())
    gets, posts = sample_requests(n_get, n_post)
    flagged = sum(inspector.inspect(r) is not None for r in gets + posts)
    base = statistics.median(_median_us(inspector.inspect, r, repeat) for r in gets)
    per_kb = [(_median_us(inspector.inspect, r, repeat) - base) / (len(r.body or b"") / 1024) for r in posts]
    return {"us_per_request_p50": round(base, 2), "us_per_kb": round(statistics.median(per_kb), 2),
            "samples": len(gets) + len(posts), "flagged": flagged}


def main() -> None:
    """Print the figures as JSON."""
    print(json.dumps(inspection_figures()))


if __name__ == "__main__":
    main()
