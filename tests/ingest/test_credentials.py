"""Credential formats: issuer tokens, private keys, secret-named assignments; placeholders and random hex are not secrets.

Token-shaped samples are built at run time (``fake``), so no string in this file
looks like a live credential to a secret scanner.
"""

from __future__ import annotations

import random
import string

import pytest

from ingest.credentials import (
    SECRET_GATES, gate_set, is_private_pem, is_secret_name, plausible_secret, secret_spans, vendor_tokens,
)
from ingest.sensitive import SECRET, scan_text

ALNUM = string.ascii_letters + string.digits
UPPER = string.ascii_uppercase + string.digits
HEX = "0123456789abcdef"


def fake(prefix: str, n: int, alphabet: str = ALNUM, suffix: str = "", seed: int = 11) -> str:
    rng = random.Random(seed)
    return prefix + "".join(rng.choice(alphabet) for _ in range(n)) + suffix


VENDOR_HITS = [
    pytest.param(fake("AKIA", 16, UPPER), id="aws-access-key-id"),
    pytest.param(fake("gh" + "p_", 36), id="github-pat"),
    pytest.param(fake("github_pat_", 82, ALNUM + "_"), id="github-fine-grained"),
    pytest.param(fake("glpat-", 20), id="gitlab"),
    pytest.param("xoxb-" + fake("", 12, string.digits) + "-" + fake("", 13, string.digits) + "-" + fake("", 24), id="slack-bot"),
    pytest.param(fake("sk_" + "live_", 24), id="stripe-live"),
    pytest.param(fake("rk_" + "test_", 24), id="stripe-restricted"),
    pytest.param(fake("AI" + "za", 35, ALNUM + "_-"), id="google-api-key"),
    pytest.param(fake("hf_", 34), id="huggingface"),
    pytest.param(fake("npm_", 36), id="npm"),
    pytest.param("SG." + fake("", 22) + "." + fake("", 43, seed=3), id="sendgrid"),
    pytest.param(fake("shpat_", 32, HEX), id="shopify"),
    pytest.param(fake("dop_v1_", 64, HEX), id="digitalocean"),
    pytest.param(fake("sk-ant-api03-", 93, ALNUM + "_-"), id="anthropic"),
    pytest.param(fake("AGE-SECRET-KEY-1", 58, UPPER), id="age"),
]


@pytest.mark.parametrize("token", VENDOR_HITS)
def test_vendor_token_is_found_alone_and_in_context(token: str) -> None:
    assert list(vendor_tokens(token)) == [(0, len(token))]
    text = f'config = {{"url": "https://x.example", "note": "{token}"}}'
    assert scan_text(text) == {SECRET: 1}


VENDOR_MISSES = [
    pytest.param(fake("", 40, HEX), id="random-hex-40"),
    pytest.param(fake("", 64, HEX), id="sha256-digest"),
    pytest.param("3f1c2a4e-8b7d-4c2e-9a1f-4b5c6d7e8f90", id="uuid"),
    pytest.param(fake("", 32, ALNUM), id="random-base62"),
    pytest.param(fake("AKIA", 15, UPPER), id="aws-too-short"),
    pytest.param(fake("AKIA", 12, UPPER) + "abcd", id="aws-lower-case"),
    pytest.param(fake("sk_" + "live_", 8), id="stripe-too-short"),
    pytest.param("s.addComponentsFromRegistry()", id="vault-lookalike-code"),
    pytest.param("sk-" + fake("", 48), id="openai-without-marker"),
]


@pytest.mark.parametrize("text", VENDOR_MISSES)
def test_token_shaped_strings_without_a_marker_are_not_secrets(text: str) -> None:
    assert list(vendor_tokens(text)) == []
    assert SECRET not in scan_text(text)


STRUCTURE_HITS = [
    pytest.param("-----BEGIN RSA PRIVATE KEY-----\nMIIEow...", id="pem"),
    pytest.param("-----BEGIN OPENSSH PRIVATE KEY-----", id="pem-openssh"),
    pytest.param("$2a$12$" + fake("", 53, ALNUM + "./"), id="bcrypt"),
    pytest.param("$6$" + fake("", 8) + "$" + fake("", 86, ALNUM + "./", seed=5), id="sha512crypt"),
    pytest.param("DATABASE_URL=postgres://app:Tr0ub4dor3@db.internal:5432/app", id="url-credentials"),
    pytest.param("Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==", id="basic-auth"),
    pytest.param("Authorization: Bearer " + fake("", 30) + "7", id="bearer"),
    pytest.param("curl -u deploy:" + fake("", 20) + " https://x.example", id="curl-user"),
    pytest.param("docker login -u ci -p " + fake("", 20), id="cli-u-p"),
    pytest.param("machine api.example.com login bob password h4rd2guess", id="netrc"),
    pytest.param('password = "correct-horse-9"', id="assign-quoted"),
    pytest.param("DB_PASSWORD=Tr0ub4dor3", id="assign-env"),
    pytest.param('{"client_secret": "' + fake("", 40) + '"}', id="assign-json"),
    pytest.param("api_key: " + fake("", 32), id="assign-yaml"),
    pytest.param('    password        => "hunter2hunter2",', id="assign-aligned"),
    pytest.param("Server=db;User ID=app;Password=Tr0ub4dor3;Database=x;", id="connection-string"),
    pytest.param('if password == "letmein99": pass', id="comparison"),
    pytest.param('<add key="SmtpPassword" value="Tr0ub4dor3"/>', id="dotnet-setting"),
    pytest.param("The default password is 'changeit9'", id="prose"),
]


@pytest.mark.parametrize("text", STRUCTURE_HITS)
def test_secret_structures_are_found(text: str) -> None:
    assert scan_text(text).get(SECRET) == 1, list(secret_spans(text))


STRUCTURE_MISSES = [
    pytest.param("password = $DB_PASSWORD", id="shell-variable"),
    pytest.param("password: ${{ secrets.DB_PASSWORD }}", id="ci-template"),
    pytest.param('"password": "<your password>"', id="angle-placeholder"),
    pytest.param('password = os.getenv("DB_PASSWORD")', id="function-call"),
    pytest.param("password = env.DB_PASSWORD", id="code-reference"),
    pytest.param('"password": "********"', id="mask"),
    pytest.param('"token": null', id="null"),
    pytest.param('"password": "123"', id="too-short"),
    pytest.param('String password = "password";', id="value-repeats-key"),
    pytest.param('"password": "YOUR_PASSWORD"', id="variable-name-as-value"),
    pytest.param("max_tokens=1024 temperature=0.2", id="max-tokens"),
    pytest.param('"nextPageToken": "CAUQAA"', id="page-token"),
    pytest.param("passwordLabel: \"Password:\", rememberMe: true", id="ui-label"),
    pytest.param("password:\n  type: string\n  format: password", id="schema-property"),
    pytest.param("the token:hotp factor", id="namespaced-name"),
    pytest.param("https://example.com/users/forgot-password", id="url-path"),
    pytest.param("secret_key = 'abcdefghijklmnop'", id="alphabet-run"),
    pytest.param("api_key = 'a1b2c3d4e5f6g7h8'", id="a1b2c3-filler"),
    pytest.param("aws_secret = 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaend'", id="one-character-filler"),
]


@pytest.mark.parametrize("text", STRUCTURE_MISSES)
def test_placeholders_code_and_prose_are_not_secrets(text: str) -> None:
    assert SECRET not in scan_text(text), list(secret_spans(text))


@pytest.mark.parametrize(
    ("name", "expected"),
    [("password", True), ("DB_PASSWORD", True), ("clientSecret", True), ("x-api-key", True), ("jwtsecret", True),
     ("AccountKey", True), ("ado_pat", True), ("PrivateKey", True), ("refresh_token", True),
     ("max_tokens", False), ("nextPageToken", False), ("csrf_token", False), ("key", False), ("bypass", False),
     ("token_type", False), ("password_policy", False), ("", False)],
)
def test_is_secret_name(name: str, expected: bool) -> None:
    assert is_secret_name(name) is expected


@pytest.mark.parametrize(
    ("value", "key", "quoted", "expected"),
    [("Tr0ub4dor3", "password", True, True), ("abuser123456", "password", True, True),
     ("env.DB_PASSWORD", "password", False, False), ("env.DB_PASSWORD", "password", True, True),
     ("#/components/schemas/Password", "password", True, False), ("{{ secret }}", None, True, False),
     ("x", None, True, False), ("password", "password", True, False)],
)
def test_plausible_secret(value: str, key: str | None, quoted: bool, expected: bool) -> None:
    assert plausible_secret(value, key, quoted=quoted) is expected


def test_base64_pem_is_a_secret_only_for_private_keys() -> None:
    import base64

    private = base64.b64encode(b"-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA").decode()
    certificate = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIDdzCCAl+gAwIBAgIE").decode()
    assert is_private_pem(private) and not is_private_pem(certificate)
    assert scan_text(f"key_b64: {private}") == {SECRET: 1}
    assert SECRET not in scan_text(f"cert_b64: {certificate}")


@pytest.mark.parametrize(
    ("text", "secret"),
    [("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY1xAMPLEKEY", True),
     ("export AWS_SECRET_ACCESS_KEY=ded7db27a4558e2ea9bbf0bf36ae0e8521618f366c", False)],  # 42 characters: not AWS's format
)
def test_vendor_named_keys_hold_that_vendors_format(text: str, secret: bool) -> None:
    assert (SECRET in scan_text(text)) is secret


@pytest.mark.parametrize("name", [name for name, _ in SECRET_GATES])
def test_every_secret_gate_compiles_alone(name: str) -> None:
    assert gate_set(tuple(g for g in SECRET_GATES if g[0] == name))("") == frozenset()
