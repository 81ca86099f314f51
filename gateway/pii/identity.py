"""Scanners for identity documents: national ID and tax numbers (checked by stdnum), passport numbers.

A number whose shape and checksum are rare enough counts on its own: the Italian codice fiscale, the
Spanish DNI and NIE (a check letter), the French NIR (a mod-97 key over 13 digits). Plain digit runs
whose checksum one random number in ten or eleven passes (German Steuer-ID, Dutch BSN, Polish PESEL,
Portuguese NIF) count only after a word that names them, as passport numbers do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from stdnum.de import idnr
from stdnum.es import dni, nie
from stdnum.fr import nir
from stdnum.it import codicefiscale
from stdnum.nl import bsn
from stdnum.pl import pesel
from stdnum.pt import nif

from gateway.pii.findings import Finding
from gateway.pii.text import _before, _char, _Text, field_name

_NIR = re.compile(r"[12] ?\d\d ?\d\d ?(?:\d\d|2[AB]) ?\d{3} ?\d{3} ?\d\d")
#: plain digit numbers and the words that name each (lowercase, in the country's language and English)
_CUED_NUMBERS: tuple[tuple[re.Pattern[str], Callable[[str], bool], re.Pattern[str]], ...] = (
    (
        re.compile(r"\d{2} ?\d{3} ?\d{3} ?\d{3}"),
        idnr.is_valid,
        re.compile(
            r"steuer[-_ ]?id|steuer[-_ ]?identifikationsnummer|identifikationsnummer|idnr|tax[-_ ]?id|\btin\b"
        ),
    ),
    (
        re.compile(r"\d{4}\.?\d{2}\.?\d{3}|\d{9}"),
        bsn.is_valid,
        re.compile(r"bsn\b|burgerservicenummer|sofi-?nummer|citizen[-_ ]service[-_ ]number"),
    ),
    (re.compile(r"\d{11}"), pesel.is_valid, re.compile(r"pesel")),
    (
        re.compile(r"\d{3} ?\d{3} ?\d{3}"),
        nif.is_valid,
        re.compile(r"nif\b|\bnipc\b|contribuinte|n[uú]mero de identifica[cç][aã]o fiscal|tax[-_ ]?id"),
    ),
)
_PASSPORT_WORD = re.compile(
    r"passport|passeport|reisepass|pasaporte|passaporto|passaporte|paspoort|paszport|pass-?nr|passnummer"
)
#: what may stand between the word and the number: "number", "no.", "Nr.", "n°", "numéro", ":"
_PASSPORT_GAP = re.compile(
    r"(?:'s|s|u|a|es|e|[-_ ]?nummer|[-_ ]?nr|[-_ ]?no)?\.?[\"']?"
    # "le passeport du voyageur est 22…", "the passport on file is …": a few words, then a verb
    r"(?:(?:\s+[a-zà-ÿ'’]{1,12}){0,3}?\s+(?:is|was|est|ist|lautet|es|era|é|è|jest|to|wynosi)\b)?"
    r"(?:\s{1,2}(?:[a-zäöüéèàíóú]{1,6}\s){1,3}(?=nummer|numer|number|num[ée]ro|número|nr|no\b))?\s{0,2}"
    r"(?:(?:nummer|numer|number|numéro|numero|número|num|nr|no|n\.?\s?[°º]|n\.|#)\.?\s{0,2})?"
    r"[\s:#=\"']{0,4}"
)
_PASSPORT_FIELD = re.compile(
    r"(?:.*[_ -])?(?:" + _PASSPORT_WORD.pattern + r")(?:[_ -]?(?:no|nr|number|nummer|numero|id))?"
)
_PASSPORT_NUMBER = re.compile(r"[A-Z0-9]{6,9}(?![\w-])")


def _bounded(text: str, start: int, end: int) -> bool:
    """Not part of a longer word or number (nor of a decimal or a dashed code)."""
    before, after = _char(text, start - 1), _char(text, end)
    return not (before.isalnum() or before in "_-./" or after.isalnum() or after == "_")


def _scan_national_id(t: _Text) -> Iterator[Finding]:
    text = t.text
    for tail_start, end in t.codice_fiscale_tails:
        start = tail_start - 7  # six letters of surname and name, the first digit of the year
        head = text[max(0, start) : tail_start - 1]
        shaped = start >= 0 and head.isascii() and head.isalpha() and head.isupper()
        if shaped and _bounded(text, start, end) and codicefiscale.is_valid(text[start:end]):
            yield Finding("national_id", start, end, text[start:end])
    yield from _scan_nino(t)
    for start, end in t.numbers:
        end = start + len(text[start:end].rstrip(" .()-"))
        compact = text[start:end].replace(" ", "").replace(".", "")
        if not compact.isdigit():
            continue
        yield from _spanish_id(text, start, end)
        if len(compact) == 15:
            for m in _NIR.finditer(text, start, end):
                if _bounded(text, m.start(), m.end()) and nir.is_valid(m.group()):
                    yield Finding("national_id", m.start(), m.end(), m.group())
        elif len(compact) in (9, 11) and _bounded(text, start, end):
            window = _before(t.lower, start, 48)
            name = field_name(text, start)
            for pattern, validate, cue in _CUED_NUMBERS:
                whole = pattern.fullmatch(text, start, end)
                cued = cue.search(window) or (name is not None and cue.search(name))
                if whole and cued and validate(whole.group()):
                    yield Finding("national_id", start, end, whole.group())
                    break


#: a UK National Insurance number: two prefix letters (not D, F, I, Q, U, V; the second not O), six
#: digits, a suffix A to D; written in pairs (QQ 12 34 56 C) it counts on its own, compact after a cue
_NINO = re.compile(
    r"(?<![\w-])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r"(?P<sp> ?)\d\d(?P=sp)\d\d(?P=sp)\d\d(?P=sp)[A-D](?![\w-])"
)
_NINO_CUE = re.compile(r"national[-_ ]insurance|\bnino\b|\bni[-_ ]?(?:number|no\b|nr\b)")


_NINO_NEEDLES = ("insurance", "nino", "ni n", "ni_", "ni-")


def _scan_nino(t: _Text) -> Iterator[Finding]:
    """In pairs from the digit runs (``JG 10 37 59 A``); compact only within 40 characters of a cue."""
    text = t.text
    for start, _ in t.numbers:
        m = _NINO.match(text, start - 3)
        if start >= 3 and m and m.group("sp"):
            yield Finding("national_id", m.start(), m.end(), m.group())
    for needle in _NINO_NEEDLES:
        for at in t.find_all(needle):
            for m in _NINO.finditer(text, at, at + 60):
                if not m.group("sp") and _NINO_CUE.search(_before(t.lower, m.start(), 40)):
                    yield Finding("national_id", m.start(), m.end(), m.group())


def _spanish_id(text: str, start: int, end: int) -> Iterator[Finding]:
    """A DNI (12345678Z) or NIE (X1234567L) around a digit run of 8 or 7 digits: its letters
    outside the run, a space or dash allowed between."""
    digits = text[start:end]
    if not digits.isdigit() or len(digits) not in (7, 8):
        return
    letter_at = end + (_char(text, end) in " -")
    if not ("A" <= _char(text, letter_at) <= "Z") or _char(text, letter_at + 1).isalnum():
        return
    first = start
    if len(digits) == 7:
        first = start - 1 - (_char(text, start - 1) in " -")
        if _char(text, first) not in "XYZ":
            return
    value = text[first : letter_at + 1]
    bounded = not _char(text, first - 1).isalnum() and _char(text, first - 1) not in "_-./"
    if bounded and (nie if len(digits) == 7 else dni).is_valid(value):
        yield Finding("national_id", first, letter_at + 1, value)


def _scan_passport(t: _Text) -> Iterator[Finding]:
    """A passport number (6 to 9 capitals and digits, at least two digits) right after a word for
    passport in one of the supported languages."""
    text = t.text
    for at in t.find_all("pas"):  # shared with the password scanner
        if t.lower.endswith("reise", 0, at):
            at -= 5
        word = _PASSPORT_WORD.match(t.lower, at)
        if word and not _char(t.lower, at - 1).isalpha():
            gap = _PASSPORT_GAP.match(t.lower, word.end())
            end = gap.end() if gap else word.end()
            number = _PASSPORT_NUMBER.match(text, end)
            if number and sum(map(str.isdigit, number.group())) >= 2 and not _char(text, end - 1).isalnum():
                yield Finding("passport", number.start(), number.end(), number.group())
            elif word and not number:
                yield from _passport_column(text, word.end())


def _passport_column(text: str, word_end: int) -> Iterator[Finding]:
    """Passport numbers under a CSV header field named for a passport."""
    line_end = text.find("\n", word_end)
    if line_end == -1:
        return
    at = line_end + 1
    for _ in range(200):
        row_end = text.find("\n", at)
        row_end = len(text) if row_end == -1 else row_end
        for m in _PASSPORT_NUMBER.finditer(text, at, row_end):
            if _char(text, m.start() - 1).isalnum() or sum(map(str.isdigit, m.group())) < 2:
                continue
            name = field_name(text, m.start())
            if name is not None and _PASSPORT_FIELD.fullmatch(name):
                yield Finding("passport", m.start(), m.end(), m.group())
        if row_end >= len(text):
            return
        at = row_end + 1
