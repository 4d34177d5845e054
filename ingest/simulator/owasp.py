"""The OWASP API Security Top 10 (2023) variants traffic can reveal, registered with ``ingest.simulator.variants``.

Importing this module registers eleven attack variants (``OWASP_VARIANTS``),
whose generators live in ``owasp_flows`` (API4 resource consumption, API6
sensitive business flows, API7 SSRF, API8 misconfiguration, API9 inventory)
and ``owasp_objects`` (API3 object properties, API10 unsafe consumption,
honeytokens). BOLA, authentication, BFLA, exfiltration and lateral movement
are other modules' variants. Each variant's parameters are drawn per attacker
from ranges with the run's rng (``owasp_catalog.attackers``).
"""

from __future__ import annotations

from ingest.simulator.owasp_flows import (
    bulk_purchase,
    misconfiguration,
    resource_consumption,
    scraping,
    shadow_api,
    ssrf,
    zombie_api,
)
from ingest.simulator.owasp_objects import data_exposure, honeytoken, mass_assignment, unsafe_consumption
from ingest.simulator.variants import Variant, register

__all__ = ["OWASP_VARIANTS"]

OWASP_VARIANTS: tuple[Variant, ...] = tuple(register(v) for v in (
    Variant("scraping", "business_flow", "attack", "API6:2023",
            "a user or anonymous client walking catalog pages, product ids and search prefixes in order, 3-12 calls/s",
            scraping),
    Variant("bulk-purchase", "business_flow", "attack", "API6:2023",
            "one account ordering, reserving and checking out limited items 0.5-4 times/s, shipping to many addresses",
            bulk_purchase),
    Variant("resource-consumption", "resource_consumption", "attack", "API4:2023",
            "page sizes of 5,000-100,000, costly wildcard searches, 0.25-2 MB bodies, 15-60 calls/s", resource_consumption),
    Variant("ssrf", "ssrf", "attack", "API7:2023",
            "metadata, loopback, cluster, file:// and obfuscated URLs in a webhook, a URL import and an image proxy",
            ssrf),
    Variant("misconfiguration", "misconfiguration", "attack", "API8:2023",
            "a compromised pod, user or internet client probing /actuator, /debug/pprof, /.env... on 2-8 services",
            misconfiguration),
    Variant("shadow-api", "inventory", "attack", "API9:2023",
            "a user calling routes its services serve but declare in no spec, amid ordinary browsing", shadow_api),
    Variant("zombie-api", "inventory", "attack", "API9:2023",
            "an old client calling routes the specs declare deprecated, 0.1-1.5 calls/s amid ordinary browsing",
            zombie_api),
    Variant("unsafe-consumption", "unsafe_consumption", "attack", "API10:2023",
            "a service whose third-party feed answers carry SQLi/XSS/SSTI/redirects, passed on to internal APIs",
            unsafe_consumption),
    Variant("mass-assignment", "mass_assignment", "attack", "API3:2023",
            "signup, order, document, checkout and profile bodies setting role, is_admin, price, owner...",
            mass_assignment),
    Variant("excessive-data-exposure", "data_exposure", "attack", "API3:2023",
            "reads with ?expand=credentials / ?view=full... that make an endpoint return password hashes, tokens, SSNs",
            data_exposure),
    Variant("honeytoken", "honeytoken", "attack", "API2:2023",
            "1-8 uses of a planted API key, decoy account login or planted object id (deploy/runtime/honeytokens.yaml)",
            honeytoken),
))
