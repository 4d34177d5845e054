"""Check digits of cards and IBANs and the SSA's never-issued SSN ranges."""

from __future__ import annotations

import pytest

from ingest.checksums import IBAN_LENGTHS, card_checks, iban_checks, ssn_valid


@pytest.mark.parametrize(
    ("digits", "ok"),
    [("4111111111111111", True), ("4012888888881881", True), ("378282246310005", True), ("5555555555554444", True),
     ("2223003122003222", True), ("6011111111111117", True), ("3530111333300000", True), ("30569309025904", True),
     ("6304000000000000", True), ("630400000001", False),
     ("4111111111111112", False), ("9111111111111119", False), ("378282246310006", False),
     ("4111111111111", False), ("411111111111111111111", False), ("5555 5555 5555 4444", False)],
)
def test_card_checks(digits: str, ok: bool) -> None:
    assert card_checks(digits) is ok


def _with_check_digit(body: str) -> str:
    """``body`` plus the digit that makes it pass Luhn."""
    return next(body + d for d in "0123456789" if card_checks(body + d) or not _luhn_fails(body + d))


def _luhn_fails(number: str) -> bool:
    total = sum(int(c) if i % 2 == 0 else sum(divmod(int(c) * 2, 10)) for i, c in enumerate(reversed(number)))
    return total % 10 != 0


def test_twelve_digit_maestro_and_luhn_boundary() -> None:
    maestro = _with_check_digit("63040000000")
    assert len(maestro) == 12 and card_checks(maestro)
    wrong = maestro[:-1] + str((int(maestro[-1]) + 1) % 10)
    assert not card_checks(wrong)


def test_card_checks_needs_both_luhn_and_issuer() -> None:
    luhn_ok_unknown_issuer = "9999999999999995"
    assert not card_checks(luhn_ok_unknown_issuer)
    assert not card_checks("4111111111111110")  # Visa prefix, Luhn fails


@pytest.mark.parametrize(
    ("iban", "ok"),
    [("GB82WEST12345698765432", True), ("DE89370400440532013000", True), ("FR1420041010050500013M02606", True),
     ("NL91ABNA0417164300", True), ("GB82WEST12345698765433", False), ("GB82WEST1234569876543", False),
     ("XX82WEST12345698765432", False), ("GB82 WEST 1234 5698 7654 32", False)],
)
def test_iban_checks(iban: str, ok: bool) -> None:
    assert iban_checks(iban) is ok


def test_iban_lengths_are_plausible() -> None:
    assert all(len(code) == 2 and code.isupper() and 15 <= n <= 34 for code, n in IBAN_LENGTHS.items())
    assert IBAN_LENGTHS["NO"] == 15 and IBAN_LENGTHS["GB"] == 22


@pytest.mark.parametrize(
    ("parts", "ok"),
    [(("536", "22", "1234"), True), (("000", "22", "1234"), False), (("666", "22", "1234"), False),
     (("900", "22", "1234"), False), (("536", "00", "1234"), False), (("536", "22", "0000"), False)],
)
def test_ssn_valid(parts: tuple[str, str, str], ok: bool) -> None:
    assert ssn_valid(*parts) is ok
