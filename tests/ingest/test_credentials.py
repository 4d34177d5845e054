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
    pytest.param(fake("sq" + "u_", 40, HEX), id="sonarqube-user"),
    pytest.param(fake("sq" + "a_", 40, HEX), id="sonarqube-global"),
    pytest.param(fake("lsv2_" + "pt_", 32, HEX) + fake("_", 10, HEX, seed=4), id="langsmith"),
    pytest.param(fake("pplx" + "-", 48), id="perplexity"),
    pytest.param(fake("sb" + "p_", 40, HEX), id="supabase-pat"),
    pytest.param(fake("sb_" + "secret_", 32, ALNUM + "_-"), id="supabase-secret"),
    pytest.param(fake("EA" + "AA", 60, ALNUM + "_-"), id="square-access-token"),
    pytest.param(fake("CF" + "PAT-", 43, ALNUM + "_-"), id="contentful"),
    pytest.param(fake("duffel_" + "test_", 43, ALNUM + "_-"), id="duffel"),
    pytest.param(fake("EZ" + "AK", 54), id="easypost"),
    pytest.param(fake("FLWSECK" + "_TEST-", 32, HEX, suffix="-X"), id="flutterwave"),
    pytest.param(fake("pscale_" + "tkn_", 43, ALNUM + "_-"), id="planetscale"),
    pytest.param(fake("pn" + "u_", 36), id="prefect"),
    pytest.param(fake("rd" + "me_", 70, string.ascii_lowercase + string.digits), id="readme"),
    pytest.param(fake("shippo_" + "live_", 40, HEX), id="shippo"),
    pytest.param(fake("tf" + "p_", 59, ALNUM + "_-."), id="typeform"),
    pytest.param(fake("sntry" + "u_", 64, HEX), id="sentry-user"),
    pytest.param(fake("bk" + "ua_", 40, HEX), id="buildkite"),
    pytest.param(fake("CCIP" + "AT_", 22) + fake("_", 40, HEX, seed=2), id="circleci"),
    pytest.param(fake("pc" + "sk_", 70, ALNUM + "_"), id="pinecone"),
    pytest.param(fake("xa" + "i-", 80), id="xai"),
    pytest.param(fake("1/" + "/0", 60, ALNUM + "_-"), id="google-refresh-token"),
    pytest.param("access-" + "sandbox-" + "3f1c2a4e-8b7d-4c2e-9a1f-4b5c6d7e8f90", id="plaid"),
    pytest.param(fake("tskey-" + "auth-", 12) + fake("-", 30, seed=3), id="tailscale"),
    pytest.param(fake("ops_" + "eyJ", 120, ALNUM + "_-"), id="1password-service-account"),
    pytest.param(fake("nt" + "n_", 46), id="notion"),
    pytest.param(fake("secret" + "_", 43), id="notion-integration"),
    pytest.param(fake("pa" + "t", 14) + fake(".", 64, HEX, seed=5), id="airtable"),
    pytest.param("pat-" + "na1-" + "3f1c2a4e-8b7d-4c2e-9a1f-4b5c6d7e8f90", id="hubspot"),
    pytest.param(fake("IQoJb3JpZ2luX2" + "Vj", 200, ALNUM + "+/"), id="aws-sts-session-token"),
    pytest.param(fake("cmVmdGtuOjAx" + "Oj", 50), id="jfrog-reference-token"),
    pytest.param(fake("dG9r" + "Oj", 56, ALNUM, suffix="="), id="intercom"),
    pytest.param(fake("CLOJARS" + "_", 60, string.ascii_lowercase + string.digits), id="clojars"),
    pytest.param(fake("HR" + "KU-", 60, ALNUM + "_-"), id="heroku"),
    pytest.param(fake("s" + "k_", 48, HEX), id="elevenlabs"),
    pytest.param(fake("p8" + "e-", 32, ALNUM + "_-"), id="adobe-client-secret"),
    pytest.param(fake("dd" + "p_", 36), id="deno-deploy"),
    pytest.param(fake("glo" + "as-", 64, HEX), id="gitlab-oauth-secret"),
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
    pytest.param(fake("sq" + "u_", 39, HEX), id="sonarqube-too-short"),
    pytest.param(fake("sq" + "u_", 40, "0123456789ABCDEF"), id="sonarqube-upper-hex"),
    pytest.param(fake("pplx" + "-", 47), id="perplexity-too-short"),
    pytest.param(fake("EA" + "AA", 59, ALNUM), id="square-too-short"),
    pytest.param(fake("s" + "k_", 47, HEX), id="elevenlabs-too-short"),
    pytest.param("access-" + "staging-" + "3f1c2a4e-8b7d-4c2e-9a1f-4b5c6d7e8f90", id="plaid-unknown-environment"),
    pytest.param("pattern_matching_enabled_for_all_routes", id="pat-prefix-word"),
    pytest.param("secret_key_base_rotation_schedule", id="secret-prefix-word"),
    pytest.param(fake("IQoJb3JpZ2luX2" + "Vj", 40, ALNUM), id="aws-sts-prefix-too-short"),
    pytest.param(fake("HR" + "KU-", 12), id="heroku-too-short"),
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


INFIX_HITS = [
    pytest.param("-H 'Jenkins-Crumb:" + fake("", 32, HEX) + "'", fake("", 32, HEX), id="jenkins-crumb"),
    pytest.param("POST http://tb.example/api/v1/" + fake("", 19, string.ascii_lowercase) + "7/telemetry",
                 fake("", 19, string.ascii_lowercase) + "7", id="thingsboard-device-token"),
    pytest.param("access_token$" + "production$" + fake("", 16, string.ascii_lowercase + string.digits)
                 + fake("$", 32, HEX, seed=3), None, id="braintree"),
    pytest.param(fake("", 14) + ".atlas" + "v1." + fake("", 66, ALNUM + "_-", seed=4), None, id="terraform-cloud"),
    pytest.param(fake("AA" + "AA", 7, ALNUM + "_-") + ":APA9" + "1b" + fake("", 134, ALNUM + "_-", seed=6), None,
                 id="firebase-server-key"),
    pytest.param("client_id=x credential " + fake("", 3) + "8Q" + "~" + fake("", 34, ALNUM + "_.~-", seed=7), None,
                 id="entra-client-secret"),
]


@pytest.mark.parametrize(("text", "value"), INFIX_HITS)
def test_formats_keyed_by_an_infix_are_found(text: str, value: str | None) -> None:
    spans = list(vendor_tokens(text))
    assert len(spans) == 1 and scan_text(text) == {SECRET: 1}
    if value is not None:
        assert text[slice(*spans[0])] == value


INFIX_MISSES = [
    pytest.param("-H 'Jenkins-Crumb:" + fake("", 31, HEX) + "'", id="jenkins-crumb-too-short"),
    pytest.param("GET /api/v1/" + fake("", 20, string.ascii_lowercase) + "/telemetry", id="thingsboard-letters-only"),
    pytest.param("GET /api/v1/" + fake("", 19, ALNUM) + "/telemetry", id="thingsboard-too-short"),
    pytest.param("GET /api/v1/" + fake("", 20, ALNUM) + "/orders", id="other-api-path"),
    pytest.param(fake("", 11, ALNUM + "_-") + ":APA9" + "1b" + fake("", 134, ALNUM + "_-", seed=6),
                 id="firebase-device-registration-token"),
    pytest.param("abc8Q" + "~" + fake("", 12), id="entra-lookalike-too-short"),
]


@pytest.mark.parametrize("text", INFIX_MISSES)
def test_infix_near_misses_are_not_secrets(text: str) -> None:
    assert SECRET not in scan_text(text), list(secret_spans(text))


OKTA = fake("0" + "0", 40, ALNUM + "_-")
VENDOR_KEYED_HITS = [
    pytest.param('postmark: "3f1c2a4e-8b7d-4c2e-9a1f-4b5c6d7e8f90",', id="postmark-uuid"),
    pytest.param("sonar.login', '" + fake("", 40, HEX), id="sonar-login"),
    pytest.param("sonar.token=" + fake("", 40, HEX), id="sonar-token-property"),
    pytest.param(f'OKTA_CLIENT_TOKEN = "{OKTA}"', id="okta-token"),
    pytest.param(f"okta: {OKTA}", id="okta-yaml"),
    pytest.param("jenkins.api: 11" + fake("", 32, HEX), id="jenkins-api-token"),
    pytest.param(f"Authorization: SSWS {OKTA}", id="okta-ssws-header"),
]


@pytest.mark.parametrize("text", VENDOR_KEYED_HITS)
def test_prefixless_tokens_under_a_key_naming_their_vendor(text: str) -> None:
    assert scan_text(text) == {SECRET: 1}, list(secret_spans(text))


VENDOR_KEYED_MISSES = [
    pytest.param('"postmarkMessageId": "3f1c2a4e-8b7d-4c2e-9a1f-4b5c6d7e8f90"', id="postmark-message-id"),
    pytest.param("postmark: not-configured-yet", id="postmark-not-a-uuid"),
    pytest.param("sonarqube-scanner-2.5.0.tgz#" + fake("", 40, HEX), id="sonar-package-digest"),
    pytest.param("sonar.commit: " + fake("", 40, HEX), id="sonar-commit-sha"),
    pytest.param(f"okta: {OKTA}--", id="okta-too-long"),
    pytest.param("okta_token: " + "0" * 42, id="okta-zeros"),
    pytest.param("Authorization: SSWS " + "0" * 42, id="ssws-zeros"),
    pytest.param("jenkins_build: " + fake("", 34, HEX), id="jenkins-build-hash"),
]


@pytest.mark.parametrize("text", VENDOR_KEYED_MISSES)
def test_vendor_keyed_near_misses_are_not_secrets(text: str) -> None:
    assert SECRET not in scan_text(text), list(secret_spans(text))


@pytest.mark.parametrize(
    ("text", "value"),
    [('new DirectoryEntry("LDAP://dc.example.org", "EXAMPLE\\svc", "Wint3r-Lake")', "Wint3r-Lake"),
     ('$pw = ConvertTo-SecureString "Wint3r-Lake" -AsPlainText -Force', "Wint3r-Lake"),
     ("$pw = ConvertTo-SecureString -String 'Wint3r-Lake' -AsPlainText -Force", "Wint3r-Lake")],
)
def test_dotnet_and_powershell_credentials(text: str, value: str) -> None:
    assert [text[s:e] for s, e in secret_spans(text)] == [value]


@pytest.mark.parametrize(
    "text",
    ['new DirectoryEntry("LDAP://dc.example.org", "EXAMPLE\\svc", "$password")',
     '$pw = ConvertTo-SecureString "$env:SVC_PASSWORD" -AsPlainText -Force',
     "$pw = Read-Host -AsSecureString | ConvertTo-SecureString",
     'password = request.form["password"]'],
)
def test_variables_and_code_in_those_positions_are_not_secrets(text: str) -> None:
    assert SECRET not in scan_text(text), list(secret_spans(text))


def test_short_prefix_gates_need_the_whole_shape() -> None:
    """``pat``, ``sk_`` and ``secret_`` start common words: the vendor gate does not open on those words alone."""
    assert "vendor" not in gate_set(SECRET_GATES)("the path pattern of task_id and secret_key_base")


@pytest.mark.parametrize("name", [name for name, _ in SECRET_GATES])
def test_every_secret_gate_compiles_alone(name: str) -> None:
    assert gate_set(tuple(g for g in SECRET_GATES if g[0] == name))("") == frozenset()
