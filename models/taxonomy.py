"""Where each attack class Kubeward reports sits in the public taxonomies SOC tools filter on.

Contract: ``mapping_for(attack_class, rule_id)`` gives a ``Mapping``: the OWASP API
Security Top 10 2023 ids, the OWASP Top 10 for LLM Applications 2025 ids, the
MITRE ATT&CK (enterprise) technique ids and the MITRE ATLAS technique ids that
describe a finding of that class (a rule may refine its class: the credential
rules name the kind of brute force). ``inline_mapping(category)`` does the same
for the categories the shim reports inline (``RequestSummary.inline_findings``).
``technique(uid)`` resolves an ATT&CK or ATLAS id to its name, tactic and parent.
Every id a mapping names is declared once in the tables below with its name
(``tests/models/test_taxonomy.py`` checks that, and that every attack class,
every shipped rule and every inline category has an entry: a new class without
one fails CI). A class no taxonomy describes (``anomaly``: a model's score names
no attack) has an empty mapping and a ``note`` saying why. ``finding_attacks`` and
``finding_tags`` render a mapping as the OCSF parts of a finding (ATT&CK and ATLAS
in ``finding_info.attacks``; OWASP in ``finding_info.tags``, which OCSF 1.5 has for
such labels). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest.schema import FindingAttack, FindingEntity, FindingTag

__all__ = [
    "ATLAS_TACTICS", "ATLAS_TECHNIQUES", "ATLAS_VERSION", "ATTACK_TACTICS", "ATTACK_TECHNIQUES", "ATTACK_VERSION", "CLASSES",
    "INLINE", "OWASP_API_2023", "OWASP_LLM_2025", "OWASP_TAGS", "RULES", "Mapping", "Technique", "finding_attacks", "finding_tags",
    "inline_mapping", "mapping_for", "technique",
]

#: the matrix releases the ids and names below were written against (stable ids; names checked on upgrade)
ATTACK_VERSION = "v16"
ATLAS_VERSION = "v5"
#: ``finding_info.tags`` names of the OWASP lists (each tag's value: ``<id> <name>``)
OWASP_TAGS = ("owasp_api_2023", "owasp_llm_2025")

OWASP_API_2023 = {
    "API1:2023": "Broken Object Level Authorization",
    "API2:2023": "Broken Authentication",
    "API3:2023": "Broken Object Property Level Authorization",
    "API4:2023": "Unrestricted Resource Consumption",
    "API5:2023": "Broken Function Level Authorization",
    "API6:2023": "Unrestricted Access to Sensitive Business Flows",
    "API7:2023": "Server Side Request Forgery",
    "API8:2023": "Security Misconfiguration",
    "API9:2023": "Improper Inventory Management",
    "API10:2023": "Unsafe Consumption of APIs",
}

OWASP_LLM_2025 = {
    "LLM01:2025": "Prompt Injection",
    "LLM02:2025": "Sensitive Information Disclosure",
    "LLM03:2025": "Supply Chain",
    "LLM04:2025": "Data and Model Poisoning",
    "LLM05:2025": "Improper Output Handling",
    "LLM06:2025": "Excessive Agency",
    "LLM07:2025": "System Prompt Leakage",
    "LLM08:2025": "Vector and Embedding Weaknesses",
    "LLM09:2025": "Misinformation",
    "LLM10:2025": "Unbounded Consumption",
}

ATTACK_TACTICS = {
    "TA0043": "Reconnaissance", "TA0001": "Initial Access", "TA0002": "Execution", "TA0003": "Persistence",
    "TA0004": "Privilege Escalation", "TA0005": "Defense Evasion", "TA0006": "Credential Access", "TA0007": "Discovery",
    "TA0008": "Lateral Movement", "TA0009": "Collection", "TA0010": "Exfiltration", "TA0040": "Impact",
}

#: ATT&CK technique or sub-technique id -> (name, the tactic a finding of ours puts it under)
ATTACK_TECHNIQUES = {
    "T1046": ("Network Service Discovery", "TA0007"),
    "T1059": ("Command and Scripting Interpreter", "TA0002"),
    "T1068": ("Exploitation for Privilege Escalation", "TA0004"),
    "T1078": ("Valid Accounts", "TA0001"),
    "T1083": ("File and Directory Discovery", "TA0007"),
    "T1087": ("Account Discovery", "TA0007"),
    "T1110": ("Brute Force", "TA0006"),
    "T1110.001": ("Password Guessing", "TA0006"),
    "T1110.003": ("Password Spraying", "TA0006"),
    "T1110.004": ("Credential Stuffing", "TA0006"),
    "T1119": ("Automated Collection", "TA0009"),
    "T1189": ("Drive-by Compromise", "TA0001"),
    "T1190": ("Exploit Public-Facing Application", "TA0001"),
    "T1195": ("Supply Chain Compromise", "TA0001"),
    "T1195.001": ("Compromise Software Dependencies and Development Tools", "TA0001"),
    "T1199": ("Trusted Relationship", "TA0001"),
    "T1210": ("Exploitation of Remote Services", "TA0008"),
    "T1213": ("Data from Information Repositories", "TA0009"),
    "T1499": ("Endpoint Denial of Service", "TA0040"),
    "T1499.003": ("Application Exhaustion Flood", "TA0040"),
    "T1505": ("Server Software Component", "TA0003"),
    "T1505.003": ("Web Shell", "TA0003"),
    "T1550": ("Use Alternate Authentication Material", "TA0005"),
    "T1550.004": ("Web Session Cookie", "TA0005"),
    "T1552": ("Unsecured Credentials", "TA0006"),
    "T1552.005": ("Cloud Instance Metadata API", "TA0006"),
    "T1567": ("Exfiltration Over Web Service", "TA0010"),
    "T1595": ("Active Scanning", "TA0043"),
    "T1595.002": ("Vulnerability Scanning", "TA0043"),
    "T1595.003": ("Wordlist Scanning", "TA0043"),
}

ATLAS_TACTICS = {"AML.TA0000": "AI Model Access", "AML.TA0004": "Initial Access", "AML.TA0005": "Execution", "AML.TA0010": "Exfiltration"}

#: ATLAS technique or sub-technique id -> (name, tactic)
ATLAS_TECHNIQUES = {
    "AML.T0010": ("AI Supply Chain Compromise", "AML.TA0004"),
    "AML.T0024": ("Exfiltration via AI Inference API", "AML.TA0010"),
    "AML.T0024.002": ("Extract AI Model", "AML.TA0010"),
    "AML.T0025": ("Exfiltration via Cyber Means", "AML.TA0010"),
    "AML.T0040": ("AI Model Inference API Access", "AML.TA0000"),
    "AML.T0051": ("LLM Prompt Injection", "AML.TA0005"),
    "AML.T0051.001": ("Indirect", "AML.TA0005"),
    "AML.T0053": ("AI Agent Tool Invocation", "AML.TA0005"),
}


@dataclass(frozen=True)
class Mapping:
    """The taxonomy ids of one attack class, rule or inline category (ids of the tables above)."""

    owasp_api: tuple[str, ...] = ()
    owasp_llm: tuple[str, ...] = ()
    attack: tuple[str, ...] = ()
    atlas: tuple[str, ...] = ()
    note: str = ""

    @property
    def owasp(self) -> tuple[str, ...]:
        """Every OWASP id, API first (``API1:2023``, ``LLM01:2025``)."""
        return self.owasp_api + self.owasp_llm

    @property
    def empty(self) -> bool:
        """True when no taxonomy describes it (``note`` says why)."""
        return not (self.owasp or self.attack or self.atlas)


@dataclass(frozen=True)
class Technique:
    """An ATT&CK or ATLAS technique resolved: its tactic, and its parent when it is a sub-technique."""

    uid: str
    name: str
    tactic_uid: str
    tactic_name: str
    parent_uid: str | None
    parent_name: str | None
    matrix: str

    @property
    def version(self) -> str:
        """The matrix release the id was written against (``ATT&CK v16``)."""
        return f"{self.matrix} {ATTACK_VERSION if self.matrix == 'ATT&CK' else ATLAS_VERSION}"


_INJECTION = Mapping(owasp_api=("API8:2023",), attack=("T1190",))

#: attack class (``models.rules.ATTACK_CLASSES``, plus the exposure tracker's category) -> mapping
CLASSES: dict[str, Mapping] = {
    "bola": Mapping(owasp_api=("API1:2023",), attack=("T1190", "T1213")),
    "credential_abuse": Mapping(owasp_api=("API2:2023",), attack=("T1110",)),
    "exfiltration": Mapping(owasp_api=("API3:2023",), attack=("T1213", "T1567")),
    "injection": _INJECTION,
    "retired_api": Mapping(owasp_api=("API9:2023",), attack=("T1190",)),
    "lateral_movement": Mapping(owasp_api=("API5:2023",), attack=("T1210", "T1046")),
    "bfla": Mapping(owasp_api=("API5:2023",), attack=("T1068",)),
    "resource_consumption": Mapping(owasp_api=("API4:2023",), attack=("T1499.003",)),
    "business_flow": Mapping(owasp_api=("API6:2023",), attack=("T1119",)),
    "ssrf": Mapping(owasp_api=("API7:2023",), attack=("T1190", "T1552.005")),
    "misconfiguration": Mapping(owasp_api=("API8:2023",), attack=("T1595.003",)),
    "inventory": Mapping(owasp_api=("API9:2023",), attack=("T1190",)),
    "unsafe_consumption": Mapping(owasp_api=("API10:2023",), attack=("T1199",)),
    "honeytoken": Mapping(owasp_api=("API2:2023",), attack=("T1078", "T1552")),
    "mass_assignment": Mapping(owasp_api=("API3:2023",), attack=("T1190",)),
    "data_exposure": Mapping(owasp_api=("API3:2023",), attack=("T1213",)),
    "excessive-data-exposure": Mapping(owasp_api=("API3:2023",), attack=("T1213",)),
    "anomaly": Mapping(note="an anomaly score names no attack; the rule or model evidence says what was unusual"),
    "agent_exfiltration": Mapping(owasp_llm=("LLM02:2025", "LLM06:2025"), attack=("T1567",), atlas=("AML.T0025",)),
    "agent_hijack": Mapping(owasp_llm=("LLM01:2025", "LLM06:2025"), atlas=("AML.T0051.001", "AML.T0053")),
    "tool_rug_pull": Mapping(owasp_llm=("LLM03:2025",), attack=("T1195.001",), atlas=("AML.T0010",)),
    "tool_new": Mapping(owasp_llm=("LLM03:2025", "LLM06:2025"), attack=("T1195.001",), atlas=("AML.T0010",)),
    "tool_poisoning": Mapping(owasp_llm=("LLM01:2025", "LLM03:2025"), attack=("T1195.001",), atlas=("AML.T0010", "AML.T0051.001")),
    "prompt_injection": Mapping(owasp_llm=("LLM01:2025",), atlas=("AML.T0051.001",)),
    "model_extraction": Mapping(owasp_llm=("LLM10:2025",), atlas=("AML.T0024.002", "AML.T0040")),
}

#: rule id -> mapping, where a rule says more than its class (it replaces the class's mapping)
RULES: dict[str, Mapping] = {
    "credential-stuffing": Mapping(owasp_api=("API2:2023",), attack=("T1110.004",)),
    "rotating-credential-stuffing": Mapping(owasp_api=("API2:2023",), attack=("T1110.004",)),
    "stuffing-unresolved-accounts": Mapping(owasp_api=("API2:2023",), attack=("T1110.004",)),
    "password-spraying": Mapping(owasp_api=("API2:2023",), attack=("T1110.003",)),
    "brute-force-hot-target": Mapping(owasp_api=("API2:2023",), attack=("T1110.001",)),
    "account-enumeration": Mapping(owasp_api=("API2:2023",), attack=("T1087", "T1110")),
    "exfiltration-first-seen-host": Mapping(attack=("T1567",)),
    "exfiltration-new-external-host": Mapping(attack=("T1567",)),
    "bulk-creation": Mapping(owasp_api=("API6:2023",), note="bulk purchase or reservation: business abuse no ATT&CK technique describes"),
    "identity-flood-source": Mapping(owasp_api=("API2:2023",), attack=("T1110",)),
    "identity-flood-service": Mapping(owasp_api=("API2:2023", "API4:2023"), attack=("T1110",)),
    "lateral-new-edges-breadth": Mapping(owasp_api=("API5:2023",), attack=("T1046", "T1210")),
}

#: inline finding category of the shim (``enforcement.signatures.CATEGORIES`` and the shim's own) -> mapping; a
#: ``category:detail`` finding (``prompt-injection:override``) maps by its category
INLINE: dict[str, Mapping] = {
    "sqli": _INJECTION, "nosqli": _INJECTION, "ldap": _INJECTION, "xxe": _INJECTION, "crlf": _INJECTION,
    "prototype-pollution": _INJECTION, "schema-violation": _INJECTION,
    "cmdi": Mapping(owasp_api=("API8:2023",), attack=("T1190", "T1059")),
    "code-injection": Mapping(owasp_api=("API8:2023",), attack=("T1190", "T1059")),
    "ssti": Mapping(owasp_api=("API8:2023",), attack=("T1190", "T1059")),
    "jndi": Mapping(owasp_api=("API8:2023",), attack=("T1190", "T1059")),
    "xss": Mapping(owasp_api=("API8:2023",), attack=("T1189",)),
    "traversal": Mapping(owasp_api=("API8:2023",), attack=("T1190", "T1083")),
    "ssrf": Mapping(owasp_api=("API7:2023",), attack=("T1190", "T1552.005")),
    "file-upload": Mapping(owasp_api=("API8:2023",), attack=("T1190", "T1505.003")),
    "session-fixation": Mapping(owasp_api=("API2:2023",), attack=("T1550.004",)),
    "mass-assignment": Mapping(owasp_api=("API3:2023",), attack=("T1190",)),
    "prompt-injection": Mapping(owasp_llm=("LLM01:2025",), atlas=("AML.T0051",)),
    "honeytoken": Mapping(owasp_api=("API2:2023",), attack=("T1078", "T1552")),
    "fast-tier": Mapping(owasp_api=("API1:2023",), attack=("T1190",)),
    "fast-tier:inline-repeat": Mapping(owasp_api=("API8:2023",), attack=("T1595.002",)),
    "oversize": Mapping(owasp_api=("API4:2023",), attack=("T1499.003",)),
}


def mapping_for(attack_class: str, rule_id: str | None = None) -> Mapping:
    """The mapping of a rule (when it refines its class) or of its class; ``KeyError`` names an unmapped class."""
    if rule_id is not None and rule_id in RULES:
        return RULES[rule_id]
    try:
        return CLASSES[attack_class]
    except KeyError:
        raise KeyError(f"attack_class={attack_class!r} has no taxonomy mapping (models/taxonomy.py CLASSES)") from None


def inline_mapping(category: str) -> Mapping | None:
    """The mapping of an inline finding (``sqli``, ``prompt-injection:override``), or ``None`` for one that is no attack."""
    return INLINE.get(category) or INLINE.get(category.split(":", 1)[0])


def technique(uid: str) -> Technique:
    """An ATT&CK (``T1110.004``) or ATLAS (``AML.T0051.001``) id resolved to names, tactic and parent.

    >>> t = technique("T1110.004")
    >>> (t.parent_uid, t.parent_name, t.name, t.tactic_name, t.version)
    ('T1110', 'Brute Force', 'Credential Stuffing', 'Credential Access', 'ATT&CK v16')
    """
    atlas = uid.startswith("AML.")
    techniques, tactics = (ATLAS_TECHNIQUES, ATLAS_TACTICS) if atlas else (ATTACK_TECHNIQUES, ATTACK_TACTICS)
    name, tactic = techniques[uid]
    parent = uid.rsplit(".", 1)[0] if uid.count(".") > int(atlas) else None
    return Technique(uid, name, tactic, tactics[tactic], parent, techniques[parent][0] if parent else None, "ATLAS" if atlas else "ATT&CK")


def finding_attacks(mapping: Mapping) -> list[FindingAttack]:
    """OCSF ``finding_info.attacks`` of a mapping: ATT&CK first, then ATLAS, sub-techniques under their parent."""
    out = []
    for uid in mapping.attack + mapping.atlas:
        t = technique(uid)
        parent = FindingEntity(uid=t.parent_uid, name=t.parent_name or "") if t.parent_uid else None
        own = FindingEntity(uid=t.uid, name=t.name)
        out.append(FindingAttack(technique=parent or own, sub_technique=own if parent else None,
                                 tactic=FindingEntity(uid=t.tactic_uid, name=t.tactic_name), version=t.version))
    return out


def finding_tags(mapping: Mapping) -> list[FindingTag]:
    """OCSF ``finding_info.tags`` of a mapping: one per OWASP category, ``owasp_api_2023: API1:2023 Broken ...``."""
    api = [FindingTag(name=OWASP_TAGS[0], value=f"{i} {OWASP_API_2023[i]}") for i in mapping.owasp_api]
    return api + [FindingTag(name=OWASP_TAGS[1], value=f"{i} {OWASP_LLM_2025[i]}") for i in mapping.owasp_llm]
