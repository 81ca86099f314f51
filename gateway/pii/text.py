"""The text under scan: one shared view (digit runs, a lowercased copy) and the helpers scanners use."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from functools import cached_property


def _before(text: str, index: int, width: int) -> str:
    return text[max(0, index - width) : index]


def _char(text: str, index: int) -> str:
    """The character at ``index``, or a space off either end: the edges of the text are boundaries."""
    return text[index] if 0 <= index < len(text) else " "


#: spaces that pasted text carries inside numbers (no-break, narrow no-break, figure, thin, ideographic…);
#: scanners see them as ASCII spaces, one character for one so that offsets into the original still hold
_UNICODE_SPACES = "\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000"


def _ascii_spaces(text: str) -> str:
    """``text`` with Unicode spaces as ASCII spaces, same length; ASCII text costs one flag check."""
    if text.isascii():
        return text
    for space in _UNICODE_SPACES:
        if space in text:  # ~2 ns a character in all, where str.translate costs ~45
            text = text.replace(space, " ")
    return text


#: digit runs, found in one pass: ``number`` is 7+ digits and separators (a phone, card, SSN, IPv4 or
#: IBAN candidate), ``house`` a short number before a capitalised word (a street address candidate),
#: ``cf`` the tail of an Italian codice fiscale (85T10A562S, from the second digit of the birth year),
#: ``short`` a number of up to four digits after a space or comma, or at a line's start (a house number
#: candidate for a street with no postcode: "Calle Mayor 5", "au 27 rue du Bac", "Oudegracht 158 is…")
_DIGIT_RUN = re.compile(
    r"[0-9](?:(?P<number>(?=[0-9 ().-]{6})[0-9().-]*(?: [0-9(][0-9().-]*)*)"
    r"|(?P<house>[0-9]{0,5}[A-Za-z]? [A-Z])"
    r"|(?P<cf>[A-EHLMPRST][0-9]{2}[A-Z][0-9]{3}[A-Z])"
    # one cheap lookbehind here; what stands before the space is for the street scanner to judge
    r"|(?P<short>(?:(?<=[ ,\n\"'(>][0-9])|(?<![\s\S][0-9]))"
    r"[0-9]{0,3}(?![0-9]|[.,:][0-9]|%)))"
)


class _Text:
    """The text under scan, with what several scanners look for computed once, on first use.

    Testing every character against a character class costs the regex engine about 5 ns; a pattern
    that starts with a literal skips ahead at memchr speed. So digits are found in one shared pass and
    context words with ``str.find`` in a lowercased copy; each scanner then works on a few spans.
    Context patterns run on ``lower`` without IGNORECASE, which would make them several times slower.
    ``text`` has Unicode spaces as ASCII ones (same offsets): the caller takes values from the original.
    """

    def __init__(self, text: str) -> None:
        self.text = _ascii_spaces(text)
        self._found: dict[str, list[int]] = {}

    def find_all(self, needle: str) -> list[int]:
        """Where ``needle`` occurs in ``lower``, computed once for all the scanners that share it."""
        found = self._found.get(needle)
        if found is None:
            found, at = [], self.lower.find(needle)
            while at != -1:
                found.append(at)
                at = self.lower.find(needle, at + 1)
            self._found[needle] = found
        return found

    @cached_property
    def _digit_runs(
        self,
    ) -> tuple[list[tuple[int, int]], list[int], list[tuple[int, int]], list[tuple[int, int]]]:
        numbers: list[tuple[int, int]] = []
        houses: list[int] = []
        tails: list[tuple[int, int]] = []
        shorts: list[tuple[int, int]] = []
        for m in _DIGIT_RUN.finditer(self.text):
            group = m.lastgroup
            if group == "short":  # the most frequent in prose: tested first
                shorts.append(m.span())
            elif group == "number":
                numbers.append((m.start() - (_char(self.text, m.start() - 1) in "+("), m.end()))
                if m.end() - m.start() <= 4:  # "Viale dei Mille, 27 - 50131": a house number too
                    shorts.append(m.span())
            elif group == "house":
                houses.append(m.start())
                shorts.append((m.start(), m.end() - 2))  # "Calle Mayor 5 Madrid": a short number too
            else:
                tails.append(m.span())
        return numbers, houses, tails, shorts

    @property
    def numbers(self) -> list[tuple[int, int]]:
        """Spans of 7+ digits and separators, with a leading ``+`` or ``(``."""
        return self._digit_runs[0]

    @property
    def house_numbers(self) -> list[int]:
        """Starts of numbers of up to 6 digits followed by a space and a capital letter."""
        return self._digit_runs[1]

    @property
    def short_numbers(self) -> list[tuple[int, int]]:
        """Spans of numbers of up to four digits after a space or a comma, or at a line's start; a
        house number before a capital is among them."""
        return self._digit_runs[3]

    @property
    def codice_fiscale_tails(self) -> list[tuple[int, int]]:
        """Spans of the last ten characters of what may be a codice fiscale (the year's second digit on)."""
        return self._digit_runs[2]

    @cached_property
    def lower(self) -> str:
        """The text lowercased with offsets kept (``str.lower`` lengthens a few characters, such as "İ")."""
        lowered = self.text.lower()
        if len(lowered) == len(self.text):
            return lowered
        return "".join(c.lower() if len(c.lower()) == 1 else c for c in self.text)

    def _camel_case_at(self, index: int) -> bool:
        return self.text[index].isupper() and self.text[index - 1].islower()

    def in_numbers(self, pattern: re.Pattern[str]) -> Iterator[re.Match[str]]:
        """``pattern``'s matches inside the digit runs."""
        for start, end in self.numbers:
            yield from pattern.finditer(self.text, start, end)

    def words_ending(self, needles: Iterable[str], word: re.Pattern[str]) -> Iterator[int]:
        """Ends of the words ``word`` matches (in lowercase) where one of ``needles`` starts a word or a
        camelCase part of one (``dateOfBirth``); needles with non-ASCII letters only in non-ASCII text."""
        ascii_only = self.text.isascii()
        for needle in needles:
            if ascii_only and not needle.isascii():
                continue
            at = self.lower.find(needle)
            while at != -1:
                if not _char(self.lower, at - 1).isalpha() or self._camel_case_at(at):
                    m = word.match(self.lower, at)
                    if m:
                        yield m.end()
                at = self.lower.find(needle, at + 1)


_CSV_DELIMITERS = ",;\t|"
#: a key right before a value: ``"tel": "``, ``bsn=``, ``passport: ``, ``<telefon>``
_KEY_BEFORE = re.compile(
    r"([A-Za-zÀ-ÿ][\w .-]{0,30}?)[\"']?\s{0,2}(?:[:=]|=>)\s{0,3}[\"']?\Z|<([\w.-]{1,30})>\Z"
)


def field_name(text: str, start: int) -> str | None:
    """The lowercased name of the structural field the value at ``start`` sits in: the key of a JSON,
    YAML or ``key=value`` pair right before it, or the header of its CSV column. None in prose."""
    m = _KEY_BEFORE.search(text, max(0, start - 40), start)
    if m:
        return (m.group(1) or m.group(2)).strip().lower()
    line_start = text.rfind("\n", max(0, start - 400), start) + 1
    if line_start == 0:
        return None  # the first line (or a very long one) has no header above it
    line_end = text.find("\n", start)
    line = text[line_start : len(text) if line_end == -1 else line_end]
    delimiter = max(_CSV_DELIMITERS, key=line.count)
    fields = line.count(delimiter)
    if not fields:
        return None
    column = text.count(delimiter, line_start, start)
    header, header_end = "", line_start - 1
    for _ in range(50):  # up the table to its first line
        header_start = text.rfind("\n", 0, header_end) + 1
        if text.count(delimiter, header_start, header_end) != fields:
            break
        header = text[header_start:header_end]
        if header_start == 0:
            header_end = -1
            break
        header_end = header_start - 1
    else:
        return None
    if header_end == line_start - 1:
        return None  # no line above with the same fields
    cells = header.rstrip("\r").split(delimiter)
    return cells[column].strip(" \"'").lower() if column < len(cells) else None
