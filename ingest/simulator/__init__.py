"""Simulated cluster traffic: a seeded, labelled generator of east-west API calls.

``ClusterSimulator`` models a small shop running on Kubernetes: five
namespaces, eighteen services with an endpoint catalog, end users calling
through the gateway workload ``shop/frontend`` (JWT, one principal per user,
each user owning a few objects), service-to-service calls along a fixed
dependency graph (mTLS, no principal), the ``data/reporting`` batch job reading
pages of PII at a steady rate, support agents reading other users' objects,
partner webhooks from the internet, and ordinary errors (404, 5xx, mistyped
passwords). ``AttackPlan`` adds labelled attackers (``ATTACK_KINDS``); every
call carries its ground truth.

Everything is drawn from ``random.Random`` instances seeded from ``seed``, so a
simulator with the same arguments yields the same calls. The simulator is a
traffic *generator*: a ``SimCall`` is what to send plus the ground truth, and
its response fields are the simulator's model of the server, which no detector
may read. The only I/O is in ``write_jsonl`` and ``write_parquet``.

One concept per module:

* ``catalog``: services, endpoints, the dependency graph, end-user actions;
* ``world``: one run's mutable state (ownership, ids, pod ips, sessions);
* ``call``: ``SimCall`` and its conversion to summary rows;
* ``benign``: users, support agents, services, partners, the reporting job;
* ``attacks``: one generator per attack kind, ``AttackPlan``, ``plan_attacks``;
* ``variants``: named scenarios (``VARIANTS``, ``register``, ``variant_simulator``),
  defined in ``easy`` (the six kinds above), ``attacks_hard`` (low-and-slow and
  distributed BOLA, paged exfiltration, a compromised exporter, BFLA),
  ``credentials`` (slow rotating stuffing, brute force, spraying) and
  ``negatives`` (hard negatives);
* ``cluster``: ``ClusterSimulator``, the facade merging them in time order;
* ``writers``: JSON lines and Parquet files.
"""

from ingest.simulator.attacks import ATTACK_KINDS, AttackPlan, plan_attacks
from ingest.simulator.call import SERVER_MODEL_FIELDS, SimCall
from ingest.simulator.catalog import Endpoint, Service
from ingest.simulator.cluster import ClusterSimulator
from ingest.simulator.variants import VARIANTS, Variant, VariantRun, register, variant_simulator
from ingest.simulator.writers import write_jsonl, write_parquet

__all__ = [
    "ATTACK_KINDS",
    "SERVER_MODEL_FIELDS",
    "VARIANTS",
    "AttackPlan",
    "ClusterSimulator",
    "Endpoint",
    "Service",
    "SimCall",
    "Variant",
    "VariantRun",
    "plan_attacks",
    "register",
    "variant_simulator",
    "write_jsonl",
    "write_parquet",
]
