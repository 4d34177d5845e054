"""Credential formats: where secrets sit in text, and what a plausible secret value is.

Contract: pure. ``vendor_tokens(text)`` (``ingest.vendorformats``, re-exported)
yields tokens in a format their issuer publishes (a literal prefix or infix).
Random hex or base64 without such a marker is left to secret-named assignments,
and to keys naming a vendor whose tokens have no prefix (``postmark: <uuid>``, ``sonar.login=<40 hex>``, Okta's ``00`` + 40).
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

"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from functools import lru_cache

import re2

from ingest.vendorformats import PREFIXES as _PREFIXES
from ingest.vendorformats import vendor_tokens

__all__ = [
    "SECRET_GATES", "gate_set", "is_private_pem", "is_secret_name", "lower_text", "plausible_secret", "secret_spans",
    "vendor_tokens",
]

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
