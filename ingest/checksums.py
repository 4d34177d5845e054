"""Check digits and number plans of structured identifiers: payment cards, IBANs, US SSNs.

Contract: pure functions over strings already cut out of text by
``ingest.sensitive``; each says whether the string can be a real identifier.
Cards: Luhn plus a known issuer prefix at one of that issuer's lengths (JCB as
``35`` plus 14-17 digits, the common validator rule). IBAN: the country's length
(ISO 13616 registry) and ISO 7064 mod 97-10. SSN: none of the values the SSA
never issues (area 000, 666 or 900-999; group 00; serial 0000).
"""

from __future__ import annotations

__all__ = ["IBAN_LENGTHS", "card_checks", "iban_checks", "ssn_valid"]

#: IBAN length per country code
IBAN_LENGTHS: dict[str, int] = dict(
    (c[:2], int(c[2:])) for c in (
        "AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24 DE22 DJ27 DK18 DO28 EE20 "
        "EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 IE22 IL23 IQ23 IS26 IT27 JO30 "
        "KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31 MU30 NI28 NL18 NO15 OM23 "
        "PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23 ST25 SV28 TL23 TN24 TR26 "
        "UA29 VA22 VG24 XK20 YE30"
    ).split()
)

# issuer prefix ranges (inclusive, compared on the first len(lo) digits) and the lengths each issues
_ISSUERS: tuple[tuple[str, str, frozenset[int]], ...] = tuple(
    (lo, hi, frozenset(lengths)) for lo, hi, lengths in (
        ("4", "4", (13, 16, 19)),                       # Visa
        ("51", "55", (16,)), ("2221", "2720", (16,)),   # Mastercard
        ("34", "34", (15,)), ("37", "37", (15,)),       # American Express
        ("6011", "6011", range(16, 20)), ("644", "649", range(16, 20)), ("65", "65", range(16, 20)),  # Discover
        ("35", "35", range(16, 20)), ("1800", "1800", (15,)), ("2131", "2131", (15,)),           # JCB
        ("300", "305", range(14, 20)), ("3095", "3095", range(14, 20)), ("36", "36", range(14, 20)),
        ("38", "39", range(14, 20)),                    # Diners Club
        ("62", "62", range(16, 20)), ("81", "81", range(16, 20)),  # UnionPay
        ("2200", "2204", range(16, 20)),                # Mir
        ("5018", "5018", range(12, 20)), ("5020", "5020", range(12, 20)), ("5038", "5038", range(12, 20)),
        ("56", "58", range(12, 20)), ("5893", "5893", range(12, 20)), ("6304", "6304", range(12, 20)),
        ("6759", "6759", range(12, 20)), ("6761", "6763", range(12, 20)),  # Maestro
    )
)


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        n = ord(ch) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def card_checks(digits: str) -> bool:
    """Whether a digit string is a plausible card number: 12-19 digits, issuer prefix and length, Luhn.

    >>> card_checks("4111111111111111"), card_checks("4111111111111112"), card_checks("9111111111111111")
    (True, False, False)
    """
    if not 12 <= len(digits) <= 19 or not digits.isdigit():
        return False
    issuer = any(lo <= digits[: len(lo)] <= hi and len(digits) in lengths for lo, hi, lengths in _ISSUERS)
    return issuer and _luhn(digits)


def iban_checks(iban: str) -> bool:
    """Whether a compact upper-case IBAN has its country's length and passes mod 97.

    >>> iban_checks("GB82WEST12345698765432"), iban_checks("GB82WEST12345698765433")
    (True, False)
    """
    if IBAN_LENGTHS.get(iban[:2]) != len(iban) or not iban.isalnum():
        return False
    try:
        return int("".join(str(int(c, 36)) for c in iban[4:] + iban[:4])) % 97 == 1
    except ValueError:
        return False


def ssn_valid(area: str, group: str, serial: str) -> bool:
    """Whether the three parts of a US SSN are in ranges the SSA issues.

    >>> ssn_valid("123", "45", "6789"), ssn_valid("666", "45", "6789"), ssn_valid("912", "45", "6789")
    (True, False, False)
    """
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
