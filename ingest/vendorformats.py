"""Vendor token formats: tokens recognised by a literal prefix or a fixed infix their issuer publishes.

Contract: pure. ``vendor_tokens(text)`` yields ``(start, end)`` of tokens whose
format is published by the issuer and starts with a high-signal literal
(``ghp_``, ``xoxb-``, ``sk_live_``, ``AKIA``, ``AIza``, ...), plus a few keyed by a
fixed infix (Slack and Teams webhooks, Telegram bot tokens, Mailchimp keys, the
``Jenkins-Crumb`` header, ThingsBoard device paths, Entra ID ``?Q~`` secrets).
``PREFIXES`` are every literal prefix, longest first (``ingest.credentials`` builds
its gate from them). Random hex or base64 without such a marker is never reported
here (``ingest.credentials`` handles secret-named assignments).

Speed: long words are cut out of the text with ``str.translate`` and
``str.split`` (C), checked with one ``str.startswith`` against every known
prefix, and only then matched against that format's pattern; infix formats are
gated by a substring test. No pattern starts with an optional part or a
lookbehind, so ``re`` never pays a match attempt at every character.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

__all__ = ["PREFIXES", "vendor_tokens"]

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


PREFIXES = _PREFIXES
