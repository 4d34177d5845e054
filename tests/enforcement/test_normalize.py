"""enforcement.normalize: the forms of a raw value that rules read."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enforcement.normalize import canonical, decode, variants


@pytest.mark.parametrize(
    ("raw", "form", "decoded"),
    [
        ("%27%20OR%201%3D1", False, "' OR 1=1"),
        ("%2527", False, "'"),
        ("%252527", False, "%27"),
        ("a+b", True, "a b"),
        ("a+b", False, "a+b"),
        ("%2B", True, "+"),
        ("%u003cscript%u003e", False, "<script>"),
        ("&lt;svg&#x20;onload&#61;x&gt;", False, "<svg onload=x>"),
        ("\\u003cimg\\x3e\\/", False, "<img>/"),
        ("\uff1cscript\uff1e", False, "<script>"),
        ("%c0%ae%c0%ae%c0%af", False, "../"),
        ("ab%00c\x00d", False, "abcd"),
    ],
    ids=["percent", "double", "bounded", "plus-form", "plus-path", "encoded-plus", "iis-u", "entities", "js-escapes", "fullwidth", "overlong-utf8", "null-bytes"],
)
def test_decode(raw: str, form: bool, decoded: str) -> None:
    assert decode(raw, 2, form) == decoded


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1/**/UNION/**/SELECT", "1 UNION SELECT"), ("/*!50000SELECT*/ 1", "SELECT 1"), ("a\t\n  b", "a b"), ("plain text", "plain text")],
)
def test_canonical(text: str, expected: str) -> None:
    assert canonical(text).strip() == expected


def test_safe_values_come_back_as_they_are() -> None:
    for value in ("orders", "2024-01-01", "Jane Doe", "a/b.c", "user@example.org"):
        assert variants(value) == (value,)


def test_variants_are_decoded_first_then_canonical_then_raw() -> None:
    assert variants("1%2F**%2FOR%2F**%2F1") == ("1/**/OR/**/1", "1 OR 1", "1%2F**%2FOR%2F**%2F1")


@given(st.text(max_size=40))
@settings(max_examples=300, deadline=None)
def test_variants_are_distinct_and_start_with_the_decoded_form(value: str) -> None:
    forms = variants(value)
    assert len(set(forms)) == len(forms) >= 1
    assert forms[0] == decode(value) or forms == (value,)
