"""Credential formats: vendor tokens recognised by a literal prefix, and what a plausible secret value is.

Contract: pure. ``vendor_tokens(text)`` yields ``(start, end)`` of tokens whose
format is published by the issuer and starts with a high-signal literal
(``ghp_``, ``xoxb-``, ``sk_live_``, ``AKIA``, ``AIza``, ...), plus a few keyed by a
fixed infix (Slack and Teams webhooks, Telegram bot tokens, Mailchimp keys, the
``Jenkins-Crumb`` header, ThingsBoard device paths, Entra ID ``?Q~`` secrets).
Random hex or base64 without such a marker is never reported here: that is
left to secret-named assignments, and to keys naming a vendor whose tokens have
no prefix (``postmark: <uuid>``, ``sonar.login=<40 hex>``, Okta's ``00`` + 40).
``plausible_secret(value, key)`` rejects what is syntax rather than a literal
secret (``$VAR``, ``${{ x }}``, ``<your key>``, ``os.getenv(...)``, masks, ``null``).

``secret_spans(text)`` adds private keys (PEM, base64 PEM), crypt password
hashes, credentials in URLs, Authorization headers, ``-u user -p pass`` style
command lines, .NET ``DirectoryEntry``/``NetworkCredential`` and PowerShell
``ConvertTo-SecureString -AsPlainText`` literals, .netrc entries and
secret-named assignments (``password=...``, ``"api_key": "..."``, ``PGPASSWORD: x``,
``if password == "..."``), keyed by ``is_secret_name``. Every finder sits behind
one gate of ``SECRET_GATES`` (a single RE2 set pass), so a body without a
candidate costs that pass only.

Speed: long words are cut out of the text with ``str.translate`` and
``str.split`` (C), checked with one ``str.startswith`` against every known
prefix, and only then matched against that format's pattern; infix formats are
gated by a substring test. No pattern starts with an optional part or a
lookbehind, so ``re`` never pays a match attempt at every character.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from functools import lru_cache

import re2

__all__ = [
    "SECRET_GATES", "gate_set", "is_private_pem", "is_secret_name", "lower_text", "plausible_secret", "secret_spans",
    "vendor_tokens",
]

_END = r"(?![A-Za-z0-9])"
#: (literal prefixes, pattern matched at the candidate start); each is a documented issuer format
_FORMATS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("AKIA", "ASIA", "AGPA", "AIDA", "AROA", "AIPA", "ANPA", "ANVA", "ABIA", "ACCA", "A3T"), r"A[A-Z0-9]{3}[A-Z0-9]{16}"),
    (("ghp_", "gho_", "ghu_", "ghs_", "ghr_"), r"gh[pousr]_[A-Za-z0-9]{36,251}"),
    (("github_pat_",), r"github_pat_\w{60,}"),
    (("glpat-", "glptt-", "gldt-", "glrt-", "glcbt-", "glimt-", "glft-", "glsoat-", "glagent-"), r"gl[a-z]{2,6}-[\w\-]{20,}"),
    (("GR1348941",), r"GR1348941[\w\-]{20,}"),
    (("xoxa-", "xoxb-", "xoxp-", "xoxr-", "xoxs-", "xoxe-", "xoxe.xox"), r"xox[abprse][.\-][\w\-.]{10,}"),
    (("xapp-",), r"xapp-[\w\-/]{20,}"),
    (("sk_live_", "sk_test_", "rk_live_", "rk_test_"), r"[sr]k_(?:live|test)_[A-Za-z0-9]{16,}"),
    (("whsec_",), r"whsec_[A-Za-z0-9+/=]{24,}"),
    (("AIza",), r"AIza[\w\-]{35}"),
    (("ya29.",), r"ya29\.[\w\-]{20,}"),
    (("GOCSPX-",), r"GOCSPX-[\w\-]{28}"),
    (("sk-ant-",), r"sk-ant-[a-z]{3,6}\d\d-[\w\-]{80,}"),
    (("sk-proj-", "sk-svcacct-", "sk-admin-"), r"sk-[a-z]{4,7}-[\w\-]{40,}"),
    (("sk-",), r"sk-[A-Za-z0-9]{20}T3BlbkFJ[A-Za-z0-9]{20}"),
    (("sk-or-v1-",), r"sk-or-v1-[a-f0-9]{64}"),
    (("hf_",), r"hf_[A-Za-z0-9]{34,}"),
    (("npm_",), r"npm_[A-Za-z0-9]{36}"),
    (("pypi-AgEIcHlwaS5vcmc",), r"pypi-AgEIcHlwaS5vcmc[\w\-]{50,}"),
    (("SG.",), r"SG\.[\w\-]{22}\.[\w\-]{43}"),
    (("shpss_", "shpat_", "shpca_", "shppa_"), r"shp(?:ss|at|ca|pa)_[a-fA-F0-9]{32}"),
    (("dckr_pat_",), r"dckr_pat_[\w\-]{27,}"),
    (("dapi",), r"dapi[a-f0-9]{32}(?:-\d)?"),
    (("doo_v1_", "dop_v1_", "dor_v1_"), r"do[opr]_v1_[a-f0-9]{64}"),
    (("dp.ct.", "dp.pt.", "dp.st.", "dp.sa.", "dp.scim.", "dp.audit."), r"dp\.[a-z]{2,5}\.(?:[a-z0-9_\-]{1,40}\.)?[A-Za-z0-9]{40,}"),
    (("glc_",), r"glc_[A-Za-z0-9+/]{32,}={0,2}"),
    (("glsa_",), r"glsa_[A-Za-z0-9]{32}_[a-f0-9]{8}"),
    (("eyJrIjoi",), r"eyJrIjoi[A-Za-z0-9+/]{30,}={0,2}"),
    (("gsk_",), r"gsk_[A-Za-z0-9]{48,}"),
    (("hvs.", "hvb.", "hvr."), r"hv[sbr]\.[\w\-]{24,}"),
    (("s.", "b.", "r."), r"[sbr]\.[A-Za-z0-9]{24}(?![\w.(])"),
    (("NRAK-", "NRAA-", "NRII-", "NRIQ-", "NRRA-", "NRJS-"), r"NR[A-Z]{2}-[\w\-]{19,42}"),
    (("PMAK-",), r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}"),
    (("sq0atp-", "sq0csp-"), r"sq0(?:atp|csp)-[\w\-]{22,43}"),
    (("EAA",), r"EAA[A-Za-z0-9]{90,}"),
    (("tvly-",), r"tvly-(?:dev-)?[A-Za-z0-9]{32}"),
    (("odt_",), r"odt_[A-Za-z0-9]{32,}"),
    (("jina_",), r"jina_[a-f0-9]{32}[\w\-]{20,}"),
    (("fc-",), r"fc-[a-f0-9]{32}"),
    (("ATATT3",), r"ATATT3[\w\-=]{100,}"),
    (("ATBB",), r"ATBB[A-Za-z0-9]{28,}"),
    (("AKCp",), r"AKCp[A-Za-z0-9]{60,}"),
    (("AGE-SECRET-KEY-1",), r"AGE-SECRET-KEY-1[0-9A-Z]{58}"),
    (("rubygems_",), r"rubygems_[a-f0-9]{48}"),
    (("oy2",), r"oy2[a-z0-9]{43}"),
    (("da2-",), r"da2-[a-z0-9]{26}"),
    (("live_",), r"live_\d{6,}_[A-Za-z0-9]{30}"),
    (("hawk.",), r"hawk\.[\w\-]{20}\.[\w\-]{20}"),
    (("px-dep-", "px-api-"), r"px-(?:dep|api)-[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}"),
    (("amzn.mws.",), r"amzn\.mws\.[a-f0-9\-]{36}"),
    (("lin_api_",), r"lin_api_[A-Za-z0-9]{40}"),
    (("SK",), r"SK[a-f0-9]{32}"),
    (("key-",), r"key-[a-f0-9]{32}"),
    (("sgp_",), r"sgp_(?:[a-f0-9]{16}_|local_)?[a-f0-9]{40}|sgp_[A-Za-z0-9]{64}"),
    (("cio",), r"cio[A-Za-z0-9]{32}"),
    (("sl.",), r"sl\.[\w\-]{130,}"),
    (("sk.eyJ", "tk.eyJ"), r"[st]k\.eyJ[\w\-]{20,}\.[\w\-]{20,}"),
    (("sntrys_",), r"sntrys_[A-Za-z0-9+/=_]{50,}"),
    (("pul-",), r"pul-[a-f0-9]{40}"),
    (("xkeysib-",), r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}"),
    (("r8_",), r"r8_[A-Za-z0-9]{37}"),
    (("figd_",), r"figd_[\w\-]{40,}"),
    (("aio_",), r"aio_[A-Za-z0-9]{28}"),
    (("dt0c01.",), r"dt0c01\.[A-Z0-9]{24}\.[A-Z0-9]{64}"),
    (("django-insecure-",), r"django-insecure-[^\s'\"`]{30,}"),
    (("gloas-", "glffct-"), r"gl[a-z]{2,6}-[\w\-]{20,}"),
    (("dckr_oat_",), r"dckr_oat_[\w\-]{27,}"),
    (("squ_", "sqp_", "sqa_"), r"sq[upa]_[a-f0-9]{40}"),            # SonarQube 9.5+ user / project / global tokens
    (("lsv2_pt_", "lsv2_sk_"), r"lsv2_(?:pt|sk)_[a-f0-9]{32}_[a-f0-9]{10}"),  # LangSmith
    (("pplx-",), r"pplx-[A-Za-z0-9]{48}"),                             # Perplexity
    (("sbp_",), r"sbp_[a-f0-9]{40}"),                                  # Supabase personal access token
    (("sb_secret_",), r"sb_secret_[\w\-]{20,}"),                       # Supabase secret API key
    (("EAAA",), r"EAAA[\w\-]{60}"),                                    # Square access token (64 characters)
    (("CFPAT-",), r"CFPAT-[\w\-]{43}"),                                # Contentful personal access token
    (("duffel_test_", "duffel_live_"), r"duffel_(?:test|live)_[\w\-]{43}"),
    (("EZAK", "EZTK"), r"EZ[AT]K[A-Za-z0-9]{54}"),                    # EasyPost
    (("FLWSECK-", "FLWSECK_TEST-"), r"FLWSECK(?:_TEST)?-[a-f0-9]{32}-X"),  # Flutterwave secret key
    (("pscale_tkn_", "pscale_pw_", "pscale_oauth_"), r"pscale_(?:tkn|pw|oauth)_[\w\-.]{32,64}"),  # PlanetScale
    (("pnu_",), r"pnu_[A-Za-z0-9]{36}"),                               # Prefect
    (("rdme_",), r"rdme_[a-z0-9]{70}"),                                # ReadMe
    (("shippo_live_", "shippo_test_"), r"shippo_(?:live|test)_[a-f0-9]{40}"),
    (("tfp_",), r"tfp_[\w\-.=]{40,}"),                                 # Typeform
    (("sntryu_",), r"sntryu_[a-f0-9]{64}"),                            # Sentry user auth token
    (("bkua_",), r"bkua_[a-f0-9]{40}"),                                # Buildkite
    (("CCIPAT_", "CCIPRJ_"), r"CCIP(?:AT|RJ)_[A-Za-z0-9_]{40,}"),      # CircleCI
    (("pcsk_",), r"pcsk_[A-Za-z0-9_]{50,}"),                           # Pinecone
    (("xai-",), r"xai-[A-Za-z0-9]{80}"),                               # xAI
    (("1//0",), r"1//0[\w\-]{40,}"),                                   # Google OAuth refresh token
    (("access-sandbox-", "access-development-", "access-production-"),
     r"access-(?:sandbox|development|production)-[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}"),  # Plaid
    (("tskey-",), r"tskey-(?:api|auth|client|scim|webhook)-[\w\-]{10,}"),  # Tailscale
    (("ops_eyJ",), r"ops_eyJ[\w\-+/=]{100,}"),                         # 1Password service account
    (("ntn_",), r"ntn_[A-Za-z0-9]{40,}"),                              # Notion (2024 format)
    (("secret_",), r"secret_[A-Za-z0-9]{43}"),                         # Notion (integration secret)
    (("pat",), r"pat[A-Za-z0-9]{14}\.[a-f0-9]{64}"),                   # Airtable personal access token
    (("pat-na1-", "pat-eu1-"), r"pat-(?:na|eu)1-[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}"),  # HubSpot
    (("IQoJb3JpZ2luX2Vj", "FwoGZXIvYXdzE"), r"(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdzE)[A-Za-z0-9+/]{100,}={0,2}"),  # AWS STS session
    (("cmVmdGtuOjAxOj",), r"cmVmdGtuOjAxOj[A-Za-z0-9]{40,}"),         # JFrog reference token (base64 "reftkn:01:")
    (("dG9rOj",), r"dG9rOj[A-Za-z0-9+/]{40,}={0,2}"),                 # Intercom access token (base64 "tok:")
    (("CLOJARS_",), r"CLOJARS_[a-z0-9]{60}"),
    (("HRKU-",), r"HRKU-[\w\-]{30,}"),                                 # Heroku (2024 format)
    (("sk_",), r"sk_[a-f0-9]{48}"),                                    # ElevenLabs
    (("p8e-",), r"p8e-[\w\-]{32}"),                                    # Adobe client secret
    (("ddp_", "ddw_"), r"dd[pw]_[A-Za-z0-9]{36}"),                     # Deno Deploy
)
_BY_PREFIX: dict[str, re.Pattern[str]] = {p: re.compile(rx + _END) for prefixes, rx in _FORMATS for p in prefixes}
_PREFIXES = tuple(sorted(_BY_PREFIX, key=len, reverse=True))
# these two formats are short or plain: also require mixed case and a digit
_NEEDS_MIX = frozenset({"s.", "b.", "r.", "cio"})
# tokens are cut out of the text at characters no format uses
_DELIMITER_TABLE = str.maketrans({c: " " for c in "\"'`=:,;(){}[]<>|\\&?!*#@$%^~"})

#: formats keyed by an infix rather than a prefix: (substring that must be present, pattern)
_INFIXED: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("hooks.slack.com/", re.compile(r"hooks\.slack\.com/(?:services|workflows)/T[A-Z0-9]{6,}/[A-Z0-9]{6,}/[A-Za-z0-9]{20,}")),
    ("/IncomingWebhook/", re.compile(r"webhook(?:b2)?/[\w\-]{36}@[\w\-]{36}/IncomingWebhook/[a-f0-9]{32}/[\w\-]{36}")),
    ("/api/webhooks/", re.compile(r"discord(?:app)?\.com/api/webhooks/\d{17,20}/[\w\-]{60,}")),
    (":AA", re.compile(r"\d(?<!\d\d)\d{7,9}:AA[\w\-]{32,33}(?![\w\-])")),
    ("-us", re.compile(r"[a-f0-9](?<![\w\-][a-f0-9])[a-f0-9]{31}-us\d{1,2}(?![\w\-])")),
    ("AZDO", re.compile(r"[A-Za-z0-9](?<![A-Za-z0-9]{2})[A-Za-z0-9]{75}AZDO[A-Za-z0-9]{4}(?![A-Za-z0-9])")),
    ("NRAL", re.compile(r"[a-f0-9](?<![A-Za-z0-9]{2})(?:u01xx[a-f0-9]{30}|[a-f0-9]{35})NRAL(?![A-Za-z0-9])")),
    ("00D", re.compile(r"0(?<!\w0)0D[A-Za-z0-9]{12,15}![A-Za-z0-9._]{60,}")),
    # formats below report their first group when they have one (the value, not the header or path around it)
    ("Jenkins-Crumb", re.compile(r"Jenkins-Crumb[\"']?[ \t]*[:=][ \t]*[\"']?([a-f0-9]{32,64})(?![\w\-])")),
    # ThingsBoard device API: the access token is a path segment (/api/v1/<token>/telemetry)
    ("/api/v1/", re.compile(r"/api/v1/((?=[A-Za-z]{0,19}\d)(?=\d{0,19}[A-Za-z])[A-Za-z0-9]{20})/(?:telemetry|attributes|rpc|claim)"
                            r"(?![\w\-])")),
    ("access_token$", re.compile(r"access_token\$(?:production|sandbox)\$[a-z0-9]{16}\$[a-f0-9]{32}")),  # Braintree
    (".atlasv1.", re.compile(r"[A-Za-z0-9](?<![A-Za-z0-9]{2})[A-Za-z0-9]{13}\.atlasv1\.[\w\-=]{60,70}")),  # Terraform Cloud
    (":APA91b", re.compile(r"AAAA[\w\-]{7}:APA91b[\w\-]{100,}")),  # Firebase Cloud Messaging server key (not device tokens)
    # Microsoft Entra ID client secrets: 3 characters, a digit, "Q~", 31-34 more
    ("Q~", re.compile(r"[\w.\-](?<![\w.~\-][\w.\-])[\w.\-]{2}\dQ~[\w.~\-]{31,34}(?![\w.~\-])")),
)
#: TrueNAS API keys: "<key id>-<64 mixed-case letters and digits>", matched on whole words
_NUMBERED_KEY = re.compile(r"\d{1,4}-(?=[a-z0-9]*[A-Z])(?=[A-Z0-9]*[a-z])[A-Za-z0-9]{64}")


def _mixed(token: str) -> bool:
    return any(c.isdigit() for c in token) and any(c.isupper() for c in token) and any(c.islower() for c in token)


def _starts(word: str) -> Iterator[int]:
    """Offsets in a candidate word where a token may start: 0 and after each ``.`` or ``/`` (``secrets.pypi-...``)."""
    yield 0
    for i, ch in enumerate(word):
        if ch in "./" and i + 1 < len(word):
            yield i + 1


def _prefixed(text: str, at: int) -> tuple[int, int] | None:
    for prefix in _PREFIXES:
        if text.startswith(prefix, at):
            m = _BY_PREFIX[prefix].match(text, at)
            if m and (prefix not in _NEEDS_MIX or _mixed(m.group()[2:])):
                return m.span()
    return None


def _long_words(text: str) -> list[str]:
    """Pieces of ``text`` of 12+ characters between delimiters no token format uses.

    ``str.translate`` turns every delimiter into a space and ``str.split`` cuts there,
    both in C: 8 us for a 2 KB body here, against 25 us for ``re.split`` and 80 us
    for a candidate regex that had to try a match at every letter.
    """
    return [w for w in text.translate(_DELIMITER_TABLE).split() if len(w) >= 12]


def vendor_tokens(text: str) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of every issuer-format token in ``text``."""
    cursor = 0
    for word in _long_words(text):
        if 66 <= len(word) <= 69 and _NUMBERED_KEY.fullmatch(word):
            at = text.find(word, cursor)
            cursor = at + len(word)
            yield at, cursor
            continue
        for offset in _starts(word) if ("." in word or "/" in word) else (0,):
            if word.startswith(_PREFIXES, offset):
                at = text.find(word, cursor)
                span = _prefixed(text, at + offset) if at >= 0 else None
                if span:
                    cursor = span[1]
                    yield span
                    break
    for needle, rx in _INFIXED:
        if needle in text:
            yield from (m.span(1 if rx.groups else 0) for m in rx.finditer(text))


def is_private_pem(b64: str) -> bool:
    """Whether base64 text decodes to a PEM private-key header (not a certificate or public key)."""
    head = b64[:64]
    try:
        return b"PRIVATE KEY" in base64.b64decode(head[: len(head) // 4 * 4])
    except (binascii.Error, ValueError):
        return False


_PLACEHOLDER_WORDS = frozenset(
    "null none nil true false undefined redacted hidden masked changeme placeholder required optional string empty".split()
)
_CALL = re.compile(r"[A-Za-z_][\w.:]*\(")
_ENV_NAME = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
_TEMPLATE = re.compile(r"\{\{|\$\{|#\{|<%|%\(\w+\)[sdr]|&lt;|&gt;")


def _norm(text: str) -> str:
    return "".join(c for c in text.lower() if c.isalnum())


def _code_reference(v: str) -> bool:
    """``env.DB_PASSWORD``, ``self.password``, ``request.form[`` (a subscript): dotted identifiers without a long
    random segment."""
    parts = v.removesuffix(";").removesuffix("[").split(".")
    identifiers = all(p and not p[0].isdigit() and p.replace("_", "a").isalnum() and p.isascii() for p in parts)
    return len(parts) > 1 and identifiers and not any(len(p) >= 16 and any(c.isdigit() for c in p) for p in parts)


def _filler(v: str) -> bool:
    """``****``, ``xxxx``, ``0000``, or one character making up 70 % of the value."""
    return not v.strip("*xX\u2022#.-_0 ") or "****" in v or max(v.count(c) for c in set(v)) * 10 >= len(v) * 7


def _mask_like(v: str) -> bool:
    """``****``, ``xxxx``, ``aaaa...end`` (one character >= 70 %), ``a1b2c3``, runs such as ``123456789``.

    Runs shorter than 9 are kept: ``abuser123456`` is a real (weak) password.
    """
    if _filler(v):
        return True
    low = v.lower()
    if "a1b2c3" in low or "1a2b3c" in low:
        return True
    run = 1
    for a, b in zip(low, low[1:]):
        run = run + 1 if ord(b) == ord(a) + 1 and a.isalnum() and b.isalnum() else 1
        if run >= 9:
            return True
    return False


#: issuer formats of values assigned to a vendor-named key: (words all in the key, format the value must have)
_NAMED_FORMATS: tuple[tuple[tuple[str, ...], re.Pattern[str]], ...] = (
    (("aws", "secret"), re.compile(r"[A-Za-z0-9/+]{40}")),  # AWS secret access keys: 40 base64 characters
)


_UUID = r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}"
_OKTA = re.compile(r"00[\w\-]{40}")
#: vendors whose tokens carry no prefix, found under a key naming the vendor (``postmark: "<uuid>"``,
#: ``sonar.login=<40 hex>``, ``OKTA_TOKEN``): vendor word -> the issuer's token format
_VENDOR_KEYED: dict[str, re.Pattern[str]] = {
    "postmark": re.compile(_UUID + r"(?![\w\-])"),      # Postmark server and account tokens
    "sonar": re.compile(r"[a-f0-9]{40}(?![\w\-])"),      # SonarQube tokens before 9.5 (newer ones have a prefix)
    "okta": re.compile(_OKTA.pattern + r"(?![\w\-])"),  # Okta API tokens
    "jenkins": re.compile(r"11[a-f0-9]{32}(?![\w\-])"),  # Jenkins API tokens
}
_VENDOR_KEY_GATE = r"(?i:postmark|sonar|okta|jenkins)[\w.\-]{0,40}[\"'`]?[ \t]*[:=,]"
_VENDOR_KEY = re.compile(r"(postmark|sonar|okta|jenkins)([\w.\-]{0,40})[\"'`]?[ \t]{0,40}[:=,][ \t]{0,40}[\"'`]?")  # lower-cased text
_KEY_ROLES = ("token", "key", "login", "auth", "secret", "pass", "api")


def _vendor_keyed(text: str, low: str) -> Iterator[tuple[int, int]]:
    """Values in a vendor's token format under a key that names the vendor and a credential role (or nothing else)."""
    for m in _VENDOR_KEY.finditer(low):
        rest = m.group(2)
        if rest and (rest.endswith("id") or not any(role in rest for role in _KEY_ROLES)):
            continue
        value = _VENDOR_KEYED[m.group(1)].match(text, m.end())
        if value and not _filler(value.group()):
            yield value.span()


def _off_format(value: str, key: str) -> bool:
    """Whether a vendor-named key (``AWS_SECRET_ACCESS_KEY``) holds a value outside that vendor's format."""
    low = key.lower()
    return any(all(w in low for w in words) and not rx.fullmatch(value) for words, rx in _NAMED_FORMATS)


def plausible_secret(value: str, key: str | None = None, *, quoted: bool = True) -> bool:
    """Whether ``value`` looks like a literal secret rather than code, a template, a mask or a placeholder.

    ``key`` is the name it was assigned to: a value equal to its key (``password =
    "password"``), or containing a long key (``IAMUserChangePassword = "arn:...:IAMUserChangePassword"``),
    is a placeholder. Unquoted values that read like a code reference are rejected.
    Masks and documentation fillers are rejected too (``_mask_like``).
    """
    v = value.strip()
    if not 4 <= len(v) <= 512 or v[0] in "$%{<[(+./\\'\"&,;:=)" or v.lower() in _PLACEHOLDER_WORDS:
        return False
    if _mask_like(v) or _TEMPLATE.search(v) or _CALL.match(v) or (not quoted and _code_reference(v)):
        return False
    if v.startswith("#/") or (_ENV_NAME.fullmatch(v) and is_secret_name(v)):
        return False  # a JSON reference, or the name of a variable ("YOUR_API_KEY", "DB_PASSWORD")
    if key:
        k, nv = _norm(re.split(r"->|[.:]", key)[-1]), _norm(v)
        if k == nv or (len(k) >= 12 and k in nv) or _off_format(v, key):
            return False
    return True


# ------------------------------------------------------------------ secret names
_WORDS = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_SECRET_SUFFIXES = (
    "password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "secretkey", "privatekey",
    "authkey", "licensekey", "signingkey", "encryptionkey", "masterkey", "accountkey", "presharedkey",
    "credential", "credentials",
)
_SECRET_WORDS = frozenset({"pass", "pwd", "pw", "pat"})
_NOT_SECRET = ("pagetoken", "nexttoken", "continuationtoken", "synctoken", "csrftoken", "xsrftoken", "cursortoken")


@lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a field or variable name holds a secret: ``password``, ``userPassword``, ``AWS_SECRET_ACCESS_KEY``,
    ``client_secret``, ``api_key``, ``access_token``, ``ado_pat`` (not ``max_tokens``, ``nextPageToken``, ``key``)."""
    words = [w.lower() for w in _WORDS.findall(name)]
    if not words:
        return False
    joined = "".join(words)
    return (joined.endswith(_SECRET_SUFFIXES) and not joined.endswith(_NOT_SECRET)) or words[-1] in _SECRET_WORDS


# ------------------------------------------------------------------ secret spans
_PEM = re.compile(r"-----BEGIN[A-Z0-9 ]{0,30}PRIVATE KEY(?: BLOCK)?-----")
_B64_PEM = re.compile(r"LS0tLS1CRUdJTi[A-Za-z0-9+/=]{20,}")
_CRYPT = re.compile(
    r"\$(?:1|2[abxy]|5|6|7|8|9|y|gy|argon2(?:id|i|d)|pbkdf2(?:-sha\d+)?|krb5(?:asrep|tgs)\$\d\d)\$[A-Za-z0-9./+=$,:@\-]{16,}"
)
_URL_CRED = re.compile(r"://[^\s:/@\"'<>]{1,64}:([^\s:/@\"'<>]{1,128})@[^\s/\"'<>]")
_AUTH_HEADER = re.compile(r"(bearer|basic|ssws|token)[ :]+([a-z0-9._~+/=\-]{8,})")  # run on the lower-cased text
_CLI = (
    re.compile(r"(?:\s|^)-u\s+\S+\s+-p\s+([^\s\-]\S*)"),                       # psexec, docker login, mysql
    re.compile(r"(?:\s|^)(?:-u|--user)\s+[\"']?[^\s:\"']{1,100}:([^\s\"']+)"),  # curl -u user:password
    re.compile(r"\blogin\s+\S+\s+password\s+(\S+)"),                            # .netrc
    re.compile(r"(?i)unseal(?: key \d{1,2}:)?\s+([A-Za-z0-9+/]{40,}={0,2})"),  # Vault unseal keys
    re.compile(r"Credential\(\s*\"[^\"\n]{1,100}\"\s*,\s*\"([^\"\n]{1,100})\""),  # .NET NetworkCredential(user, pass)
    re.compile(r"DirectoryEntry\(\s*\"[^\"\n]{0,200}\"\s*,\s*\"[^\"\n]{1,100}\"\s*,\s*\"([^\"\n]{1,100})\""),  # (path, user, pass)
    re.compile(r"ConvertTo-SecureString\s+(?:-String\s+)?[\"']([^\"'\n]{1,100})[\"']\s+-AsPlainText"),  # PowerShell
)
_SAID_PASSWORD = re.compile(r"password\b[^\n]{0,60}?\bis\s+([\"'`])([^\"'`\n]{3,64})\1")  # lower-cased text
_XML_SETTING = re.compile(r"key=\"([\w.\-:]{1,80})\"\s+value=\"([^\"]{1,200})\"")
_SECRET_WORD = re.compile(r"pass|pwd|secret|token|key|credential|pat\b")  # run on the lower-cased text
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_ASSIGN = re.compile(r"[\"'`]?\\?[\"'`]?([ \t]{0,40})(===|!==|==|!=|:=|=>|=|:)?([ \t]{0,40})(\\?[\"'`]?)")


# ------------------------------------------------------------------ pre-pass
_TOKEN_CHAR = r"[^\s\"'`=:,;(){}\[\]<>|\\&?!*#@$%^~]"
_KEY_RUN = r"[A-Za-z0-9_.\-]*"
_SECRET_KEY = r"(?i:pass|pwd|secret|token|key|credential|pat)"
#: gate shapes of prefixes that common words start with ("pat" in "path", "sk_" in "task_id"): the gate needs more
_GATE_SHAPES = {"pat": r"pat[A-Za-z0-9]{14}\.", "sk_": r"sk_[a-f0-9]{12}", "secret_": r"secret_[A-Za-z0-9]{12}"}
#: RE2 patterns, one per finder of ``secret_spans``, each matching a superset of what that finder reports
#: (lookarounds dropped, long repeats shortened); ``ingest.sensitive`` adds them to its one pre-pass
SECRET_GATES: tuple[tuple[str, str], ...] = (
    ("vendor", "(?:" + "|".join(re.escape(p) for p in _PREFIXES if p not in _GATE_SHAPES) + ")" + _TOKEN_CHAR + r"{4}|"
     + "|".join(_GATE_SHAPES.values()) + r"|\d-[A-Za-z0-9]{64}"
     r"|hooks\.slack\.com/|/IncomingWebhook/|/api/webhooks/|\d{8}:AA|[a-f0-9]{32}-us\d|AZDO|(?:u01xx[a-f0-9]{30}|[a-f0-9]{35})NRAL|00D\w{12}"
     r"|Jenkins-Crumb|/api/v1/[A-Za-z0-9]{20}/|access_token\$|\.atlasv1\.|:APA91b|\dQ~"),
    ("named", _VENDOR_KEY_GATE),
    ("pem", r"-----BEGIN"),
    ("crypt", r"\$(?:1|2[abxy]|5|6|7|8|9|y|gy|argon2(?:id|i|d)|pbkdf2(?:-sha\d+)?|krb5(?:asrep|tgs)\$\d\d)\$[A-Za-z0-9./+=$,:@\-]{16}"),
    ("b64pem", r"LS0tLS1CRUdJTi"),
    ("url", r"://[^\s:/@\"'<>]{1,64}:[^\s:/@\"'<>]{1,128}@"),
    ("auth", r"(?i:bearer|basic|ssws|token)[ :]+[A-Za-z0-9._~+/=\-]{8}"),
    ("cli", r"(?:^|\s)(?:-u|--user)\s|login\s|(?i:unseal)|Credential\(|DirectoryEntry\(|ConvertTo-SecureString\s"),
    ("said", r"(?i:password)[^\n]{0,60}(?i:is)\s+[\"'`]"),
    ("xml", r"value=\""),
    ("assign", _SECRET_KEY + _KEY_RUN + r"[\"'`]?\\?[\"'`]?[ \t]*(?:[=:!]|\\?[\"'`])|-" + _KEY_RUN + _SECRET_KEY + _KEY_RUN
     + r"[\"'`]?\\?[\"'`]?[ \t]+\S"),
)


def gate_set(patterns: tuple[tuple[str, str], ...]) -> Callable[[str], frozenset[str]]:
    """One RE2 set over ``(name, pattern)`` pairs: a function giving the names whose pattern occurs in a text.

    A single linear pass in C++ (DFA) for all patterns at once; the memory budget is
    raised so the DFA never gives up on a long text (a set that ran out would report
    nothing, which ``tests/ingest/test_sensitive.py`` checks on a 1 MB text).
    """
    options = re2.Options()
    options.max_mem = 64 << 20
    compiled = re2.Set.SearchSet(options)
    for _, pattern in patterns:
        compiled.Add(pattern)
    compiled.Compile()
    names = tuple(name for name, _ in patterns)

    def present(text: str) -> frozenset[str]:
        return frozenset(names[i] for i in compiled.Match(text) or ())

    return present


_SECRET_PRESENT = gate_set(SECRET_GATES)
_SCHEME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789+.-")


def lower_text(text: str) -> str:
    """``text.lower()`` with the same offsets (non-ASCII letters that lower to several characters become ``?``)."""
    low = text.lower()
    return low if len(low) == len(text) else text.encode("ascii", "replace").decode().lower()


def secret_spans(text: str, low: str | None = None) -> Iterator[tuple[int, int]]:
    """``(start, end)`` of secrets in ``text``: issuer formats, private keys, password hashes, credentials in
    URLs, Authorization headers, command lines and secret-named assignments.

    ``low`` is ``text.lower()`` with the same length (computed when absent); patterns
    that ignore case run on it, so no ``(?i)`` alternation scans the text.
    """
    gates = _SECRET_PRESENT(text)
    if not gates:
        return
    if low is None or len(low) != len(text):
        low = lower_text(text)
    if "vendor" in gates:
        yield from vendor_tokens(text)
    for gate, rx in (("pem", _PEM), ("crypt", _CRYPT)):
        if gate in gates:
            yield from (m.span() for m in rx.finditer(text))
    if "b64pem" in gates:
        yield from (m.span() for m in _B64_PEM.finditer(text) if is_private_pem(m.group()))
    if "url" in gates:
        yield from _url_credentials(text)
    if "auth" in gates:
        yield from _auth_headers(text, low)
    if "cli" in gates:
        for rx in _CLI:
            yield from (m.span(1) for m in rx.finditer(text) if plausible_secret(m.group(1), quoted=False))
    if "said" in gates:
        yield from (m.span(2) for m in _SAID_PASSWORD.finditer(low))
    if "xml" in gates:
        yield from (m.span(2) for m in _XML_SETTING.finditer(text) if is_secret_name(m.group(1)) and plausible_secret(m.group(2)))
    if "named" in gates:
        yield from _vendor_keyed(text, low)
    if "assign" in gates:
        yield from _assignments(text, low)


def _url_credentials(text: str) -> Iterator[tuple[int, int]]:
    for m in _URL_CRED.finditer(text):
        start = m.start()
        while start > 0 and m.start() - start < 20 and text[start - 1].lower() in _SCHEME_CHARS:
            start -= 1
        if start < m.start() and plausible_secret(m.group(1)):
            yield start, m.end()


def _auth_headers(text: str, low: str) -> Iterator[tuple[int, int]]:
    for m in _AUTH_HEADER.finditer(low):
        if (m.start() == 0 or not low[m.start() - 1].isalnum()) and _auth_value_ok(m.group(1), text[m.start(2):m.end(2)]):
            yield m.span(2)


def _auth_value_ok(scheme: str, value: str) -> bool:
    if scheme == "basic":
        try:
            return b":" in base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
        except (binascii.Error, ValueError):
            return False
    if scheme == "ssws" and _OKTA.fullmatch(value):
        return not _filler(value)  # Okta's own format: only an outright mask is not a token
    return any(c.isdigit() for c in value) and plausible_secret(value) and not value.isdigit()


def _assignments(text: str, low: str) -> Iterator[tuple[int, int]]:
    """``<secret-named key> <sep> <value>``: env files, YAML, JSON, code, CLI flags, comparisons."""
    pos = 0
    for m in _SECRET_WORD.finditer(low):
        if m.start() < pos:
            continue
        ks, ke = m.start(), m.end()
        while ks > 0 and ke - ks < 80 and text[ks - 1] in _KEY_CHARS:
            ks -= 1
        while ke < len(text) and ke - ks < 80 and text[ke] in _KEY_CHARS:
            ke += 1
        pos = ke
        before = text[ks - 1] if ks else ""
        if before == "/" or not is_secret_name(text[ks:ke]):
            continue  # a URL path segment is not a key
        # a key inside a longer string literal ("Password:", "...;Password=x;") takes only an unquoted value
        literal = before if before and before in "\"'`" and text[ke:ke + 1] != before else ""
        span = _assigned_value(text, text[ks:ke], ke, literal)
        if span is not None:
            yield span


def _assigned_value(text: str, key: str, at: int, literal: str) -> tuple[int, int] | None:
    m = _ASSIGN.match(text, at)
    if m is None:
        return None
    sep, quote = m.group(2), m.group(4)
    if not sep and not ((quote and m.group(1)) or (key.startswith("-") and m.group(1))):
        return None
    if literal and (quote or text[m.end():m.end() + 1] == literal):
        return None
    if sep == ":" and not quote and not m.group(3):
        return None  # "token:hotp" is a namespaced name; YAML puts a space after the colon
    start = m.end()
    if quote:
        end = text.find(quote, start, start + 300)
    else:
        end = start
        while end < len(text) and end - start < 300 and not text[end].isspace() and text[end] not in "\"'`;,&)}]<":
            end += 1
    value = text[start:end]
    if end <= start or not plausible_secret(value, key, quoted=bool(quote)):
        return None
    if not quote and (text[end:end + 1] == ":" or (sep == ":" and len(value) < 8 and value.isalpha())):
        return None  # "Label: Word ..." is prose and "a:b:" a key path; "Password=secret;" stays a value
    return start, end
