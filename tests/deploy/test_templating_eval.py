"""deploy.lab.templating_eval and deploy.lab.paramvalues: learned templates scored against declared specs."""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from deploy.lab.paramvalues import generic_value, values_for
from deploy.lab.templating_eval import add_cli, evaluate_spec, evaluate_templating, spec_requests
from ingest.openapi import ParamInfo, SpecIndex, parse_spec, structural

#: the ten public specs described in its README; tests that need them skip when it is absent
SPEC_DIR = Path(os.environ.get("OPENAPI_SPECS_DIR", "/work/shared/datasets/openapi-specs"))

# A small API of our own with the hard cases: word-valued names next to static siblings,
# nested parameters, ids with a .json suffix, a date as version, integers.
MINI: dict[str, Any] = {
    "openapi": "3.0.0",
    "servers": [{"url": "https://example.com/api"}],
    "paths": {
        "/v1/teams": {"get": {}},
        "/v1/teams/search": {"get": {}},
        "/v1/teams/{team}": {"get": {}, "delete": {}},
        "/v1/teams/{team}/members": {"get": {}},
        "/v1/teams/{team}/members/{user}": {"get": {}},
        "/v1/teams/{team}/members/{user}/roles": {"get": {}},
        "/v1/teams/{team}/projects/{project}": {"get": {}},
        "/v1/teams/{team}/projects/{project}/builds/{build}.json": {"get": {}},
        "/v1/teams/{team}/projects/{project}/builds.json": {"get": {}},
        "/v1/users/me": {"get": {}},
        "/v1/users/{user}": {"get": {}},
        "/2010-04-01/status": {"get": {}},
    },
    "components": {},
}
for _path, _item in MINI["paths"].items():
    _params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}} for n in re.findall(r"\{(\w+)\}", _path)]
    for _op in _item.values():
        _op["parameters"] = [dict(p, schema={"type": "integer"}) if p["name"] == "build" else p for p in _params]


def test_requests_cover_every_path_with_distinct_values_and_route_back() -> None:
    requests = spec_requests(MINI, random.Random(1), 5)
    assert len(requests) == 5 * len(MINI["paths"])
    index = SpecIndex(parse_spec(MINI))
    for req in requests:
        found = index.lookup(req.path)
        assert found is not None and structural(found.template) == req.truth == structural(req.declared)
    members = [r.path for r in requests if r.declared == "/api/v1/teams/{team}/members/{user}"]
    assert len(set(members)) == 5


def test_the_mini_api_is_recovered_and_beats_the_stateless_heuristic() -> None:
    result = evaluate_spec(MINI, seed=1, values_per_param=5)
    assert result["requests"] == 60 and result["paths"] == 12 and result["static"]["requests"] == 20
    assert result["exact"] >= 0.95, result["misses"]
    assert result["stateless_exact"] < 0.6  # word-valued team and user names defeat the stateless heuristic


def test_pooled_values_recur_across_paths() -> None:
    pooled = spec_requests(MINI, random.Random(1), 5, pooled=True)
    teams = {r.path.split("/")[4] for r in pooled if r.declared.startswith("/api/v1/teams/{team}")}
    assert len(teams) == 5


@pytest.mark.skipif(not SPEC_DIR.is_dir(), reason=f"{SPEC_DIR} (the public OpenAPI specs) is not on this machine")
def test_exact_recovery_on_four_real_specs(tmp_path: Path) -> None:
    """Floor 0.98, the project's target. On these four specs (toy petstore, Adyen with
    word-valued ids, Twilio with ``{Sid}.json`` and a date as version, Harbor with names,
    digests and integers; 349 paths, 1,745 requests) seeds 1-6 scored 0.9977-1.0 and the
    stateless heuristic 0.35-0.37, so the floor leaves about 30 requests of slack for
    generator noise while any loss of word-parameter learning fails by far."""
    for name in ("swagger-petstore.yaml", "adyen-management.json", "twilio-api-v2010.json", "harbor-api.yaml"):
        shutil.copy(SPEC_DIR / name, tmp_path / name)
    result = evaluate_templating(tmp_path, seed=2, values_per_param=5)
    assert set(result["by_spec"]) == {"swagger-petstore.yaml", "adyen-management.json", "twilio-api-v2010.json", "harbor-api.yaml"}
    assert result["requests"] == 5 * result["paths"] == 1745
    assert result["exact"] >= 0.98, {k: v["misses"] for k, v in result["by_spec"].items()}
    assert result["stateless_exact"] < 0.5


def test_cli_prints_the_table_and_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "mini.json").write_text(json.dumps(MINI))
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    out = tmp_path / "out.json"
    args = parser.parse_args(["eval-templates", str(specs), "--seeds", "1", "2", "--values-per-param", "4", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "mini.json" in printed and "ALL" in printed and "static paths" in printed
    results = json.loads(out.read_text())
    assert [r["seed"] for r in results] == [1, 2] and results[0]["requests"] == 48


# --- parameter values ----------------------------------------------------------------------


def gen(n: int = 8, **schema: Any) -> list[str]:
    return values_for(ParamInfo(name="p", location="path", **schema), random.Random(3), n)


def test_enum_values_come_from_the_enum_and_repeat_when_too_few() -> None:
    values = gen(5, enum=("png", "jpg"))
    assert set(values) == {"png", "jpg"} and len(values) == 5


def test_integers_respect_the_bounds() -> None:
    assert all(v.isdigit() for v in gen(type="integer"))
    assert all(10 <= int(v) <= 20 for v in gen(5, type="integer", minimum=10, maximum=20))


@pytest.mark.parametrize("pattern", [r"^AC[0-9a-fA-F]{32}$", r"^(SM|MM)[0-9a-fA-F]{32}$", r"(?i)^[0-9a-f]{8}-[0-9a-f]{4}-[1-5][0-9a-f]{3}$", r"^[a-z]+-\d{2,4}$"])
def test_pattern_values_match_the_pattern(pattern: str) -> None:
    values = gen(pattern=pattern)
    assert len(set(values)) == 8 and all(re.fullmatch(pattern, v) for v in values)


def test_formats() -> None:
    assert all(re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", v) for v in gen(format="uuid"))
    assert all("@" in v for v in gen(format="email"))
    assert all(v.isdigit() and len(v) >= 17 for v in gen(format="snowflake"))


@pytest.mark.parametrize(
    ("example", "shape"),
    [
        ("00ub0oNGTSWTBKOLGLNR", r"\d\d[a-z]{2}\d[a-z][A-Z]{14}"),
        ("enterprise_123456", r"enterprise_\d{6,9}"),
        ("f7a9891f", r"[0-9a-f]{8}"),
        ("00000000-0000-0000-0000-000000000000", r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"),
        ("xero-dev.jpg", r".+\.(jpg|png|pdf|txt|csv|docx)"),
    ],
)
def test_examples_give_values_of_the_same_shape(example: str, shape: str) -> None:
    values = gen(example=example)
    assert len(set(values)) == 8 and all(re.fullmatch(shape, v) for v in values), values


def test_generic_values_are_not_all_id_like() -> None:
    rng = random.Random(5)
    values = [generic_value(rng) for _ in range(400)]
    without_digits = sum(not any(c.isdigit() for c in v) for v in values)
    assert 0.25 <= without_digits / len(values) <= 0.75
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", v) for v in values)
