"""Scanners for numbers found in the digit runs: payment cards, IBANs, US SSNs, IP addresses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

from gateway.pii.findings import Finding
from gateway.pii.text import _char, _Text
from gateway.pii.validators import _IBAN_LENGTHS, _card_issuer_ok, iban_ok, luhn_ok, ssn_ok

# --- numbers with checksums ------------------------------------------------------------------------

_CARD = re.compile(
    r"\d(?:\d{12,18}"
    r"|\d{3}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,4}(?:(?P=sep)\d{1,3})?"  # 4-4-4-4(-3)
    r"|\d{3}\.\d{4}\.\d{4}\.\d{4}(?:\.\d{3})?"  # dotted: full groups only, never 1.2.3.4 or 12.5
    r"|\d{3}(?P<amex>[ .-])\d{6}(?P=amex)\d{4,5})"  # Amex 4-6-5, Diners 4-6-4
)


def _scan_credit_card(t: _Text) -> Iterator[Finding]:
    text = t.text
    for m in t.in_numbers(_CARD):
        before, after = _char(text, m.start() - 1), _char(text, m.end())
        if before.isalnum() or before in "_-.+/$" or after.isalnum() or after == "_":
            continue
        if after in "-./" and _char(text, m.end() + 1).isdigit():
            continue
        digits = m.group().replace(" ", "").replace("-", "").replace(".", "")
        if _card_issuer_ok(digits) and luhn_ok(digits):
            yield Finding("credit_card", m.start(), m.end(), m.group())


#: any case (gb82 west 1234 …): the country length and mod 97 are checked on the upper-cased value
_IBAN = re.compile(r"[A-Za-z]{2}\d\d(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,3})?")
#: an IBAN's check digits after its country, found from the digits: a pattern that starts with any
#: letter tries nearly every character of prose, one that starts with a digit skips ahead
_IBAN_CHECK_DIGITS = re.compile(r"[0-9](?<=[A-Za-z]{2}[0-9])[0-9]")


def _scan_iban(t: _Text) -> Iterator[Finding]:
    """IBANs around long digit runs: every real BBAN has one (the account number).

    A run cannot cross the letters of an IBAN's head, so the IBAN's first run starts after its head, at
    most 42 characters on (34 characters and the spaces between groups), or on its check digits. Each
    head there is tried on its own, so a lookalike just before ("ab12 de89 …") cannot swallow the real
    head into a longer match that then fails.
    """
    text = t.text
    for window_start, window_end in _iban_head_windows(t.numbers):
        for check in _IBAN_CHECK_DIGITS.finditer(text, window_start, window_end):
            head = check.start() - 2
            if not _char(text, head - 1).isalnum():
                m = _IBAN.match(text, head)  # not cut at the window: the rest of the IBAN is after it
                if m:
                    yield from _iban_finding(text, m)


def _iban_head_windows(numbers: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """Where an IBAN's check digits can be for each digit run, overlapping windows merged."""
    current: tuple[int, int] | None = None
    for start, _ in numbers:
        if current and start - 42 <= current[1]:
            current = (current[0], start + 2)
            continue
        if current:
            yield current
        current = (max(0, start - 42), start + 2)
    if current:
        yield current


def _iban_finding(text: str, m: re.Match[str]) -> Iterator[Finding]:
    length = _IBAN_LENGTHS.get(m.group()[:2].upper())
    if length is not None:
        end, seen = m.start(), 0
        while end < m.end() and seen < length:  # stop at the country's length: a word may follow
            seen += text[end] != " "
            end += 1
        if seen == length and not _char(text, end).isalnum() and iban_ok(text[m.start() : end]):
            yield Finding("iban", m.start(), end, text[m.start() : end])


_SSN = re.compile(r"\d\d\d(?P<sep>[- ]?)\d\d(?P=sep)\d\d\d\d")
_SSN_WORD = re.compile(r"\b(?:ssn|ss#|social security)")


def _scan_ssn(t: _Text) -> Iterator[Finding]:
    text = t.text
    for m in t.in_numbers(_SSN):
        before, after = _char(text, m.start() - 1), _char(text, m.end())
        if before.isalnum() or before in "_-.+/$#" or after.isalnum() or after == "_":
            continue
        if after in "-." and _char(text, m.end() + 1).isdigit():
            continue
        if m.group("sep") != "-" and not _SSN_WORD.search(t.lower, max(0, m.start() - 40), m.start()):
            continue  # 123 45 6789 and 123456789 are only an SSN when the text says so
        if ssn_ok(m.group()):
            yield Finding("us_ssn", m.start(), m.end(), m.group())


# --- network ---------------------------------------------------------------------------------------

_IPV4 = re.compile(r"\d\d{0,2}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_VERSION_WORD = re.compile(
    r"\b(?:version|ver|v|release|rel|build|firmware|section|chapter|clause|step|rule|item|oid)\.?\s*\Z"
)
_IPV6_TAIL = re.compile(r":[0-9A-Fa-f]{0,4}:[0-9A-Fa-f:.]{0,40}")
_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


def _ipv4_ok(t: _Text, m: re.Match[str]) -> bool:
    text = t.text
    before, after = _char(text, m.start() - 1), _char(text, m.end())
    if before.isalnum() or before in "_.-" or after.isalnum() or after == "_":
        return False
    if after in ".-" and _char(text, m.end() + 1).isalnum():
        return False  # 1.2.3.4.5, an OID or a longer version
    octets = m.group().split(".")
    if any(len(octet) > 1 and octet[0] == "0" or int(octet) > 255 for octet in octets):
        return False
    return not _VERSION_WORD.search(t.lower, max(0, m.start() - 16), m.start())


def _scan_ip(t: _Text) -> Iterator[Finding]:
    for m in t.in_numbers(_IPV4):
        if _ipv4_ok(t, m):
            yield Finding("ip_address", m.start(), m.end(), m.group())
    text = t.text
    for m in _IPV6_TAIL.finditer(text):
        start = m.start()
        while start > 0 and m.start() - start < 4 and text[start - 1] in _HEX_CHARS:
            start -= 1
        candidate = text[start : m.end()].rstrip(".")
        if not candidate.endswith("::"):
            candidate = candidate.rstrip(":")
        end = start + len(candidate)
        before = _char(text, start - 1)
        if before.isalnum() or before in "_:." or _char(text, end).isalnum() or candidate.count(":") < 2:
            continue
        if not any(map(str.isdigit, candidate)):
            continue  # dead::beef, Foo::Bar: code, not an address
        try:
            ipaddress.IPv6Address(candidate)
        except ValueError:
            continue
        yield Finding("ip_address", start, end, candidate)
