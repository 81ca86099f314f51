"""Checksums and issuer rules that tell a real number from a lookalike: cards, IBANs, US SSNs."""

from __future__ import annotations

#: (lowest, highest) issuer prefix of a given width -> the card lengths that scheme issues
_CARD_RANGES: tuple[tuple[int, int, int, range], ...] = (
    (4, 4, 1, range(13, 20, 3)),  # Visa: 13, 16, 19
    (51, 55, 2, range(16, 17)), (2221, 2720, 4, range(16, 17)),  # Mastercard
    (34, 34, 2, range(15, 16)), (37, 37, 2, range(15, 16)),  # Amex
    (6011, 6011, 4, range(16, 20)), (644, 649, 3, range(16, 20)), (65, 65, 2, range(16, 20)),  # Discover
    (3528, 3589, 4, range(16, 20)),  # JCB
    (300, 305, 3, range(14, 20)), (36, 36, 2, range(14, 20)), (38, 39, 2, range(14, 20)),  # Diners Club
    (62, 62, 2, range(16, 20)),  # UnionPay
    (50, 50, 2, range(12, 20)), (56, 58, 2, range(12, 20)),  # Maestro (5018, 5020, 5038, 56-58…)
    (6304, 6304, 4, range(12, 20)), (6759, 6759, 4, range(12, 20)), (6761, 6763, 4, range(12, 20)),
)  # fmt: skip


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) checksum every payment card number carries."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _card_issuer_ok(digits: str) -> bool:
    return any(
        low <= int(digits[:width]) <= high and len(digits) in lengths
        for low, high, width, lengths in _CARD_RANGES
    )


_IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24,
    "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21, "LT": 20,
    "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18,
    "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24,
    "SI": 19, "SK": 24, "SM": 27, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}  # fmt: skip


def iban_ok(iban: str) -> bool:
    """Country length and the ISO 13616 mod-97 check of an IBAN (spaces allowed)."""
    compact = iban.replace(" ", "").upper()
    if _IBAN_LENGTHS.get(compact[:2]) != len(compact) or not compact.isalnum():
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def ssn_ok(ssn: str) -> bool:
    """US SSN rules: no area 000, 666 or 900-999, no group 00, no serial 0000."""
    digits = ssn.replace("-", "").replace(" ", "")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"
