"""Credential-abuse variants: slow stuffing from rotating addresses, brute force, password spraying.

Every login names the attempted account (``principal`` of the call, posted as
``username`` by the driver; ``auth_type`` stays ``none``, no token is sent);
a failed attempt is modelled as 401 (the demo API answers 401 on
``identity/sso``, 200 with an error body on ``identity/auth``; each campaign
picks one of the two). Accounts are real users or names that exist nowhere
(leaked lists mix both). Attack ids: one per client address, the unit the
worker sees.
"""

from __future__ import annotations

from ingest.simulator.call import SimCall
from ingest.simulator.catalog import BY_KEY, Endpoint
from ingest.simulator.variants import Actor, Variant, VariantRun, register

__all__ = ["LOGINS"]

LOGINS = ("identity/auth POST /login", "identity/sso POST /login")
_FIRST = ("anna", "bob", "carla", "dave", "erin", "femi", "gus", "hana", "ivan", "jo", "kim", "luis", "mia", "nils")


def _login(run: VariantRun) -> Endpoint:
    return BY_KEY[run.rng.choice(LOGINS)]


def _account(run: VariantRun, real_share: float) -> str:
    """A real user's principal, or a leaked name that matches no account."""
    if run.rng.random() < real_share:
        users = run.world.principals
        return users[int(run.rng.random() * len(users))]
    return f"{run.rng.choice(_FIRST)}.{run.rng.randrange(100, 9999)}@mail.example.org"


def _distinct_accounts(run: VariantRun, n: int) -> list[str]:
    """``n`` distinct accounts, real users first (a sprayer's list of known user names), then made-up names."""
    users = run.world.principals
    real = run.rng.sample(users, min(n, int(0.97 * len(users))))
    made_up: set[str] = set()
    while len(made_up) < n - len(real):
        made_up.add(_account(run, 0.0))
    return real + sorted(made_up)


def _attempt(run: VariantRun, t: float, ip: str, ep: Endpoint, account: str, ok: bool, aid: str) -> SimCall:
    return run.emit(t, Actor(None, ip, None, "none"), ep, [], 200 if ok else 401, aid, True, principal=account)


def _stuffing(run: VariantRun) -> list[SimCall]:
    """Slow stuffing: one attempt every 3-20 s overall, the address changing every 2-6 attempts, each account once.

    Runs from just after the warmup to near the end; 60-90% of the accounts are
    real, 1-3% of the attempts on real accounts succeed.
    """
    ep, used, accounts = _login(run), set[str](), set[str]()
    real, hit = run.rng.uniform(0.6, 0.9), run.rng.uniform(0.01, 0.03)
    start, end = run.start + run.rng.uniform(0.0, 120.0), run.t1 - run.rng.uniform(1.0, 30.0)
    out: list[SimCall] = []
    k, left, ip = 0, 0, ""
    for t in run.ticks(run.rng.uniform(1 / 20, 1 / 3), start, end):
        if left == 0:
            k, left, ip = k + 1, run.rng.randint(2, 6), run.internet_ip(used)
        left -= 1
        account = _account(run, real)
        while account in accounts:
            account = _account(run, real)
        accounts.add(account)
        ok = account.startswith("user-") and run.rng.random() < hit
        out.append(_attempt(run, t, ip, ep, account, ok, run.attack_id(k)))
    return out


def _brute_force(run: VariantRun) -> list[SimCall]:
    """Many attempts on 1-3 real accounts from 2-8 addresses, 0.2-1.5 attempts/s for 3-10 min.

    A third of the campaigns guess one password right at their last attempt.
    """
    ep, used = _login(run), set[str]()
    ips = [run.internet_ip(used) for _ in range(run.rng.randint(2, 8))]
    targets = [_account(run, 1.0) for _ in range(run.rng.randint(1, 3))]
    start, end = run.window(180.0, 600.0)
    ticks = list(run.ticks(run.rng.uniform(0.2, 1.5), start, end))
    lucky = run.rng.random() < 1 / 3
    out = []
    for i, t in enumerate(ticks):
        s = int(run.rng.random() * len(ips))
        ok = lucky and i == len(ticks) - 1
        out.append(_attempt(run, t, ips[s], ep, targets[int(run.rng.random() * len(targets))], ok, run.attack_id(s + 1)))
    return out


def _spraying(run: VariantRun) -> list[SimCall]:
    """1-2 sources, each trying 1-2 common passwords on many real accounts, 0.1-1 attempts/s for 4-15 min.

    About 0.5% of the attempts succeed.
    """
    out: list[SimCall] = []
    used: set[str] = set()
    for k in range(1, 1 + run.rng.randint(1, 2)):
        ep, ip, tries = _login(run), run.internet_ip(used), run.rng.randint(1, 2)
        start, end = run.window(240.0, 900.0)
        ticks = list(run.ticks(run.rng.uniform(0.1, 1.0), start, end))
        accounts = _distinct_accounts(run, len(ticks) // tries + 1)
        for i, t in enumerate(ticks):
            account = accounts[i // tries]
            ok = account.startswith("user-") and run.rng.random() < 0.005
            out.append(_attempt(run, t, ip, ep, account, ok, run.attack_id(k)))
    return out


for _variant in (
    Variant("stuffing-slow-rotating", "credential_abuse", "attack", "API2:2023",
            "slow credential stuffing, the client address rotating every few attempts, many accounts", _stuffing),
    Variant("brute-force", "credential_abuse", "attack", "API2:2023",
            "many password attempts on one to three accounts from several addresses", _brute_force),
    Variant("password-spraying", "credential_abuse", "attack", "API2:2023",
            "one address trying one or two passwords on many accounts", _spraying),
):
    register(_variant)
