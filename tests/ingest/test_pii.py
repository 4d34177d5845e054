"""Personal-data finders: exact offsets, context hints, and greedy runs cut back to the real number."""

from __future__ import annotations

import pytest

from ingest import pii


def spans_text(text: str, spans: object) -> list[str]:
    return [text[s:e] for s, e in spans]  # type: ignore[attr-defined]


def test_email_offsets_exclude_surrounding_punctuation() -> None:
    text = '<a href="mailto:jane.doe@example.org">write</a>, (bob@mail.example.com).'
    assert spans_text(text, pii.emails(text)) == ["jane.doe@example.org", "bob@mail.example.com"]


def test_card_run_that_swallowed_the_next_number_is_cut_back() -> None:
    text = "card 4111 1111 1111 1111 2029 ok"
    assert spans_text(text, pii.cards(text)) == ["4111 1111 1111 1111"]


def test_phone_run_that_swallowed_an_ip_is_cut_back() -> None:
    text = "+44 20 7946 0958 10.0.0.1"
    assert spans_text(text, pii.phones(text, text.lower(), False)) == ["+44 20 7946 0958"]


@pytest.mark.parametrize("hinted", [True, False])
def test_local_phone_needs_a_phone_word_or_a_hint(hinted: bool) -> None:
    text = "0490 75 40 81"
    assert bool(list(pii.phones(text, text, hinted))) is hinted
    worded = "Tel: 0490 75 40 81"
    assert spans_text(worded, pii.phones(worded, worded.lower(), False)) == ["0490 75 40 81"]


def test_phone_word_must_be_a_whole_word() -> None:
    text = "Springfield 0490 75 40 81"  # "ring" inside a word is no context
    assert list(pii.phones(text, text.lower(), False)) == []


@pytest.mark.parametrize("hinted", [True, False])
def test_bare_ssn_needs_context_or_a_hint(hinted: bool) -> None:
    assert bool(list(pii.ssns("536221234", "536221234", hinted))) is hinted
    text = "SSN: 536221234"
    assert spans_text(text, pii.ssns(text, text.lower(), False)) == ["536221234"]


def test_iban_span_stops_at_the_country_length() -> None:
    text = "pay GB82 WEST 1234 5698 7654 32 before friday"
    assert spans_text(text, pii.ibans(text)) == ["GB82 WEST 1234 5698 7654 32"]


def test_ip_and_nino_spans() -> None:
    text = "peer 192.0.2.1, v6 2001:db8::8a2e:370:7334, NI AB 12 34 56 C."
    assert spans_text(text, pii.ips(text)) == ["192.0.2.1", "2001:db8::8a2e:370:7334"]
    assert spans_text(text, pii.ninos(text)) == ["AB 12 34 56 C"]


def test_phone_words_are_lower_case() -> None:
    assert all(w == w.lower() for w in pii.PHONE_WORDS)
