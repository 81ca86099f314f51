"""Scanners for contact details: email addresses, phone numbers, postal addresses."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator, Sequence

import phonenumbers

from gateway.pii.findings import DEFAULT_PHONE_REGIONS, Finding
from gateway.pii.text import _before, _char, _Text, field_name

# --- email ----------------------------------------------------------------------------------------

_EMAIL_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
#: internationalised (RFC 6531) local parts take non-ASCII letters too, but not those of scripts written
#: without spaces (CJK, kana, Hangul, from U+2E80), where the word before would run into the address
_EMAIL_LOCAL_CJK = "\u2e80"
_EMAIL_DOMAIN = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+([A-Za-z]{2,24})(?![\w-])")
#: labels of letters and digits in any script (exämple.de, пример.рф), a top-level domain of letters
#: before U+2E80 that may run into CJK text (例え.jpまで): on ASCII text the same as ``_EMAIL_DOMAIN``,
#: which runs twice as fast
_EMAIL_IDN_DOMAIN = re.compile(
    r"(?:[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?\.)+([^\W\d_\u2e80-\U0010ffff]{2,24})(?![^\W\u2e80-\U0010ffff]|-)"
)
#: ``icon@2x.png``, ``logo@3x.webp``: asset names, not addresses
_FILE_EXTENSIONS = frozenset(
    {"png", "jpg", "jpeg", "gif", "svg", "webp", "ico", "bmp", "css", "js", "json", "yaml", "yml", "html"}
)


def _scan_email(t: _Text) -> Iterator[Finding]:
    text = t.text
    domain_pattern = _EMAIL_DOMAIN if text.isascii() else _EMAIL_IDN_DOMAIN
    at = text.find("@")
    while at != -1:
        start = at
        while start > 0 and at - start < 64 and _email_local_char(text[start - 1]):
            start -= 1
        while start < at and not text[start].isalnum():
            start += 1
        local = text[start:at]
        domain = domain_pattern.match(text, at + 1)
        if local and domain and _email_ok(text, start, local, domain):
            yield Finding("email", start, domain.end(), text[start : domain.end()])
        at = text.find("@", at + 1)


def _email_local_char(char: str) -> bool:
    return char in _EMAIL_LOCAL_CHARS or "\x7f" < char < _EMAIL_LOCAL_CJK and char.isalnum()


def _email_ok(text: str, start: int, local: str, domain: re.Match[str]) -> bool:
    if local.endswith(".") or ".." in local or domain.group(1).lower() in _FILE_EXTENSIONS:
        return False
    if _char(text, domain.end()) == ":" and not _char(text, domain.end() + 1).isspace():
        return False  # git@github.com:org/repo, an SSH remote
    if _char(text, start - 1) == ":":
        words = _before(text, start, 160).split()
        return not (words and "://" in words[-1])  # the password of scheme://user:password@host
    return not text.endswith("://", 0, start)  # https://user@host: a URL's user, not a mailbox


# --- phone ----------------------------------------------------------------------------------------


def _expand_words(alternatives: str) -> frozenset[str]:
    """The words ``a|b[cd]e|fg?`` stands for: a set to look words up in. A regex alternation of a
    hundred words tries each one at every position of the text before a number; a set costs one
    lookup a word."""
    words: set[str] = set()
    for alternative in alternatives.split("|"):
        forms = [""]
        for m in re.finditer(r"(\[[^\]]+\]|[^\[?])(\?)?", alternative):
            chars = list(m.group(1)[1:-1]) if m.group(1).startswith("[") else [m.group(1)]
            if m.group(2):
                chars.append("")
            forms = [form + char for form in forms for char in chars]
        words.update(forms)
    return frozenset(words)


_WORD = re.compile(r"[^\W\d_]+")

_PHONE_RUN = re.compile(r"[+(\d][\d ()./-]{6,24}\d")
_INTL_PHONE = re.compile(r"\+[1-9]\d*(?: ?\(\d{1,4}\) ?\d+)?(?:[ .-]\d+)*")
_LOCAL_PHONE = re.compile(r"(?:\(\d{1,5}(?: \d{1,4})?\) ?)?\d+(?:(?: ?[./-] ?| )\d+)*")
_NANP = re.compile(
    r"(?<![\w.+-])(?:1[ .-])?(?:\([2-9]\d\d\) ?|[2-9]\d\d(?P<sep>[.-]))[2-9]\d\d(?(sep)(?P=sep)|[.-])\d{4}"
    r"(?![\w]|[.-]\d)"
)
#: the word for a phone in English, French, German, Spanish, Portuguese, Italian, Dutch and Polish; a
#: bare national number ("Tel. 030 901820", "Handy 0171 1234567", "bel 06-12345678") counts after one
_PHONE_WORDS = _expand_words(
    "phone|phones|phoned|telephone|tel|call|called|calling|mobile|cell|cellphone|fax|whatsapp|sms"
    "|hotline|landline|dial|ring|rang|reach me|text|texted|text me|contact number|t[eé]l[eé]phone"
    "|t[eé]l|portable|fixe|appel[eé]?|appelle|appelez|appeler|rappel[eé]?|rappelle|rappelez|rappeler"
    "|joindre|joignable|telefon|telefonnummer|rufnummer|handy|handynummer|mobil|mobilnummer|festnetz"
    "|anrufen|angerufen|anruf|rief|ruft|r[üu]ckruf|zur[üu]ckrufen|erreichbar|tel[eé]fono|m[oó]vil"
    "|celular|llamar|llame|llamen|llam[oó]|llamada|ll[aá]mame|fijo|telefone|telem[oó]vel|ligue|liguem"
    "|ligar|ligou|liga[çc][aã]o|contacto|contato|fixo|telefono|cellulare|cell|chiamare|chiami|chiamato"
    "|chiamata|chiamami|richiamare|ricontattar[eo]|ricontattata|recapito|recapiti|fisso"
    "|numero di telefono|telefoon|telefoonnummer|mobiel|mobiele|bel|belde|belden|belt|gebeld|bellen"
    "|gsm|vast|telefonu|kom|kom[oó]rka|kom[oó]rkowy|stacjonarny|dzwoni[cć]|dzwoni[łl][ao]?|zadzwo[nń]"
    "|kontakt|contact|contatto|contatti|numero|nummer|numer|n[uú]mero|tlf|tfno|tf|durchwahl|zentrale"
)
#: the names of a structural field (a JSON key, a CSV column) that holds a phone number
_PHONE_FIELD = re.compile(
    r"(?:.*[_ -])?(?:phone|tel|telephone|telefon|telefono|teléfono|téléphone|telefone|telefoon|mobile|mobil"
    r"|handy|m[oó]vil|portable|cellulare|cell|kom[oó]rka|gsm|fax|celular|telem[oó]vel|mobiel|contact)"
    r"(?:[_ -]?(?:number|nummer|numero|nr|no|fisso|fijo|fixe|mobile|privat|work|home))?"
)
#: words that make the number after them an identifier, not a phone (in the same languages)
_ID_WORDS = _expand_words(
    "order|invoice|id|ref|reference|account|acct|ticket|case|tracking|serial|sku|transaction"
    "|confirmation|booking|customer|card|iban|ssn|isbn|commande|facture|r[eé]f|r[eé]f[eé]rence|dossier"
    "|compte|carte|siret|siren|bestellung|bestellnummer|bestellnr|rechnung|rechnungsnummer|rechnungsnr"
    "|auftrag|auftragsnummer|kundennummer|kundennr|konto|kontonummer|vorgang|vorgangsnummer"
    "|sendungsnummer|pedido|factura|cuenta|fattura|ordine|conto|encomenda|fatura|conta|bestelling"
    "|factuur|rekening|zam[oó]wienie|zam[oó]wienia|faktura|konta|numer konta|klient|bsn|pesel|nif|dni"
    "|steuer|passport|pass|shipment|parcel|awb|spedizione|sendung|env[ií]o|verzending|zending"
    "|przesy[łl]k[aiy]|colis|suivi|exp[eé]dition|paquete|remessa|rastreio|pacco|paket|ean|upc|gtin"
    "|isbn|artikel|artikelnummer|art|article|articolo|art[ií]culo|artigo|produkt|product"
)
_DATE_SHAPE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
#: a French national number: ten digits in pairs from a trunk 0 (01 42 68 53 00, 06.12.34.56.78); no
#: other common number is written so, so it needs no phone word, only no id word before it
_FR_PHONE = re.compile(r"0[1-9](?P<sep>[ .-])\d\d(?:(?P=sep)\d\d){3}")


def _scan_phone(t: _Text, regions: Sequence[str] = DEFAULT_PHONE_REGIONS) -> Iterator[Finding]:
    """Phone numbers: international ones libphonenumber accepts, NANP and French shapes, a national
    number after a phone word, and without one a mobile number (in a grouped national format) that
    libphonenumber places in one of ``regions``."""
    text = t.text
    last_end = -1  # where the last phone found ended: "Tel. 030 1234567 oder 0171 …" lists a second
    for m in _phone_runs(t):
        start, end = m.span()
        before, run = _char(text, start - 1), m.group()
        if before == "(" and _PAREN_COUNTRY.match(run):  # (+34) 669 41 50 77
            start, before, run = start - 1, _char(text, start - 2), "(" + run
        if before.isalnum() or before in "_+.-/#$€£" or _char(text, end).isalnum():
            continue
        gap_ok = last_end >= 0 and start - last_end <= 24
        listed = gap_ok and _PHONE_LIST_GAP.fullmatch(t.lower, last_end, start) is not None
        intl = _international(run)
        if intl is not None:
            shape_ok = _INTL_PHONE.fullmatch(intl) and 9 <= sum(map(str.isdigit, intl)) <= 15
            if shape_ok and _international_ok(t, start, intl, listed):
                last_end = end
                yield Finding("phone", start, end, run)
            continue
        nanp = list(_NANP.finditer(text, start, end))
        for n in nanp:
            last_end = n.end()
            yield Finding("phone", n.start(), n.end(), n.group())
        if nanp:
            continue
        if _national_ok(t, start, run, regions, listed):
            last_end = end
            yield Finding("phone", start, end, run)


def _national_ok(t: _Text, start: int, run: str, regions: Sequence[str], listed: bool) -> bool:
    """A national number (no country code): the French shape, or after a phone word (``listed``: after
    another phone), in a phone field, or without either a grouped mobile or landline that
    libphonenumber validates in one of ``regions``; never right after an id word."""
    french = _FR_PHONE.fullmatch(run) is not None
    if not (french or _local_phone_ok(run)):
        return False
    phone_word, id_word = _phone_context(t.lower, start)
    if id_word:
        return False
    phone_word = phone_word or listed
    if phone_word and _LONG_UNGROUPED.fullmatch(run):
        # 13+ plain digits after "numero" are a tracking or account number more often than not
        phone_word = _phone_type(run, regions) is not None
    if not (french or phone_word):
        # a field named for a phone: a number libphonenumber validates in one of the regions
        phone_word = _phone_field(t.text, start) and _phone_type(run, regions) is not None
    return french or phone_word or _bare_mobile(run, regions) or _bare_landline(run, regions)


#: a country code in parentheses, ``(+34) 669 41 50 77``: the run starts after the "("
_PAREN_COUNTRY = re.compile(r"\+[1-9]\d{0,2}\)")
#: what joins two phone numbers in a list: a comma, a slash, "or" in the eight languages, a label in
#: parentheses ("(ufficio)", "(biuro)") and a short cue after it ("kom.", "Handy:")
_PHONE_LIST_GAP = re.compile(
    r"\s*(?:\([^()\n]{1,20}\))?\s*[,;/]?\s*(?:or|oder|ou|o|of|lub|albo|oppure|y|e|und|en|et|i)?\s*"
    r"(?:[^\W\d_]{1,12}\.?:?\s*)?"
)
_LONG_UNGROUPED = re.compile(r"\d{13,}")


def _international(run: str) -> str | None:
    """``run`` written with ``+`` and its country code: ``+49 …``, ``(+34) …`` or ``0049 …`` (the 00
    international prefix of Europe); None for a national number."""
    if run.startswith("+"):
        return run
    if run.startswith("(+"):
        return run[1:].replace(")", "", 1)
    if run.startswith("00") and run[2:3] not in ("", "0") and run[2].isdigit():
        return "+" + run[2:]
    return None


def _international_ok(t: _Text, start: int, run: str, listed: bool) -> bool:
    """A number libphonenumber validates, or one with a country code it has no metadata for; after a
    phone word or in a phone field, one it finds merely possible (07700 900xxx, the UK's drama range,
    is not valid, yet it is written where a real number would be)."""
    if _phone_type(run, (None,)) is not None or not _known_country_code(run):
        return True
    if run.startswith("00"):
        return False
    cued = listed or _phone_context(t.lower, start)[0] or _phone_field(t.text, start)
    if not cued:
        return False
    try:
        return bool(phonenumbers.is_possible_number(phonenumbers.parse(run, None)))
    except phonenumbers.NumberParseException:
        return False


def _phone_field(text: str, start: int) -> bool:
    name = field_name(text, start)
    return name is not None and _PHONE_FIELD.fullmatch(name) is not None


#: an area code before a slash or a spaced dash (0221/4567890, 02/28113568, 010 - 234 56 78), joined to
#: the number after it
_SLASH_AREA = re.compile(r"\(?0\d{1,4}\)? ?(?:/ ?|- )\Z")
#: a short subscriber number after an area code and a slash (030/264284): too short for a digit run
_SLASHED = re.compile(r"\(?0\d{1,4}\)? ?/ ?\d{4,8}(?![\d/.-])")


def _phone_runs(t: _Text) -> Iterator[re.Match[str]]:
    """Phone candidates in the digit runs; an area code before a slash or a dash (0221/4567890) is
    joined to the run after it, and a short number after one (030/264284) is a candidate too."""
    text = t.text
    found: set[int] = set()
    for start, end in t.numbers:
        area = _SLASH_AREA.search(text, max(0, start - 9), start)
        if area:
            start = area.start()
        for m in _PHONE_RUN.finditer(text, start, end):
            found.add(m.start())
            yield m
    at = text.find("/")
    while at != -1:
        if _char(text, at - 1) in "0123456789) " and _char(text, at + 1) in "0123456789 ":
            area = _SLASH_AREA.search(text, max(0, at - 8), at + 1 + (_char(text, at + 1) == " "))
            if area and area.start() not in found:
                slashed = _SLASHED.match(text, area.start())
                if slashed:
                    whole = _PHONE_RUN.fullmatch(text, slashed.start(), slashed.end())
                    if whole:
                        yield whole
        at = text.find("/", at + 1)


def _phone_type(run: str, regions: Iterable[str | None]) -> int | None:
    """libphonenumber's type of ``run`` (``PhoneNumberType``) read in the first region where it is a
    valid number, or None."""
    for region in regions:
        try:
            number = phonenumbers.parse(run, region)
        except phonenumbers.NumberParseException:
            continue
        # the type is UNKNOWN exactly when the number is not valid: one match over the metadata, not two
        kind = phonenumbers.number_type(number)
        if kind != phonenumbers.PhoneNumberType.UNKNOWN:
            return int(kind)
    return None


def _known_country_code(run: str) -> bool:
    """Whether ``run``'s country code is one libphonenumber has metadata for: a number there that it
    rejects is not a phone; elsewhere the shape alone decides, as it did before."""
    try:
        number = phonenumbers.parse(run, None)
    except phonenumbers.NumberParseException:
        return False
    code = number.country_code
    return code is not None and phonenumbers.region_code_for_country_code(code) != "ZZ"


_MOBILE_TYPES = frozenset(
    {phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE}
)
#: a mobile number as people write it: grouped, 10 or 11 digits (07700 900123, 0171 1234567,
#: 06-12345678, 333 123 4567); an ungrouped run is more often an order or account number
_GROUPED_NATIONAL = re.compile(r"\(?\d{2,5}\)?[ -]\d{2,4}(?:[ -]?\d{2,4}){0,3}")


#: a landline as people write it: the trunk 0 and the area code, then the subscriber number grouped
#: (030 12345678, 089 2190 5544, (0 69) 123 456 78, 0221/4567890, 020 624 1111, 06 6982 1234)
_GROUPED_LANDLINE = re.compile(
    r"\(?0[1-9]\d{0,4}\)?(?: ?/ ?| - |[ -])\d{2,8}(?:[ -]\d{1,4}){0,3}|\(0 \d{1,4}\) \d{2,8}(?: \d{1,4}){0,3}"
)
_LANDLINE_TYPES = frozenset(
    {phonenumbers.PhoneNumberType.FIXED_LINE, *_MOBILE_TYPES, phonenumbers.PhoneNumberType.VOIP}
)
#: 9-digit numbers in Spain, Portugal and Poland, grouped as they are written (612 34 56 78, 912 345 678)
_GROUPED_NINE = re.compile(r"\d{3}[ -]\d{3}[ -]\d{3}|\d{3} \d{2} \d{2} \d{2}|\d{2} \d{3} \d{2} \d{2}")


def _bare_landline(run: str, regions: Sequence[str]) -> bool:
    """With no phone word: a grouped national number from the trunk 0 that libphonenumber validates
    (a landline too) in one of ``regions``, or a grouped 9-digit mobile of Spain, Portugal or Poland."""
    digits = sum(map(str.isdigit, run))
    if 10 <= digits <= 12 and _GROUPED_LANDLINE.fullmatch(run):
        # France writes its numbers in pairs: that shape (``_FR_PHONE``) is checked on its own
        national = "".join(filter(str.isdigit, run))[1:]
        # a parse costs ~50 µs: only in regions whose fixed-line or mobile pattern already fits
        trunk_zero = [r for r in regions if _trunk(r) == "0" and r != "FR" and _fits_region(national, r)]
        return bool(trunk_zero) and _phone_type(run, trunk_zero) in _LANDLINE_TYPES
    if digits == 9 and run[0] in "56789" and _GROUPED_NINE.fullmatch(run):
        # each region on its own: 512 345 678 is a Spanish landline and a Polish mobile
        return any(_phone_type(run, (r,)) in _MOBILE_TYPES for r in regions if r in ("ES", "PT", "PL"))
    return False


@functools.cache
def _number_patterns(region: str) -> tuple[re.Pattern[str], ...]:
    """A region's fixed-line and mobile national number patterns, from libphonenumber's metadata."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None:
        return ()
    descs = (metadata.fixed_line, metadata.mobile)
    return tuple(re.compile(d.national_number_pattern) for d in descs if d and d.national_number_pattern)


def _fits_region(national: str, region: str) -> bool:
    return any(pattern.fullmatch(national) for pattern in _number_patterns(region))


@functools.cache
def _trunk(region: str) -> str:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return (metadata.national_prefix or "") if metadata else ""


def _bare_mobile(run: str, regions: Sequence[str]) -> bool:
    digits = sum(map(str.isdigit, run))
    if not 10 <= digits <= 11 or not _GROUPED_NATIONAL.fullmatch(run) or run.lstrip("(")[0] not in "03":
        # national mobile formats start with the trunk 0 (Italy's with 3)
        return False
    digits_only = "".join(filter(str.isdigit, run))
    for region in regions:
        mobile = _mobile_pattern(region)
        if mobile is None:
            continue
        trunk, pattern = mobile
        national = digits_only[len(trunk) :] if trunk and digits_only.startswith(trunk) else digits_only
        # a parse costs ~50 µs: only where the region's mobile pattern already fits
        if pattern.fullmatch(national) and _phone_type(run, (region,)) in _MOBILE_TYPES:
            return True
    return False


@functools.cache
def _mobile_pattern(region: str) -> tuple[str, re.Pattern[str]] | None:
    """A region's trunk prefix and the pattern of its mobile numbers, from libphonenumber's metadata."""
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.mobile is None or not metadata.mobile.national_number_pattern:
        return None
    return metadata.national_prefix or "", re.compile(metadata.mobile.national_number_pattern)


def _phone_context(lowered: str, start: int) -> tuple[bool, bool]:
    """Whether a phone word is shortly before (``telefono_fijo`` counts: a field's parts are words),
    and whether an id word ("order", "Rechnung", …) or a ``#`` is between it (or, with no phone word,
    among the last three words) and the number: "order 0123 456 789", not "the customer asked to
    text 07…". Two-word cues ("reach me", "numer konta") are looked up as pairs."""
    window = _before(lowered, start, 32)
    words = _WORD.findall(window)
    pairs = [f"{a} {b}" for a, b in zip(words, words[1:], strict=False)]
    cue = -1
    for i in range(len(words) - 1, -1, -1):
        if words[i] in _PHONE_WORDS or i and pairs[i - 1] in _PHONE_WORDS:
            cue = i
            break
    after = words[cue + 1 :] if cue >= 0 else words[-3:]
    after_pairs = pairs[cue + 1 :] if cue >= 0 else pairs[-2:]
    id_word = not _ID_WORDS.isdisjoint(after) or not _ID_WORDS.isdisjoint(after_pairs)
    return cue >= 0, id_word or "#" in window[-3:]


def _local_phone_ok(run: str) -> bool:
    if not _LOCAL_PHONE.fullmatch(run) or not 9 <= sum(map(str.isdigit, run)) <= 15 or _DATE_SHAPE.match(run):
        return False
    dots = run.count(".")
    if dots and dots == len(re.findall(r"[ .()-]+", run)):
        if dots == 1:
            return False  # a decimal
        if dots == 3 and all(int(octet) <= 255 for octet in run.split(".")):
            return False  # an IPv4 address; 811.98.32.16 is a number in groups
    return True


# --- postal addresses -----------------------------------------------------------------------------

_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY"
    "|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR"
)
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2}"
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Way|Parkway|Pkwy|Court|Ct|Place|Pl"
    r"|Square|Sq|Terrace|Highway|Hwy|Circle|Crescent|Mews|Plaza|Gardens|Close|Grove|Row|Walk|Rise|Parade"
    r"|Hill|Green|Park|Vale|View|Wharf|Yard|Approach|Gate|Embankment|Quay)"
)
_STREET = re.compile(
    r"\d{1,6}[A-Za-z]?"  # house number (221B)
    r"(?: (?:[NSEW]\.?|North|South|East|West))?"
    r"(?: (?:\d{1,3}(?:st|nd|rd|th)|[A-Z][a-z'-]+)){1,4}"  # street name: capitalised words or 5th
    rf" {_STREET_SUFFIX}\b\.?"
    r"(?P<tail>(?:,? (?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor)\.? ?#?[\w-]+)?"
    r",?(?: |\s*\n\s*)(?:[A-Z][a-z]+ ){0,3}[A-Z][a-z]+(?:, | )"
    rf"(?:(?:{_US_STATES}) \d{{5}}(?:-\d{{4}})?|{_UK_POSTCODE})\b)?"
)
_CITY_STATE_ZIP = re.compile(rf",\s?(?:{_US_STATES})\s\d{{5}}(?:-\d{{4}})?(?!\d)")
_CITY = re.compile(r"[A-Z][a-z]+(?: [A-Z][a-z]+){0,3}\Z")
_POSTCODE_WORDS = ("post",)
_POSTCODE_WORD = re.compile(r"post(?:al)?\s?code\b[\s:]*")
_UK_POSTCODE_RE = re.compile(_UK_POSTCODE + r"\b")
_YEAR = re.compile(r"(?:19|20)\d\d\Z")


#: street types written before the name, in French, Spanish, Portuguese, Italian and Polish, with their
#: usual abbreviations (C/, Avda., Pza., R., V.le, ul., al., os., pl.)
_TYPE_BEFORE = (
    r"rue|avenue|av\.?|bd|boulevard|place|pl\.|chemin|all[ée]e|impasse|quai|route|cours|square"
    r"|calle|c/|avda\.?|avenida|plaza|pza\.?|paseo|p[º°]|carrer|camino|ronda|traves[ií]a"
    r"|rua|r\.|travessa|pra[çc]a|largo|alameda|estrada|rodovia"
    r"|via|v\.|viale|v\.le|corso|c\.so|piazza|p\.za|piazzale|vicolo|lungomare|strada"
    r"|ul\.?|ulica|ulicy|al\.|aleja|alei|os\.|osiedle|osiedlu|plac|placu"
    r"|laan(?= van )"
)
#: a word of a street's name: capitalised (any script of these languages), a particle, or an ordinal
_PARTICLE = (
    r"van der|van de|van|der|den|ten|ter|de|del|de la|la|las|los|da|do|dos|das|di|della|delle|dei|degli"
    r"|du|des|le|les|l'|d'|dell'|e|y|i"
)
_NAME_PART = rf"(?:[A-ZÀ-ÖØ-ÞĀ-Ž][\w'’.-]*|(?:{_PARTICLE})(?=[\s'])|\d{{1,2}}[º°ª]?)"
_CAPITALISED = r"[A-ZÀ-ÖØ-ÞĀ-Ž][\w'’.-]*"
_STREET_NAME = rf"(?:{_NAME_PART}[ '’]+){{0,5}}{_CAPITALISED}"
_HOUSE_NUMBER = r"\d{1,4}[a-zA-Z]?(?:[/-](?:\d{1,4}[a-zA-Z]?|[a-zA-Z]\b))?"
#: what may stand between a house number and the postcode: the flat, floor, building or staircase
#: (Bât. B, bajo, 2º izq., m. 4, lok. 5, Whg. 3, interno 7, Apt 4)
_COMPLEMENT = (
    r"(?i:b[âa]t(?:iment)?\.?|esc(?:alier)?\.?|[ée]tage|apt\.?|appt?\.?|apartment|flat|suite|ste\.?|unit"
    r"|bajo|piso|planta|puerta|pta\.?|esc\.?|dcha\.?|izq(?:da)?\.?|andar|r/c|esq\.?|dto\.?|cv\.?"
    r"|int(?:erno)?\.?|scala|sc\.|piano|m\.|mieszk\.?|lok(?:al)?\.?|whg\.?|wohnung|hinterhaus"
    r"|vorderhaus|og|eg|bus|boîte|bte)(?:\s?[\w/º°ª.-]{1,6})?"
)
#: what ends a street before its postcode: the house number, a complement, and a comma, a space or a
#: line break
_BEFORE_POSTCODE = rf"(?:,?\s*{_COMPLEMENT}(?:,?\s*\d{{1,2}}[º°ª]?(?:\s?(?i:izq|dcha|esq|dto)\.?)?)?)?,?\s+\Z"
#: "Calle Mayor, 5" | "ul. Marszałkowska 10/12" | "Avenida da Liberdade, nº 110", before the postcode
_TYPE_FIRST_BEFORE = re.compile(
    rf"(?<![\w/])(?i:{_TYPE_BEFORE})\s+{_STREET_NAME},?\s*(?:(?i:n[º°o]\.?|n\.[º°]|nr\.?)\s*)?"
    rf"{_HOUSE_NUMBER}{_BEFORE_POSTCODE}"
)
#: "12 rue de la Paix", "12, Rue du Bac", "7 bis avenue Foch", "5 via Garibaldi"
_NUMBER_FIRST_STREET = re.compile(
    rf"\d{{1,4}}(?: ?(?:bis|ter|[A-Za-z]))?,? (?i:{_TYPE_BEFORE}) +{_STREET_NAME}"
)
#: German and Dutch street names end in their type: Hauptstraße, Berliner Str., Kerkstraat, Keizersgracht
_TYPE_SUFFIXES = (
    "straße", "strasse", "str.", "weg", "allee", "platz", "gasse", "damm", "ufer", "chaussee", "graben",
    "straat", "laan", "plein", "gracht", "kade", "singel", "dijk", "steeg", "dreef",
)  # fmt: skip
_SUFFIX_STREET = re.compile(
    rf"(?P<street>(?:[A-ZÄÖÜ][\w.-]*[ -])?[A-ZÄÖÜ][\w.-]*)\s?{_HOUSE_NUMBER}{_BEFORE_POSTCODE}"
)
#: after a street: the postcode and city (10115 Berlin, 75002 Paris, 1015 CJ Amsterdam, 00-950
#: Warszawa, 1100-053 Lisboa), on the same line or the next
_POSTCODE_CITY = re.compile(
    r"(?:,\s*|\s*\r?\n\s*|\s+)(?:(?:D|F|I|E|P|NL|PL|A|B|CH|L)-)?"
    r"(?:\d{5}|\d{4} ?[A-Z]{2}|\d{2}-\d{3}|\d{4}-\d{3}|\d{4})"
    r"\s+[A-ZÀ-ÖØ-ÞĀ-Ž][\w'’]*(?:[ -][A-ZÀ-ÖØ-ÞĀ-Ž][\w'’]*){0,2}"
)
_POSTCODE_AT = re.compile(r"\d{5} [A-ZÀ-ÖØ-Þ]|\d{4} ?[A-Z]{2} [A-Z]")
_DASHED_POSTCODE_AT = re.compile(r"(?:\d{2}-\d{3}|\d{4}-\d{3}) [A-ZÀ-ÖØ-ÞĀ-Ž]")
_NUMBER_FIRST_BEFORE = re.compile(_NUMBER_FIRST_STREET.pattern + _BEFORE_POSTCODE)


def _eu_street_spans(t: _Text) -> Iterator[tuple[int, int]]:
    """Streets of DE, FR, ES, PT, IT, NL and PL. Found from the postcode and city after them, which
    costs nothing on prose (a number before a capitalised word is rare), or from a number first
    street with a capital type ("12 Rue de Rivoli") on its own."""
    text = t.text
    postcodes = [start for start in t.house_numbers if _POSTCODE_AT.match(text, start)]
    postcodes += [start for start, _ in t.numbers if _DASHED_POSTCODE_AT.match(text, start)]
    for start in t.house_numbers:
        street = _NUMBER_FIRST_STREET.match(text, start)
        if street and not _char(text, start - 1).isalnum():
            yield _with_postcode(text, start, street.end())
    for postcode in postcodes:
        window = _before(text, postcode, 100)
        street = (
            _NUMBER_FIRST_BEFORE.search(window)
            or _TYPE_FIRST_BEFORE.search(window)
            or _suffix_street(window)
            or _NAMED_BEFORE_POSTCODE.search(window)
        )
        if street and not _char(window, street.start() - 1).isalnum():
            street_start = postcode - len(window) + street.start()
            street_end = street_start + len(street.group().rstrip(", \r\n\t"))
            yield _with_postcode(text, street_start, street_end)


#: a German street named with a preposition (Am Lindenhof 3, In der Au 7) counts before a postcode and city
_NAMED_BEFORE_POSTCODE = re.compile(
    r"(?<![\w.-])(?:Am|An der|An den|Im|Auf der|Auf dem|Zum|Zur|In der|In den) "
    r"[A-ZÄÖÜ][a-zäöüß]{3,}(?:-[A-ZÄÖÜ][a-zäöüß]+)?"
    rf" {_HOUSE_NUMBER}{_BEFORE_POSTCODE}"
)
#: a house number after a street with no postcode after it: ``_bare_eu_street_spans`` starts from these
_SHORT_NUMBER = re.compile(
    r"\d{1,4}(?:[a-zA-Z](?![\w]))?(?:/(?:\d{1,4}[a-zA-Z]?|[a-zA-Z]\b))?(?![\w%°º])(?![.,:]\d)"
)
#: what follows a number that makes it a quantity, not a house number ("2 times", "3 Mal", "80 cm")
_UNIT_AFTER = re.compile(
    r",?\s*(?:times|mal|volte|veces|vezes|razy|keer|fois|x|km|m|cm|mm|kg|g|h|min|uur|uhr|hours|euro|eur"
    r"|€|\$|percent|prozent|procent|per cent|por ciento|pour cent|per cento|st[üu]ck|pcs|items|seiten)\b"
)
#: street types that are also ordinary words (via, route, place, corso, largo…): written lower case they
#: count only after a preposition ("abito in via Roma 3", "na rua…")
_AMBIGUOUS_TYPES = frozenset(
    {"via", "v.", "route", "place", "cours", "square", "plaza", "largo", "corso", "strada", "r.", "ronda",
     "alameda", "camino", "plac", "pl.", "av", "av."}
)  # fmt: skip
_PREPOSITIONS = frozenset(
    [
        "in",
        "a",
        "al",
        "alla",
        "di",
        "da",
        "na",
        "no",
        "em",
        "en",
        "à",
        "au",
        "sur",
        "presso",
        "nella",
        "della",
        "dalla",
        "de",
        "la",
        "el",
        "on",
        "at",
        "przy",
        "w",
        "we",
        "na",
        "op",
        "aan",
    ]
)
_TYPE_FIRST_BARE = re.compile(
    rf"(?<![\w/])(?P<type>(?i:{_TYPE_BEFORE}))\s+{_STREET_NAME},?\s*(?:(?i:n[º°o]\.?|n\.[º°]|nr\.?)\s*)?"
    rf"{_HOUSE_NUMBER}{_BEFORE_POSTCODE}"
)
_NUMBER_FIRST_BARE = re.compile(
    rf"\d{{1,4}}(?: ?(?:bis|ter|[A-Za-z]))?,? (?P<type>(?i:{_TYPE_BEFORE})) +{_STREET_NAME}"
)


def _bare_eu_street_spans(t: _Text) -> Iterator[tuple[int, int]]:
    """Streets of DE, FR, ES, PT, IT, NL and PL with no postcode after them: the street type (before
    the name or as its ending) and the house number in the language's order (Goethestraße 8a,
    Calle Mayor 5, 27 rue du Bac, ul. Długa 8/2). Candidates are the short numbers of the shared digit
    pass (``_Text.short_numbers``): one regex pass for every street, where a needle for each French
    type and a regex for a capitalised word before a number cost a pass each."""
    text = t.text
    rfind, type_initials = text.rfind, _TYPE_INITIALS
    for start, end in t.short_numbers:
        after = text[end : end + 1]
        if (
            (after == " " and text[end + 1 : end + 2] in type_initials)
            or (after == "," and text[end + 1 : end + 3] in _COMMA_TYPE_STARTS)
            or (after.isalpha() and text[end + 1 : end + 2] == " ")
        ):
            before = _char(text, start - 1)
            number_first = _LOWER_TYPE_AFTER.match(text, start) and _NUMBER_FIRST_BARE.match(text, start)
            if (
                number_first
                and before not in "_.-/+#$€£:"
                and not before.isalnum()
                and _type_ok(text, start, number_first.group("type"), number_first=True)
            ):
                yield _with_postcode(text, start, number_first.end())
                continue
        # most candidates are counts in prose ("covered 12 projects"): the first letter of the word
        # before rules them out with two calls in C
        if start < 2:
            continue
        low = start - 34 if start > 34 else 0
        initial = text[max(rfind(" ", low, start - 1), rfind("\n", low, start - 1)) + 1]
        if (initial.isupper() or initial in "nN") and _capitalised_word_before(text, start):
            yield from _named_street_span(text, start)


#: the first letters of the French types and of "bis" and "ter"
_TYPE_INITIALS = frozenset("rabciqpt")
_COMMA_TYPE_STARTS = frozenset(" " + initial for initial in _TYPE_INITIALS)
#: a French street type right after a house number (27 rue du Bac, 7 bis avenue Foch, 23, chemin…)
_LOWER_TYPE_AFTER = re.compile(
    r"[0-9]{1,4}(?: ?(?:bis|ter|[A-Za-z]))?,? "
    r"(?:rue|avenue|av\.|bd|boulevard|chemin|allée|impasse|quai|place|pl\.) "
)
#: what may stand between a street's name and its number: "nº", "Nr.", "n.º"
_NUMBER_MARK = re.compile(r"[ ,]{1,3}(?:n[º°o]\.? ?|[Nn]r\.? ?|n\.º ?)\Z")


def _capitalised_word_before(text: str, start: int) -> bool:
    """Whether a word with a capital and no digit ends one to three spaces or commas (and perhaps a
    "nº" or "Nr.") before ``start``: what a street's name or its ending looks like. Runs for every
    short number of the text, so string methods in C do the work."""
    head = text[max(0, start - 40) : start]
    name = head.rstrip(" ,")
    if not 0 < len(head) - len(name) <= 3:
        mark = _NUMBER_MARK.search(head)
        if mark is None:
            return False
        name = head[: mark.start()]
    words = name.rsplit(None, 1)
    word = words[-1] if words else ""
    return 0 < len(word) <= 31 and not word.islower() and not any(map(str.isdigit, word))


def _named_street_span(text: str, start: int) -> Iterator[tuple[int, int]]:
    """A type-first or suffix street ending in the house number at ``start``."""
    number = _SHORT_NUMBER.match(text, start)
    if number is None or (number.end() - start == 4 and _YEAR.match(text, start, number.end())):
        return
    end = number.end()
    if _UNIT_AFTER.match(text, end):
        return
    window = _before(text, end, 80) + " "
    offset = end - (len(window) - 1)
    words = [word.strip(",\"'(") for word in window.lower().split()[-8:-1]]
    # regexes with a hundred alternatives cost far more than a set: only where a type word is
    street = _TYPE_FIRST_BARE.search(window) if not _TYPE_WORD_SET.isdisjoint(words) else None
    if street and _type_ok(window, street.start(), street.group("type")):
        yield _with_postcode(text, offset + street.start(), end)
        return
    if not any(word.endswith(_TYPE_SUFFIXES) for word in words[-2:]):
        return
    suffix = _suffix_street(window, strict=True)
    if suffix:
        yield _with_postcode(text, offset + suffix.start(), end)


#: the words of ``_TYPE_BEFORE``, to test a window's words before running it
_TYPE_WORD_SET = frozenset({
    "rue", "avenue", "av", "av.", "bd", "boulevard", "place", "pl.", "chemin", "allée", "allee", "impasse",
    "quai", "route", "cours", "square", "calle", "c/", "avda", "avda.", "avenida", "plaza", "pza", "pza.",
    "paseo", "pº", "p°", "carrer", "camino", "ronda", "travesía", "travesia", "rua", "r.", "travessa",
    "praça", "praca", "largo", "alameda", "estrada", "rodovia", "via", "v.", "viale", "v.le", "corso",
    "c.so", "piazza", "p.za", "piazzale", "vicolo", "lungomare", "strada", "ul", "ul.", "ulica", "ulicy",
    "al.", "aleja", "alei", "os.", "osiedle", "osiedlu", "plac", "placu", "laan",
})  # fmt: skip


def _type_ok(text: str, start: int, street_type: str, *, number_first: bool = False) -> bool:
    """A lower-case street type that is also an ordinary word needs a preposition before it, unless it
    is abbreviated between a house number and the name ("7 av. Jean-Jaurès", "12 pl. Bellecour");
    "et al." is a citation."""
    if text.endswith("et ", 0, start):
        return False
    if street_type[0].isupper() or street_type.lower() not in _AMBIGUOUS_TYPES:
        return True
    if number_first and street_type.endswith("."):
        return True
    words = _before(text, start, 16).split()
    return bool(words) and words[-1].lower() in _PREPOSITIONS


def _suffix_street(window: str, *, strict: bool = False) -> re.Match[str] | None:
    """A street named by its ending (Hauptstraße, Keizersgracht) or by a type word after its name
    (Berliner Str.); ``strict`` (no postcode after): not the type word alone ("Platz 3", "Weg 2")."""
    m = _SUFFIX_STREET.search(window)
    if m is None:
        return None
    words = m.group("street").split()
    last = words[-1].lower()
    if last.endswith(_TYPE_SUFFIXES) and (len(words[-1]) > 4 or len(words) == 2):
        if strict and len(words) == 1 and last.rstrip(".") in {x.rstrip(".") for x in _TYPE_SUFFIXES}:
            return None
        return m
    if len(words) == 2 and words[-1].lower().rstrip(".") in (
        "str",
        "straße",
        "strasse",
        "weg",
        "platz",
        "allee",
    ):
        return m
    return None


def _with_postcode(text: str, start: int, end: int) -> tuple[int, int]:
    tail = _POSTCODE_CITY.match(text, end)
    return start, tail.end() if tail else end


def _scan_postal_address(t: _Text) -> Iterator[Finding]:
    text = t.text
    spans = [
        *_street_spans(t),
        *_city_state_zip_spans(text),
        *_postcode_spans(t),
        *_eu_street_spans(t),
        *_bare_eu_street_spans(t),
    ]
    for start, end in _merge_spans(sorted(spans), text):
        yield Finding("postal_address", start, end, text[start:end])


def _street_spans(t: _Text) -> Iterator[tuple[int, int]]:
    text = t.text
    for start in t.house_numbers:
        m = _STREET.match(text, start)
        if not m or _char(text, start - 1).isalnum() or _char(text, start - 1) in "_.,$/#+-":
            continue
        number = m.group().split(" ", 1)[0]
        if not m.group("tail"):
            if _YEAR.match(number):
                continue  # "in 2020 Wall Street …": a year, not a house number
            if _char(text, m.end()) == " " and _char(text, m.end() + 1).isupper():
                continue  # "3 Easy Street Food Recipes": a title-cased headline
        yield m.span()


def _city_state_zip_spans(text: str) -> Iterator[tuple[int, int]]:
    for m in _CITY_STATE_ZIP.finditer(text):
        city = _CITY.search(_before(text, m.start(), 40))
        if city and not _char(text, m.end()).isalnum():
            yield m.start() - len(city.group()), m.end()


def _postcode_spans(t: _Text) -> Iterator[tuple[int, int]]:
    for word_end in t.words_ending(_POSTCODE_WORDS, _POSTCODE_WORD):
        m = _UK_POSTCODE_RE.match(t.text, word_end)
        if m:
            yield m.span()


def _merge_spans(spans: list[tuple[int, int]], text: str) -> Iterator[tuple[int, int]]:
    """One address from pieces found apart (street, then "City, ST 12345") that touch or overlap."""
    current: tuple[int, int] | None = None
    for start, end in spans:
        if current and start <= current[1] + 3 and not text[current[1] : start].strip(", "):
            current = (current[0], max(current[1], end))
            continue
        if current:
            yield current
        current = (start, end)
    if current:
        yield current
