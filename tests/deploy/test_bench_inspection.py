"""The inspection cost benchmark: its request mix is clean and its figures cover the shim's composition."""

from __future__ import annotations

from deploy.lab.bench_inspection import _fresh, _shim, inspection_figures, sample_requests
from enforcement.signatures import DEFAULT_RULES


def test_the_mix_is_clean_for_the_shims_inspector_once_learned() -> None:
    shim, schema, _ = _shim(DEFAULT_RULES)
    gets, posts = sample_requests(n_get=40, n_post=8)
    for _ in range(4):  # several principals send each property: the endpoints learn them
        for req in gets + posts:
            copy = _fresh(req)
            if shim.inspect(copy) is None:
                schema.learn(copy)
    assert [r.path for r in gets + posts if shim.inspect(_fresh(r)) is not None] == []


def test_figures_name_the_shim_the_rule_engines_and_cold_memos() -> None:
    got = inspection_figures(repeat=3, n_get=6, n_post=2)
    keys = ("us_per_request_p50", "us_per_kb", "waf_us_per_request_p50", "waf_us_per_kb", "cold_us_per_request_p50", "cold_us_per_kb")
    assert all(got[k] > 0 for k in keys[::2]) and set(keys) <= set(got) and got["samples"] == 8
    assert got["crafted_samples"] == 3 and got["crafted_60kb_ms_p50"] > 0
