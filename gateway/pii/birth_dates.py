"""The scanner for dates of birth: a date after a birth word, or in a birth column of a CSV table.

What counts as a birth date is relative to ``today`` (the clock's, unless a caller passes one): a real
calendar date no later than tomorrow (time zones ahead of the clock's) and at most ``MAX_AGE_YEARS``
years back; a two-digit year is the latest year ending in those digits that is not after today.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, timedelta

from gateway.pii.findings import Finding
from gateway.pii.text import _char, _Text

#: needles for ``str.find`` in the lowercased text, then the words they start: birth and its field
#: names (dob, birth_date, dateOfBirth, patientDob), and "born" and "date of birth" in French, German,
#: Spanish, Portuguese, Italian, Dutch and Polish (né le, geb., Geburtsdatum, nacida el, F. nac., nascido
#: em, nata il, geboren op, ur., data urodzenia); "na" finds naissance, nacimiento, nascita and nato in
#: one pass, not five
_BIRTH_WORDS = ("born", "birth", "dob", "d.o.b", "na", "geb", "né", "ur")
_BIRTH_WORD = re.compile(
    r"(?:born|birth(?:[ _-]?(?:day|date))?|dob|d\.o\.b\.?"
    r"|né(?:e|\(e\))?s?|naissance"
    r"|geboren|geb\.(?:-?datum)?|geburts(?:datum|tag)|geboorte(?:datum)?"
    r"|nac(?:imiento|id[oa]s?|i[óo]|\.|(?=[\s_:=\"']))|nasc(?:imento|id[oa]s?|eu|eram|ita|\.|(?=[\s_:=\"']))"
    r"|nat[oa](?=\s+(?:il|a|ad)\s)"
    r"|ur(?:odz(?:ony|ona|eni[ea]|in[ya]?|i[łl][ae]?m?)|\.))"  # Italian "nato il", "nata a Roma il"; not NATO
    r"(?![^\W\d_])"
)
#: month names and their usual abbreviations in the same languages (Polish in both the nominative
#: and the genitive a date uses: "3 maja 1985"), to their number
_MONTH_NUMBERS: dict[str, int] = {
    name: number
    for number, names in enumerate(
        (
            "jan january janvier janv januar jänner enero ene "
            "janeiro gennaio gen januari stycznia styczeń styczen sty",
            "feb february février fevrier févr fevr februar febrero "
            "fevereiro fev febbraio febr februari lutego luty lut",
            "mar march mars märz maerz mrz marzo março marco maart mrt marca marzec",
            "apr april avril avr abril abr aprile kwietnia kwiecień kwiecien kwi",
            "may mai mayo maio maggio mag mei maja maj",
            "jun june juin juni junio junho giugno giu czerwca czerwiec cze",
            "jul july juillet juil juli julio julho luglio lug lipca lipiec lip",
            "aug august août aout agosto ago augustus sierpnia sierpień sierpien sie",
            "sep sept september septembre septiembre setiembre set "
            "setembro settembre września wrzesień wrzesnia wrzesien wrz",
            "oct october octobre oktober okt octubre outubro out "
            "ottobre ott października październik pazdziernika pazdziernik paź paz",
            "nov november novembre noviembre novembro listopada listopad lis",
            "dec december décembre decembre déc dezember dez diciembre "
            "dic dezembro dicembre grudnia grudzień grudnia grudzien gru",
        ),
        start=1,
    )
    for name in names.split()
}
#: a word that may be a month, looked up in ``_MONTH_NUMBERS`` after a match: far cheaper than trying
#: a hundred names at every position of the text
_MONTH = r"(?<![^\W\d_])[^\W\d_]{3,12}"
#: ISO, day or month first with - / or . (12.05.1978), "3 avril 1985", "12. Mai 1978", "3rd of March,
#: 1985", "3 de abril de 1985", "March 3, 1985"
_DATE = re.compile(
    r"(?P<y>\d{4})[-/.](?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?![\d:T])"
    r"|(?P<a>\d{1,2})[-/.](?P<b>\d{1,2})[-/.](?P<year>\d{4}|\d{2})(?!\d)"
    rf"|(?P<day>\d{{1,2}})(?:st|nd|rd|th|er|º|°|\.)?(?:\s+(?:of|de))?\s+(?P<month>{_MONTH})\.?,?"
    r"(?:\s+de)?\s+(?P<dy>\d{4})"
    rf"|(?P<month2>{_MONTH})\.?\s+(?P<day2>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<dy2>\d{{4}})"
)
#: what may stand between the birth word and the date: connectives, names ("born in Lyon on", "née à
#: Lyon le", "nata a Roma il"), a format hint, JSON quotes; not other words ("our birthday sale runs
#: 2024-06-01" is a sale)
_BIRTH_GAP = re.compile(
    r"[\s:=,()'\"-]*(?:(?:is|was|on|of|in|at|the|le|à|a|am|em|el|en|il|ad|op|de|du|da|di|do|dnia|w|się"
    r"|[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+|[A-Za-z]+/[A-Za-z]+/[A-Za-z]+)\b[\s:=,()'\"-]*){0,4}"
)
#: a field of a CSV header ("id", "e-mail", "date_of_birth", "Date (ISO)"): a short label, or empty
_FIELD_LABEL = re.compile(r"(?:[^\W\d][\w .()/#'-]{0,39})?")
_CSV_DELIMITERS = ",;\t|"
#: the oldest a person may be: the oldest ever recorded lived to 122
MAX_AGE_YEARS = 130
_CSV_QUOTES = " \"'"


def full_year(year: int, today: date) -> int:
    """``year`` with its century: a two-digit year is the latest one ending in those digits up to today."""
    if year >= 100:
        return year
    year += today.year - today.year % 100
    return year - 100 if year > today.year else year


def _valid_date(year: int, month: int, day: int, today: date) -> bool:
    year = full_year(year, today)
    if not today.year - MAX_AGE_YEARS <= year <= today.year + 1:
        return False  # also keeps date() within its years 1 to 9999
    try:
        return date(year, month, day) <= today + timedelta(days=1)
    except ValueError:
        return False


def _date_ok(m: re.Match[str], today: date) -> bool:
    g = m.groupdict()
    if g["y"]:
        return _valid_date(int(g["y"]), int(g["m"]), int(g["d"]), today)
    if g["a"]:
        a, b, year = int(g["a"]), int(g["b"]), int(g["year"])
        return _valid_date(year, b, a, today) or _valid_date(year, a, b, today)  # day- or month-first
    month = _MONTH_NUMBERS.get((g["month"] or g["month2"]).lower())
    day, year = int(g["day"] or g["day2"]), int(g["dy"] or g["dy2"])
    return month is not None and _valid_date(year, month, day, today)


def _scan_date_of_birth(t: _Text, today: date | None = None) -> Iterator[Finding]:
    """A date within a few words after a birth word ("born", "DOB", "née le", "Geburtsdatum"), or under
    a birth column of a CSV header ("id,name,dob"); dates alone are not PII. ``today``: the clock's."""
    text, today = t.text, today or date.today()
    table_end = 0  # where the last table read ended: a header before it was one of its rows
    for word_end in sorted(t.words_ending(_BIRTH_WORDS, _BIRTH_WORD)):
        m = _DATE.search(text, word_end, word_end + 40)
        if m and _BIRTH_GAP.fullmatch(text, word_end, m.start()) and _date_ok(m, today):
            yield Finding("date_of_birth", m.start(), m.end(), m.group())
        elif word_end >= table_end:
            found, table_end = _csv_column_dates(text, word_end, today)
            yield from found
            if not found:
                yield from _date_before(t, word_end, today)


#: a birth word after its date: "am 7. Mai 1990 geboren", "1985-03-14 born", "14 lutego 1991 urodzona"
_AFTER_DATE_WORD = re.compile(r"(?:geboren|born|urodzon[ya]|urodzi[łl][ao]?)\Z")


def _date_before(t: _Text, word_end: int, today: date) -> Iterator[Finding]:
    text = t.text
    word = _AFTER_DATE_WORD.search(t.lower, max(0, word_end - 12), word_end)
    if word is None:
        return
    window_start = max(0, word.start() - 40)
    last = None
    for m in _DATE.finditer(text, window_start, word.start()):
        last = m
    if last and not text[last.end() : word.start()].strip() and _date_ok(last, today):
        yield Finding("date_of_birth", last.start(), last.end(), last.group())


def _csv_column_dates(text: str, word_end: int, today: date) -> tuple[list[Finding], int]:
    """The dates in a CSV column whose header field ends with the birth word at ``word_end``, and
    where reading stopped. Rows count while they have as many fields as the header, so a delimiter in
    a quoted value ends the table rather than shifting the column."""
    field_end = word_end
    while field_end < word_end + 3 and _char(text, field_end) in _CSV_QUOTES:
        field_end += 1
    after = text[field_end : field_end + 1]
    if not after or after not in _CSV_DELIMITERS + "\r\n":
        return [], word_end
    line_start = text.rfind("\n", max(0, word_end - 1000), word_end) + 1
    line_end = text.find("\n", field_end, field_end + 1000)
    if (line_start == 0 and word_end > 1000) or line_end == -1:
        return [], word_end  # a line too long for a header, or no row under it
    header = text[line_start:line_end].rstrip("\r")
    delimiter = after if after in _CSV_DELIMITERS else max(_CSV_DELIMITERS, key=header.count)
    fields = header.split(delimiter)
    if len(fields) < 2 or not all(_FIELD_LABEL.fullmatch(f.strip(_CSV_QUOTES)) for f in fields):
        return [], word_end
    column = header.count(delimiter, 0, word_end - line_start)
    found, at = [], line_end + 1
    while at < len(text):
        row_end = text.find("\n", at)
        row_end = len(text) if row_end == -1 else row_end
        row = text[at:row_end].rstrip("\r").split(delimiter)
        if len(row) != len(fields):
            break
        value = row[column].strip(_CSV_QUOTES)
        m = _DATE.fullmatch(value)
        if m and _date_ok(m, today):
            start = at + sum(len(cell) + 1 for cell in row[:column]) + row[column].index(value)
            found.append(Finding("date_of_birth", start, start + len(value), value))
        at = row_end + 1
    return found, at
