"""Sensitive-data detection: every type has hits and near-miss misses; field names add context; no value is kept."""

from __future__ import annotations

import time

import pytest

from ingest.sensitive import (
    CARD, DOB, EMAIL, IBAN, IP, JWT, NATIONAL_ID, PHONE, SECRET, SENSITIVE_TYPES, SSN,
    count_sensitive, is_id_name, leaf_info, name_type, scan_spans, scan_text,
)


HITS = [
    # email
    ("write to jane.doe+news@example.co.uk today", EMAIL),
    ("mailto:ops@corp.example", EMAIL),
    # phone: international, US, and local forms next to a phone word
    ("reach us on +44 20 7946 0958", PHONE),
    ("+1-903-140-4508x769", PHONE),
    ("office (555) 234-5678", PHONE),
    ("555.234.5678", PHONE),
    ("001-518-640-0854", PHONE),
    ("please call me at 0494 92 82 32", PHONE),
    ("Mobile: 03.93.92.16.85", PHONE),
    ("Fax: 9498777106", PHONE),
    ("082 490 1693-Office", PHONE),
    # card: several issuers, separators
    ("card 4111 1111 1111 1111 exp 12/29", CARD),
    ("4111-1111-1111-1111", CARD),
    ("amex 378282246310005", CARD),
    ("mc 5555555555554444", CARD),
    ("discover 6011111111111117", CARD),
    ("jcb 3530111333300000", CARD),
    ("diners 30569309025904", CARD),
    ("maestro 6304000000000000", CARD),
    # iban
    ("IBAN GB82 WEST 1234 5698 7654 32, thanks", IBAN),
    ("DE89370400440532013000", IBAN),
    ("gb82west12345698765432", IBAN),
    # ssn
    ("SSN 536-22-1234", SSN),
    ("536 22 1234", SSN),
    ("social security number: 536221234", SSN),
    # national id
    ("NI number AB 12 34 56 C", NATIONAL_ID),
    ("JG103759A", NATIONAL_ID),
    # ip
    ("from 203.0.113.7 at noon", IP),
    ("peer 2001:db8::1 connected", IP),
    ("fe80::1ff:fe23:4567:890a", IP),
    # jwt
    ("Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlX2J5dGVz", JWT),
]

MISSES = [
    # email near misses
    ("icon@2x.png", EMAIL),
    ("user@localhost", EMAIL),
    ("npm i @types/node@18.0.1", EMAIL),
    ("postgres://app:s3cr3tPw@db.internal:5432/app", EMAIL),
    # phone near misses: dates, times, ids and order numbers without a phone word
    ("created 2024-03-01T10:11:12Z", PHONE),
    ("born 12/05/1983", PHONE),
    ("order number 123456789", PHONE),
    ("invoice 2023-0042-1777", PHONE),
    ("ticket 4673 3951 opened", PHONE),
    ("call stack depth 12", PHONE),
    ("phone 2024-03-01", PHONE),
    # card near misses: Luhn failure, unknown issuer, wrong length, hex bytes, too short
    ("4111111111111112", CARD),
    ("9111111111111119", CARD),
    ("41111111111111111", CARD),
    ("57 68 61 74 20 69 73 20 61 20 74 65 73 74", CARD),
    ("4111 1111 111", CARD),
    ("order 1234-5678-9012-3456", CARD),
    # iban near misses: bad check digits, unknown country, wrong length
    ("GB82WEST12345698765433", IBAN),
    ("XX82WEST12345698765432", IBAN),
    ("GB82WEST1234569876543", IBAN),
    # ssn near misses: never-issued ranges, bare digits without context, dates
    ("666-12-3456", SSN),
    ("912-12-3456", SSN),
    ("536-00-1234", SSN),
    ("536-22-0000", SSN),
    ("order 536221234", SSN),
    ("2023-01-15", SSN),
    # national id near misses: forbidden prefixes and suffixes
    ("BG123456A", NATIONAL_ID),
    ("DA123456A", NATIONAL_ID),
    ("AB123456E", NATIONAL_ID),
    # ip near misses
    ("256.1.1.1", IP),
    ("version 1.2.3", IP),
    ("at 10:11:12", IP),
    ("mac de:ad:be:ef:00:01", IP),
    ("01.02.03.04", IP),
    # jwt near misses: a payload that is not JSON, a single segment
    ("eyJ0eXAiOiAiVENWMiJ9.RkNWLXdXS3M1RVBfencxM4A0WmJzdVlCQzFj.OGY1OWRkNGMtYTUx", JWT),
    ("eyJhbGciOiJIUzI1NiJ9", JWT),
]


@pytest.mark.parametrize(("text", "kind"), HITS, ids=[f"{k}:{t[:24]}" for t, k in HITS])
def test_detector_hits(text: str, kind: str) -> None:
    assert scan_text(text).get(kind) == 1, scan_spans(text)


@pytest.mark.parametrize(("text", "kind"), MISSES, ids=[f"{k}:{t[:24]}" for t, k in MISSES])
def test_detector_misses(text: str, kind: str) -> None:
    assert kind not in scan_text(text), scan_spans(text)


def test_spans_are_sorted_typed_and_do_not_overlap() -> None:
    text = "a@example.org 4111111111111111 +44 20 7946 0958 10.0.0.1 " * 3
    spans = scan_spans(text)
    assert [s.start for s in spans] == sorted(s.start for s in spans)
    assert all(a.end <= b.start for a, b in zip(spans, spans[1:]))
    assert {s.type for s in spans} == {EMAIL, CARD, PHONE, IP}
    assert all(s.type in SENSITIVE_TYPES for s in spans)


def test_overlap_keeps_the_higher_priority_type() -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSJ9.c2lnbmF0dXJlX2J5dGVz"
    assert scan_text(f"Authorization: Bearer {token}") == {JWT: 1}
    assert scan_text("postgres://app:s3cr3tPw@db.example.com/app") == {SECRET: 1}


@pytest.mark.parametrize(
    ("name", "kind"),
    [("password", SECRET), ("userPassword", SECRET), ("AWS_SECRET_ACCESS_KEY", SECRET), ("client_secret", SECRET),
     ("api_key", SECRET), ("apiKey", SECRET), ("access_token", SECRET), ("passwd", SECRET), ("ado_pat", SECRET),
     ("dob", DOB), ("date_of_birth", DOB), ("birthDate", DOB), ("ssn", SSN), ("card_number", CARD),
     ("creditCard", CARD), ("iban", IBAN), ("passport_number", NATIONAL_ID), ("driver_license", NATIONAL_ID),
     ("phone", PHONE), ("mobile", PHONE), ("home_phone", PHONE), ("email", EMAIL), ("client_ip", IP),
     ("max_tokens", None), ("nextPageToken", None), ("token_type", None), ("key", None), ("bypass", None),
     ("hotel", None), ("ship", None), ("passport_office_city", None), ("name", None), ("", None)],
)
def test_name_type(name: str, kind: str | None) -> None:
    assert name_type(name) == kind


@pytest.mark.parametrize(
    ("name", "is_id"),
    [("id", True), ("user_id", True), ("userId", True), ("objectID", True), ("uuid", True), ("order_uuid", True),
     ("ids", True), ("user_ids", True), ("guid", True), ("ID", True),
     ("paid", False), ("valid", False), ("grid", False), ("idle", False), ("identity", False), ("", False)],
)
def test_is_id_name(name: str, is_id: bool) -> None:
    assert is_id_name(name) is is_id


def test_leaf_info_reads_the_last_path_segment() -> None:
    assert leaf_info("data[].user.password") == ("password", SECRET, False)
    assert leaf_info("items[].user_ids[]") == ("user_ids", None, True)
    assert leaf_info("") == ("", None, False)


@pytest.mark.parametrize(
    ("leaves", "expected"),
    [
        ([("user.password", "hunter22")], {SECRET: 1}),
        ([("password", "")], {}),
        ([("password", "********")], {}),
        ([("dob", "1990-01-01")], {DOB: 1}),
        ([("card_number", "**** **** **** 4242")], {}),
        ([("card_number", "4111111111111111")], {CARD: 1}),
        ([("id", 4111111111111111)], {}),
        ([("order_id", "4111111111111111")], {}),
        ([("phone", "0490 75 40 81")], {PHONE: 1}),
        ([("note", "0490 75 40 81")], {}),
        ([("ssn", "536221234")], {SSN: 1}),
        ([("email", "a@example.org")], {EMAIL: 1}),
        ([("max_tokens", 1024), ("count", 3), ("ok", True), ("none", None)], {}),
        ([("a", "x@example.org"), ("b", "y@example.org"), ("c.ip", "10.1.2.3")], {EMAIL: 2, IP: 1}),
        ([("text", "mail a@example.org"), ("t2", "or b@example.org")], {EMAIL: 2}),
    ],
)
def test_count_sensitive_uses_field_names_as_context(leaves: list[tuple[str, object]], expected: dict[str, int]) -> None:
    assert count_sensitive(leaves) == expected  # type: ignore[arg-type]


def test_issuer_formats_in_json_leaves_count_as_secrets() -> None:
    """Prefixed issuer formats need no field name; their near misses (one character short) count nothing."""
    sonar, langsmith = "sq" + "p_" + "3e9a" * 10, "lsv2_" + "sk_" + "0f1e" * 8 + "_" + "a1b2c3d4e5"
    assert count_sensitive([("ci.analysis", sonar), ("tracing.note", langsmith)]) == {SECRET: 2}
    assert count_sensitive([("ci.analysis", sonar[:-1]), ("tracing.note", langsmith[:-1])]) == {}


def test_counts_are_by_type_only() -> None:
    counts = count_sensitive([("email", "a@example.org"), ("password", "hunter22"), ("msg", "card 4111111111111111")])
    assert counts == {EMAIL: 1, SECRET: 1, CARD: 1}
    assert all(isinstance(v, int) for v in counts.values())  # counts, never the values


@pytest.mark.parametrize(
    "text",
    ["a" * 100_000 + "@", "1 " * 50_000, "-" * 100_000, "password=" * 20_000, "+1" * 50_000, "eyJ" * 30_000,
     "::" * 50_000, "x.y." * 25_000, ("AB 12 " * 20_000), "okta: " * 20_000, "Jenkins-Crumb:" * 10_000,
     "/api/v1/" * 20_000, "a1Q~" * 30_000, "sonar.login=" * 10_000],
)
def test_adversarial_inputs_scan_in_linear_time(text: str) -> None:
    start = time.process_time()
    scan_spans(text)
    assert time.process_time() - start < 10.0  # a catastrophic backtrack would take minutes or more


def test_pre_pass_still_finds_candidates_at_the_end_of_a_long_text() -> None:
    # RE2 sets report nothing when their DFA runs out of memory: the budget must hold for a 1 MB body
    text = "The quick brown fox jumps over the lazy dog. " * 23_000 + "mail a@example.org, call +44 20 7946 0958"
    assert [s.type for s in scan_spans(text)] == [EMAIL, PHONE]


def test_text_without_candidate_characters_has_no_spans() -> None:
    assert scan_spans("Likes hiking and photography, based in Springfield. " * 50) == []


def test_equal_starts_keep_the_longer_match_of_the_first_finder() -> None:
    text = "Mobile: 0490 39 07 81\nDesk: 345-899-3560x4587"
    assert [text[s.start:s.end] for s in scan_spans(text)] == ["0490 39 07 81", "345-899-3560x4587"]


def test_us_number_after_an_international_one_is_found_once() -> None:
    text = "+1 415 555 1019 or (415) 555-1020"
    assert [text[s.start:s.end] for s in scan_spans(text)] == ["+1 415 555 1019", "(415) 555-1020"]
