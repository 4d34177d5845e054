"""Cost of inline inspection in the shim's process: ``inspection_figures()``.

A fixed-seed mix of clean requests as an API sees them: GETs on templated
paths with 0-3 query arguments, a browser ``User-Agent``, a ``Referer``, a
session ``Cookie`` and an ``x-forwarded-for`` (plus the headers the inspector
skips); and POSTs with JSON bodies of 0.5-8 KB (nested objects, strings,
numbers, free text). Each request is timed ``repeat`` times and its median
kept; every timed call gets a fresh copy of the request (so nothing cached on
the request object carries over). ``us_per_request_p50`` is the median over
the GETs; ``us_per_kb`` is the median over the POSTs of (time - GET median) /
body KB.

Cases: the headline figures are **the shim's inspector with shipped defaults**:
the rule engines (paranoia 1) composed with request-schema validation
(``Inspectors``), each request then learned as the shim does for an allowed one
(``PropertySchemaValidator.learn``). ``waf_*`` are the rule engines alone.
``cold_*`` are the shim case with every memo emptied before each timed call
(engine verdicts, header names, property paths, privileged names): the cost of
values never seen before.

Run: ``.venv/bin/python -m deploy.lab.bench_inspection``.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

from enforcement import requestparts, schemacheck
from enforcement.decision import Inspector, RequestView
from enforcement.inspection import Inspectors, WafInspector
from enforcement.propertyschema import PropertySchemaValidator, SchemaValidationSettings, build_property_validator
from enforcement.settings import InspectionSettings
from enforcement.signatures import DEFAULT_RULES, load_signatures
from ingest import summarize

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
    """The GET and POST mix described in the module docstring (POST bodies 0.5-8 KB), each from one of 50 principals."""
    rng = random.Random(seed)
    gets = [_get(rng) for _ in range(n_get)]
    posts = [_post(rng, rng.choice((0.5, 1, 2, 4, 8))) for _ in range(n_post)]
    who = random.Random(seed + 1)  # signed-in users (schema validation learns a property once several send it)
    for req in gets + posts:
        req.principal = f"user-{who.randrange(50)}"
    return gets, posts


def _fresh(req: RequestView) -> RequestView:
    """A copy of ``req`` without the per-request caches a previous inspection left on it."""
    return RequestView(req.method, req.path, headers=req.headers, body=req.body, principal=req.principal)


def _clear_memos() -> None:
    """Empty the process-wide memos of the inspectors (for cold figures)."""
    for memo in (requestparts._WANTED, schemacheck._PRIVILEGED, schemacheck._KEYS, summarize._NORMAL):
        memo.clear()


def _median_us(run: Callable[[RequestView], object], req: RequestView, repeat: int, before: Callable[[], None] | None = None) -> float:
    times = []
    for _ in range(repeat):
        copy = _fresh(req)
        if before is not None:
            before()
        t0 = time.perf_counter_ns()
        run(copy)
        times.append(time.perf_counter_ns() - t0)
    return statistics.median(times) / 1000


def _figures(run: Callable[[RequestView], object], gets: list[RequestView], posts: list[RequestView], repeat: int,
             before: Callable[[], None] | None = None) -> tuple[float, float]:
    base = statistics.median(_median_us(run, r, repeat, before) for r in gets)
    per_kb = [(_median_us(run, r, repeat, before) - base) / (len(r.body or b"") / 1024) for r in posts]
    return round(base, 2), round(statistics.median(per_kb), 2)


def _shim(rules: Path) -> tuple[Inspector, PropertySchemaValidator, WafInspector]:
    """The shim's composition with shipped defaults (``enforcement.shim``): rule engines, then schema validation."""
    settings = InspectionSettings()
    waf = WafInspector(load_signatures(rules), settings)
    schema = build_property_validator(None, SchemaValidationSettings(), threshold=settings.threshold)
    return Inspectors(waf, schema), schema, waf


def inspection_figures(repeat: int = 51, n_get: int = 200, n_post: int = 40, rules: Path = DEFAULT_RULES) -> dict[str, float | int]:
    """``us_per_request_p50`` (clean GET, no body) and ``us_per_kb`` (JSON body) of the shim's inspector, ``waf_*`` and ``cold_*`` the same (module docstring)."""
    shim, schema, waf = _shim(rules)
    gets, posts = sample_requests(n_get, n_post)

    def inspect_and_learn(req: RequestView) -> object:
        found = shim.inspect(req)
        if found is None:
            schema.learn(req)
        return found

    flagged = sum(inspect_and_learn(_fresh(r)) is not None for r in gets + posts)
    per_request, per_kb = _figures(inspect_and_learn, gets, posts, repeat)
    waf_request, waf_kb = _figures(waf.inspect, gets, posts, repeat)

    def cold() -> None:
        waf._memo.clear()
        _clear_memos()

    cold_request, cold_kb = _figures(inspect_and_learn, gets, posts, max(5, repeat // 5), cold)
    crafted = [_crafted(seed) for seed in range(3)]
    crafted_ms = statistics.median(_median_us(inspect_and_learn, req, 1) for req in crafted) / 1000
    return {"us_per_request_p50": per_request, "us_per_kb": per_kb, "waf_us_per_request_p50": waf_request, "waf_us_per_kb": waf_kb,
            "cold_us_per_request_p50": cold_request, "cold_us_per_kb": cold_kb, "samples": len(gets) + len(posts), "flagged": flagged,
            "crafted_60kb_ms_p50": round(crafted_ms, 1), "crafted_samples": len(crafted)}


def _crafted(seed: int) -> RequestView:
    """A 60 KB JSON body of random punctuation-heavy words: text made to keep the RE2 set's DFA building states (the scan budget's case)."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:-_/()'\"<>=&%$"
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(3, 30))) for _ in range(5000)]
    text = " ".join(rng.choice(words) for _ in range(6000))[:60000]
    return RequestView("POST", "/api/notes", headers={"content-type": "application/json"}, body=json.dumps({"note": text}).encode(), principal="p0")


def main() -> None:
    """Print the figures as JSON."""
    print(json.dumps(inspection_figures()))


if __name__ == "__main__":
    main()
