"""The six easy attack kinds of ``attacks.py`` as named variants (``bola``, ``credential-stuffing``, ...).

Each run plans 2-3 attackers of the kind: start uniform after the warmup,
length uniform in [30, 90] s, rate uniform in the kind's ``ATTACK_RATES``; the
generators are ``attacks.py``'s own. Calls are relabelled with the variant's
name (``credential-stuffing``, not ``credential_stuffing``); attack ids are
``<variant>-<k>``. A lateral-movement workload is marked compromised from its
first probe, so its ordinary calls carry the attack id.
"""

from __future__ import annotations

from operator import attrgetter

from ingest.simulator.attacks import ATTACK_RATES, AttackPlan, attack_calls
from ingest.simulator.call import SimCall
from ingest.simulator.variants import Variant, VariantRun, register

__all__ = ["EASY"]

# variant name -> (attacks.py kind, attack class, OWASP id, description)
EASY: dict[str, tuple[str, str, str, str]] = {
    "bola": ("bola", "bola", "API1:2023", "a user walking order/invoice ids upward, ~20 calls/s for 30-90 s"),
    "exfiltration": ("exfiltration", "exfiltration", "API3:2023",
                     "a stolen JWT from ml/notebook paging profiles and exports, then uploads to a paste site"),
    "credential-stuffing": ("credential_stuffing", "credential_abuse", "API2:2023",
                            "one internet address replaying leaked credentials on /login, ~30 calls/s"),
    "injection": ("injection", "injection", "API8:2023", "a user probing with SQLi, traversal and template payloads"),
    "retired-api": ("retired_api", "retired_api", "API9:2023", "a client on retired routes that still answer"),
    "lateral-movement": ("lateral_movement", "lateral_movement", "API5:2023",
                         "a compromised workload probing services outside its dependency graph"),
}


def _easy(name: str, kind: str) -> Variant:
    def generate(run: VariantRun) -> list[SimCall]:
        plans = []
        for k in range(1, 2 + run.rng.randint(1, 2)):
            start, end = run.window(30.0, 90.0)
            plans.append(AttackPlan(kind, run.attack_id(k), start - run.t0, end - start,
                                    round(run.rng.uniform(*ATTACK_RATES[kind]), 2)))
        calls = [c for i in range(len(plans)) for c in attack_calls(plans, i, run.world, run.seed, run.t0, run.t1)]
        for call in sorted(calls, key=attrgetter("time")):
            call.scenario = name
            if call.malicious and call.principal is None and call.source_workload and kind == "lateral_movement":
                run.compromise(call.source_workload, call.attack_id or "", call.time)
        return calls

    _, attack_class, owasp, description = EASY[name]
    return Variant(name, attack_class, "attack", owasp, description, generate)


for _name, (_kind, *_rest) in EASY.items():
    register(_easy(_name, _kind))
