"""Finds PII and secrets in text before it leaves the machine, and masks them with placeholders.

This runs on every job, so the built-in detector is regexes plus validators (Luhn, mod-97, octet
ranges, entropy, context words), each anchored on something cheap to find (``@``, ``://``, a digit,
a literal prefix) so that 10 KB of prose costs well under a millisecond. Precision comes first: a
false positive blocks or reroutes a job, so shapes that are ambiguous on their own (bare digit
runs, dates, version strings) count only with a validator or a context word. Loopback and private
IP addresses count like any other: they still describe someone's infrastructure.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import importlib
import importlib.util
import ipaddress
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from typing import Any, Literal, Protocol, get_args

from gateway.errors import ConfigError

Category = Literal[
    "email", "phone", "credit_card", "iban", "us_ssn", "ip_address",
    "date_of_birth", "postal_address", "api_key", "private_key", "jwt", "url_password",
]  # fmt: skip
PII_CATEGORIES: frozenset[str] = frozenset(get_args(Category))
SECRET_CATEGORIES: frozenset[str] = frozenset({"api_key", "private_key", "jwt", "url_password"})

#: On overlap the earlier category wins, then the longer match: a validated secret or number beats
#: a shape that merely contains it (a JWT inside ``token=…``, an email inside ``user:pw@host``).
_PRIORITY: dict[str, int] = {name: rank for rank, name in enumerate((
    "private_key", "jwt", "url_password", "api_key", "iban", "credit_card", "us_ssn", "email",
    "postal_address", "date_of_birth", "phone", "ip_address",
))}  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """One detected value; ``value`` is for masking only, never for logs or the audit trail."""

    category: str
    start: int
    end: int
    value: str = field(repr=False)


class Detector(Protocol):
    """Finds PII in text: findings sorted by start and never overlapping."""

    name: str

    def find(self, text: str) -> list[Finding]: ...


def _before(text: str, index: int, width: int) -> str:
    return text[max(0, index - width) : index]


def _char(text: str, index: int) -> str:
    """The character at ``index``, or a space off either end: the edges of the text are boundaries."""
    return text[index] if 0 <= index < len(text) else " "


def _entropy(value: str) -> float:
    """Shannon entropy in bits per character (at most log2 of the number of distinct characters)."""
    counts = Counter(value).values()
    return math.log2(len(value)) - sum(n * math.log2(n) for n in counts) / len(value)


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
#: IBAN candidate), ``house`` a short number before a capitalised word (a street address candidate)
_DIGIT_RUN = re.compile(
    r"[0-9](?:(?P<number>(?=[0-9 ().-]{6})[0-9().-]*(?: [0-9(][0-9().-]*)*)"
    r"|(?P<house>[0-9]{0,5}[A-Za-z]? [A-Z]))"
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

    @cached_property
    def _digit_runs(self) -> tuple[list[tuple[int, int]], list[int]]:
        numbers: list[tuple[int, int]] = []
        houses: list[int] = []
        for m in _DIGIT_RUN.finditer(self.text):
            if m.lastgroup == "number":
                numbers.append((m.start() - (_char(self.text, m.start() - 1) in "+("), m.end()))
            else:
                houses.append(m.start())
        return numbers, houses

    @property
    def numbers(self) -> list[tuple[int, int]]:
        """Spans of 7+ digits and separators, with a leading ``+`` or ``(``."""
        return self._digit_runs[0]

    @property
    def house_numbers(self) -> list[int]:
        """Starts of numbers of up to 6 digits followed by a space and a capital letter."""
        return self._digit_runs[1]

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


# --- secrets ---------------------------------------------------------------------------------------

#: words that mark a documentation placeholder or a variable name rather than a real credential
_PLACEHOLDER_MARKERS = (
    "your", "example", "xxxx", "placeholder", "redacted", "dummy", "sample", "changeme", "insert",
    "replace", "token", "secret", "password", "config", "setting", "environ", "getenv", "value",
    "production", "staging", "****", "....",
)  # fmt: skip


def _looks_random(value: str) -> bool:
    """A credential-like string: two of lower/upper/digit, no placeholder words, and high entropy."""
    lowered = value.lower()
    if any(marker in lowered for marker in _PLACEHOLDER_MARKERS):
        return False
    classes = (value != value.upper()) + (value != value.lower()) + any(map(str.isdigit, value))
    return classes >= 2 and _entropy(value) >= 3.0


_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
#: one pattern per leading literal, so the regex engine skips ahead to it (see ``_Text``)
_API_KEYS = (  # OpenAI and Anthropic (sk-), Stripe (sk_, rk_), AWS key ids, Google, GitHub, Slack
    re.compile(r"sk(?:-[A-Za-z0-9_-]{20,}|_live_[A-Za-z0-9]{16,}|_test_[A-Za-z0-9]{16,})"),
    re.compile(r"rk_(?:live|test)_[A-Za-z0-9]{16,}"),
    re.compile(r"A(?:KIA[0-9A-Z]{16}|SIA[0-9A-Z]{16}|Iza[0-9A-Za-z_-]{35})"),
    re.compile(r"g(?:h[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,})"),
    re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"),
)
_KEY_PREFIX = re.compile(
    r"sk-(?:ant-(?:api\d+-|admin\d+-)?|proj-|svcacct-|admin-)?|AKIA|ASIA|gh[pousr]_|github_pat_"
    r"|xox[baprs]-|[sr]k_(?:live|test)_|AIza"
)
#: ``api_key = "…"``, ``"token": "…"``, ``password=…``: a secret-sounding name right before ``:`` or ``=``
_ASSIGNMENTS = (
    re.compile(r":\s{0,3}[\"']?([A-Za-z0-9_\-+/=]{16,512})"),
    re.compile(r"=\s{0,3}[\"']?([A-Za-z0-9_\-+/=]{16,512})"),
)
_SECRET_NAME = re.compile(
    r"(?:api[_-]?key|apikey|api[_-]?token|secret[_-]?key|client[_-]?secret|secret|access[_-]?key"
    r"|access[_-]?token|auth[_-]?token|refresh[_-]?token|token|password|passwd|pwd|private[_-]?key)"
    r"[\"']?\s{0,3}\Z"
)
_BEARER = re.compile(r"earer\s+([A-Za-z0-9._~+/=-]{16,})")


def _scan_api_key(t: _Text) -> Iterator[Finding]:
    text = t.text
    for pattern in _API_KEYS:
        for m in pattern.finditer(text):
            prefix = _KEY_PREFIX.match(m.group())
            body = m.group()[prefix.end() if prefix else 0 :]
            if _char(text, m.start() - 1) in _KEY_CHARS or _char(text, m.end()) in _KEY_CHARS:
                continue  # part of a longer identifier (task-…, a 17th AWS character)
            if _looks_random(body):
                yield Finding("api_key", m.start(), m.end(), m.group())
    for pattern in _ASSIGNMENTS:
        for m in pattern.finditer(text):
            named = _SECRET_NAME.search(t.lower, max(0, m.start() - 48), m.start())
            if named and _looks_random(m.group(1)):
                yield Finding("api_key", m.start(1), m.end(1), m.group(1))
    for m in _BEARER.finditer(text):
        is_word = _char(text, m.start() - 1) in "Bb" and not _char(text, m.start() - 2).isalnum()
        if is_word and _looks_random(m.group(1)):
            yield Finding("api_key", m.start(1), m.end(1), m.group(1))


_PRIVATE_KEY = re.compile(
    r"-----BEGIN ([A-Z0-9 ]{0,30})PRIVATE KEY( BLOCK|)-----"
    # the body: base64 and PEM headers (Proc-Type: 4,ENCRYPTED), JSON-escaped newlines, never "-----"
    r"(?:(?:[A-Za-z0-9+/=\s:,\\]|-(?!----)){0,16000}?-----END \1PRIVATE KEY\2-----"
    # cut off: the base64 lines that are there, the last one shorter but still a line of its own
    r"|(?:\s+[A-Za-z0-9+/=]{16,})*(?:\r?\n[A-Za-z0-9+/=]{1,15}(?![^\r\n]))?)"
)
_BASE64_TOKEN = re.compile(r"[A-Za-z0-9+/=]{16,}")


def _scan_private_key(t: _Text) -> Iterator[Finding]:
    text = t.text
    for m in _PRIVATE_KEY.finditer(text):
        block = m.group().rstrip()
        header_end = block.index("-----", 11) + 5
        body = block[header_end:].split("-----END", 1)[0].replace("\\n", "\n")  # also JSON-escaped
        # key material, not a header alone or prose about keys: base64 runs as long as a key's lines
        if any(_BASE64_TOKEN.fullmatch(token) for token in body.split()):
            yield Finding("private_key", m.start(), m.start() + len(block), block)


_JWT = re.compile(r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]{2,}={0,2}\.[A-Za-z0-9_-]{2,}={0,2}\.[A-Za-z0-9_-]*")


def _decode_json_segment(segment: str) -> Any:
    try:
        raw = base64.urlsafe_b64decode(segment.rstrip("=") + "=" * (-len(segment.rstrip("=")) % 4))
        return json.loads(raw)
    except (binascii.Error, ValueError):
        return None


def _scan_jwt(t: _Text) -> Iterator[Finding]:
    text = t.text
    for m in _JWT.finditer(text):
        if _char(text, m.start() - 1) in _KEY_CHARS:
            continue
        header = _decode_json_segment(m.group().split(".", 1)[0])
        if isinstance(header, dict) and "alg" in header:
            yield Finding("jwt", m.start(), m.end(), m.group())


_SCHEME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+.-")
_USERINFO = re.compile(r"([^\s:/?#@\[\]<>\"']{0,128}):([^\s/?#<>\"']{1,256})@(?=[A-Za-z0-9\[])")
_PLACEHOLDER_PASSWORD = re.compile(
    r"(?i)(?:password|pass|passwd|pwd|pw|secret|your[_-]?password|[*x.]+|<.*>|\{.*\}|\$.*|%s|%\(.*)\Z"
)


def _scan_url_password(t: _Text) -> Iterator[Finding]:
    """``scheme://user:password@host``: the finding is ``user:password`` (host and path stay)."""
    text = t.text
    at = text.find("://")
    while at != -1:
        scheme_start = at
        while scheme_start > 0 and text[scheme_start - 1] in _SCHEME_CHARS:
            scheme_start -= 1
        m = _USERINFO.match(text, at + 3)
        has_scheme = scheme_start < at and text[scheme_start].isalpha()
        if m and has_scheme and not _PLACEHOLDER_PASSWORD.match(m.group(2)):
            yield Finding("url_password", m.start(), m.end() - 1, m.group()[:-1])
        at = text.find("://", at + 3)


# --- contact details -------------------------------------------------------------------------------

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


_PHONE_RUN = re.compile(r"[+(\d][\d ().-]{6,24}\d")
_INTL_PHONE = re.compile(r"\+[1-9]\d*(?: ?\(\d{1,4}\) ?\d+)?(?:[ .-]\d+)*")
_LOCAL_PHONE = re.compile(r"(?:\(\d{1,5}\) ?)?\d+(?:[ .-]\d+)*")
_NANP = re.compile(
    r"(?<![\w.+-])(?:1[ .-])?(?:\([2-9]\d\d\) ?|[2-9]\d\d(?P<sep>[.-]))[2-9]\d\d(?(sep)(?P=sep)|[.-])\d{4}"
    r"(?![\w]|[.-]\d)"
)
#: the word for a phone in English, French, German, Spanish, Portuguese, Italian and Dutch; a bare
#: national number ("Tel. 030 901820", "Handy 0171 1234567") counts only after one of them
_PHONE_WORD = re.compile(
    r"\b(?:phone|phones|telephone|tel|call|calling|mobile|cell|cellphone|fax|whatsapp|sms|hotline"
    r"|landline|dial|ring|reach me"
    r"|t[eé]l[eé]phone|t[eé]l|portable|appelez|appeler"
    r"|telefon|telefonnummer|rufnummer|handy|handynummer|mobil|mobilnummer|festnetz"
    r"|tel[eé]fono|m[oó]vil|celular|telefone|telem[oó]vel|telefono|cellulare|telefoon|mobiel)\b"
)
#: words that make the number after them an identifier, not a phone (in the same languages)
_ID_WORD = re.compile(
    r"\b(?:order|invoice|id|ref|reference|account|acct|ticket|case|tracking|serial|sku|transaction"
    r"|confirmation|booking|customer|card|iban|ssn|isbn"
    r"|commande|facture|r[eé]f|r[eé]f[eé]rence|dossier|compte|carte|siret|siren"
    r"|bestellung|bestellnummer|bestellnr|rechnung|rechnungsnummer|rechnungsnr|auftrag|auftragsnummer"
    r"|kundennummer|kundennr|konto|kontonummer|vorgang|vorgangsnummer|sendungsnummer"
    r"|pedido|factura|cuenta|fattura|ordine|conto|encomenda|fatura|conta|bestelling|factuur|rekening)\b"
)
_DATE_SHAPE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}")
#: a French national number: ten digits in pairs from a trunk 0 (01 42 68 53 00, 06.12.34.56.78); no
#: other common number is written so, so it needs no phone word, only no id word before it
_FR_PHONE = re.compile(r"0[1-9](?P<sep>[ .-])\d\d(?:(?P=sep)\d\d){3}")


def _scan_phone(t: _Text) -> Iterator[Finding]:
    text = t.text
    for m in t.in_numbers(_PHONE_RUN):
        start, end = m.span()
        before, run = _char(text, start - 1), m.group()
        if before.isalnum() or before in "_+.-/#$€£" or _char(text, end).isalnum():
            continue
        if run.startswith("+"):
            if _INTL_PHONE.fullmatch(run) and 9 <= sum(map(str.isdigit, run)) <= 15:
                yield Finding("phone", start, end, run)
            continue
        nanp = list(_NANP.finditer(text, start, end))
        for n in nanp:
            yield Finding("phone", n.start(), n.end(), n.group())
        if nanp:
            continue
        french = _FR_PHONE.fullmatch(run) is not None
        if french or _local_phone_ok(run):
            phone_word, id_word = _phone_context(t.lower, start)
            if (french or phone_word) and not id_word:
                yield Finding("phone", start, end, run)


def _phone_context(lowered: str, start: int) -> tuple[bool, bool]:
    """Whether a phone word is shortly before, and whether an id word ("order", "Rechnung", …) or a
    ``#`` is between it (or the start of that stretch) and the number."""
    window = _before(lowered, start, 32)
    words = list(_PHONE_WORD.finditer(window))
    after_word = window[words[-1].end() :] if words else window
    return bool(words), bool(_ID_WORD.search(after_word)) or "#" in window[-3:]


def _local_phone_ok(run: str) -> bool:
    if not _LOCAL_PHONE.fullmatch(run) or not 9 <= sum(map(str.isdigit, run)) <= 15 or _DATE_SHAPE.match(run):
        return False
    dots = run.count(".")
    return not (dots and dots == len(re.findall(r"[ .()-]+", run)) and dots in (1, 3))  # decimal, IPv4


# --- numbers with checksums ------------------------------------------------------------------------

_CARD = re.compile(
    r"\d(?:\d{12,18}"
    r"|\d{3}(?P<sep>[ -])\d{4}(?P=sep)\d{4}(?P=sep)\d{1,4}(?:(?P=sep)\d{1,3})?"  # 4-4-4-4(-3)
    r"|\d{3}\.\d{4}\.\d{4}\.\d{4}(?:\.\d{3})?"  # dotted: full groups only, never 1.2.3.4 or 12.5
    r"|\d{3}(?P<amex>[ .-])\d{6}(?P=amex)\d{4,5})"  # Amex 4-6-5, Diners 4-6-4
)
#: (lowest, highest) issuer prefix of a given width -> the card lengths that scheme issues
_CARD_RANGES: tuple[tuple[int, int, int, range], ...] = (
    (4, 4, 1, range(13, 20, 3)),  # Visa: 13, 16, 19
    (51, 55, 2, range(16, 17)), (2221, 2720, 4, range(16, 17)),  # Mastercard
    (34, 34, 2, range(15, 16)), (37, 37, 2, range(15, 16)),  # Amex
    (6011, 6011, 4, range(16, 20)), (644, 649, 3, range(16, 20)), (65, 65, 2, range(16, 20)),  # Discover
    (3528, 3589, 4, range(16, 20)),  # JCB
    (300, 305, 3, range(14, 20)), (36, 36, 2, range(14, 20)), (38, 39, 2, range(14, 20)),  # Diners Club
    (62, 62, 2, range(16, 20)),  # UnionPay
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


def ssn_ok(ssn: str) -> bool:
    """US SSN rules: no area 000, 666 or 900-999, no group 00, no serial 0000."""
    digits = ssn.replace("-", "").replace(" ", "")
    area, group, serial = digits[:3], digits[3:5], digits[5:]
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


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


# --- dates of birth and postal addresses -----------------------------------------------------------

#: needles for ``str.find`` in the lowercased text, then the words they start: birth and its field
#: names (dob, birth_date, dateOfBirth, patientDob), and "born" and "date of birth" in French, German,
#: Spanish, Portuguese, Italian and Dutch (né le, geb., Geburtsdatum, nacida el, F. nac., nascido em,
#: nata il, geboren op); "na" finds naissance, nacimiento, nascita and nato in one pass, not five
_BIRTH_WORDS = ("born", "birth", "dob", "d.o.b", "na", "geb", "né")
_BIRTH_WORD = re.compile(
    r"(?:born|birth(?:[ _-]?(?:day|date))?|dob|d\.o\.b\.?"
    r"|né(?:e|\(e\))?s?|naissance"
    r"|geboren|geb\.(?:-?datum)?|geburts(?:datum|tag)|geboorte(?:datum)?"
    r"|nac(?:imiento|id[oa]s?|\.)|nasc(?:imento|id[oa]s?|ita)"
    r"|nat[oa](?=\s+(?:il|a|ad)\s))"  # Italian "nato il", "nata a Roma il"; not NATO
    r"(?![^\W\d_])"
)
#: month names and their usual abbreviations in the same languages, to their number
_MONTH_NUMBERS: dict[str, int] = {
    name: number
    for number, names in enumerate(
        (
            "jan january janvier janv januar jänner enero ene janeiro gennaio gen januari",
            "feb february février fevrier févr fevr februar febrero fevereiro fev febbraio febr februari",
            "mar march mars märz maerz mrz marzo março marco maart mrt",
            "apr april avril avr abril abr aprile",
            "may mai mayo maio maggio mag mei",
            "jun june juin juni junio junho giugno giu",
            "jul july juillet juil juli julio julho luglio lug",
            "aug august août aout agosto ago augustus",
            "sep sept september septembre septiembre setiembre set setembro settembre",
            "oct october octobre oktober okt octubre outubro out ottobre ott",
            "nov november novembre noviembre novembro",
            "dec december décembre decembre déc dezember dez diciembre dic dezembro dicembre",
        ),
        start=1,
    )
    for name in names.split()
}
#: a word that may be a month, looked up in ``_MONTH_NUMBERS`` after a match: far cheaper than trying
#: a hundred names at every position of the text
_MONTH = r"(?<![^\W\d_])[^\W\d_]{3,10}"
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
    r"[\s:=,()'\"-]*(?:(?:is|was|on|of|in|at|the|le|à|a|am|em|el|en|il|ad|op|de|du|da|di|do"
    r"|[A-ZÀ-ÖØ-Þ][a-zß-öø-ÿ]+|[A-Za-z]+/[A-Za-z]+/[A-Za-z]+)\b[\s:=,()'\"-]*){0,4}"
)
#: a field of a CSV header ("id", "e-mail", "date_of_birth", "Date (ISO)"): a short label, or empty
_FIELD_LABEL = re.compile(r"(?:[^\W\d][\w .()/#'-]{0,39})?")
_CSV_DELIMITERS = ",;\t|"
_CSV_QUOTES = " \"'"


def _valid_date(year: int, month: int, day: int) -> bool:
    if year < 100:
        year += 1900 if year > 30 else 2000
    try:
        return 1900 <= date(year, month, day).year <= 2030
    except ValueError:
        return False


def _date_ok(m: re.Match[str]) -> bool:
    g = m.groupdict()
    if g["y"]:
        return _valid_date(int(g["y"]), int(g["m"]), int(g["d"]))
    if g["a"]:
        a, b, year = int(g["a"]), int(g["b"]), int(g["year"])
        return _valid_date(year, b, a) or _valid_date(year, a, b)  # day-first or month-first
    month = _MONTH_NUMBERS.get((g["month"] or g["month2"]).lower())
    return month is not None and _valid_date(int(g["dy"] or g["dy2"]), month, int(g["day"] or g["day2"]))


def _scan_date_of_birth(t: _Text) -> Iterator[Finding]:
    """A date within a few words after a birth word ("born", "DOB", "née le", "Geburtsdatum"), or under
    a birth column of a CSV header ("id,name,dob"); dates alone are not PII."""
    text = t.text
    table_end = 0  # where the last table read ended: a header before it was one of its rows
    for word_end in sorted(t.words_ending(_BIRTH_WORDS, _BIRTH_WORD)):
        m = _DATE.search(text, word_end, word_end + 40)
        if m and _BIRTH_GAP.fullmatch(text, word_end, m.start()) and _date_ok(m):
            yield Finding("date_of_birth", m.start(), m.end(), m.group())
        elif word_end >= table_end:
            found, table_end = _csv_column_dates(text, word_end)
            yield from found


def _csv_column_dates(text: str, word_end: int) -> tuple[list[Finding], int]:
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
        if m and _date_ok(m):
            start = at + sum(len(cell) + 1 for cell in row[:column]) + row[column].index(value)
            found.append(Finding("date_of_birth", start, start + len(value), value))
        at = row_end + 1
    return found, at


_US_STATES = (
    "AL|AK|AZ|AR|CA|CO|CT|DE|DC|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY"
    "|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|PR"
)
_UK_POSTCODE = r"[A-Z]{1,2}\d[A-Z\d]? ?\d[ABD-HJLNP-UW-Z]{2}"
_STREET_SUFFIX = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Way|Parkway|Pkwy|Court|Ct|Place|Pl"
    r"|Square|Sq|Terrace|Highway|Hwy|Circle|Crescent|Mews|Plaza)"
)
_STREET = re.compile(
    r"\d{1,6}[A-Za-z]?"  # house number (221B)
    r"(?: (?:[NSEW]\.?|North|South|East|West))?"
    r"(?: (?:\d{1,3}(?:st|nd|rd|th)|[A-Z][a-z'-]+)){1,4}"  # street name: capitalised words or 5th
    rf" {_STREET_SUFFIX}\b\.?"
    r"(?P<tail>(?:,? (?:Apt|Apartment|Suite|Ste|Unit|Flat|Floor)\.? ?#?[\w-]+)?"
    r",? (?:[A-Z][a-z]+ ){0,3}[A-Z][a-z]+(?:, | )"
    rf"(?:(?:{_US_STATES}) \d{{5}}(?:-\d{{4}})?|{_UK_POSTCODE})\b)?"
)
_CITY_STATE_ZIP = re.compile(rf",\s?(?:{_US_STATES})\s\d{{5}}(?:-\d{{4}})?(?!\d)")
_CITY = re.compile(r"[A-Z][a-z]+(?: [A-Z][a-z]+){0,3}\Z")
_POSTCODE_WORDS = ("post",)
_POSTCODE_WORD = re.compile(r"post(?:al)?\s?code\b[\s:]*")
_UK_POSTCODE_RE = re.compile(_UK_POSTCODE + r"\b")
_YEAR = re.compile(r"(?:19|20)\d\d\Z")


def _scan_postal_address(t: _Text) -> Iterator[Finding]:
    text = t.text
    spans = [*_street_spans(t), *_city_state_zip_spans(text), *_postcode_spans(t)]
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


# --- the detectors ---------------------------------------------------------------------------------

_SCANNERS: dict[str, Callable[[_Text], Iterator[Finding]]] = {
    "email": _scan_email,
    "phone": _scan_phone,
    "credit_card": _scan_credit_card,
    "iban": _scan_iban,
    "us_ssn": _scan_ssn,
    "ip_address": _scan_ip,
    "date_of_birth": _scan_date_of_birth,
    "postal_address": _scan_postal_address,
    "api_key": _scan_api_key,
    "private_key": _scan_private_key,
    "jwt": _scan_jwt,
    "url_password": _scan_url_password,
}


def _check_categories(categories: Iterable[str] | None) -> frozenset[str]:
    if categories is None:
        return PII_CATEGORIES
    chosen = frozenset(categories)
    unknown = sorted(chosen - PII_CATEGORIES)
    if unknown:
        raise ConfigError(f"unknown PII categories {unknown}; known: {', '.join(sorted(PII_CATEGORIES))}")
    return chosen


def _resolve(candidates: Iterable[Finding]) -> list[Finding]:
    """Non-overlapping findings sorted by start; on overlap, priority then length decides."""
    chosen: list[Finding] = []
    starts: list[int] = []
    for finding in sorted(candidates, key=lambda f: (_PRIORITY[f.category], f.start - f.end, f.start)):
        at = bisect.bisect_right(starts, finding.start)
        if at and chosen[at - 1].end > finding.start:
            continue
        if at < len(chosen) and chosen[at].start < finding.end:
            continue
        starts.insert(at, finding.start)
        chosen.insert(at, finding)
    return chosen


class BuiltinDetector:
    """Regexes plus validators, stdlib only: the default engine."""

    name = "builtin"

    def __init__(self, categories: Iterable[str] | None = None) -> None:
        self.categories = _check_categories(categories)
        self._scanners = [_SCANNERS[name] for name in sorted(self.categories, key=_PRIORITY.__getitem__)]

    def find(self, text: str) -> list[Finding]:
        scanned = _Text(text)
        found = _resolve(finding for scan in self._scanners for finding in scan(scanned))
        if scanned.text is text:
            return found
        # scanned with ASCII spaces; the values to mask are what the text holds (a no-break space)
        return [Finding(f.category, f.start, f.end, text[f.start : f.end]) for f in found]


#: Presidio's entity types that mean the same as one of ours (its DATE_TIME is any date, not a DOB)
_PRESIDIO_ENTITIES: dict[str, str] = {
    "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card", "IBAN_CODE": "iban",
    "US_SSN": "us_ssn", "IP_ADDRESS": "ip_address",
}  # fmt: skip


class PresidioDetector:
    """Presidio's analyzer for what it knows, united with the builtin detector for the rest (secrets…)."""

    name = "presidio"

    def __init__(self, categories: Iterable[str] | None = None, *, score_threshold: float = 0.5) -> None:
        self.categories = _check_categories(categories)
        try:
            presidio = importlib.import_module("presidio_analyzer")
        except ImportError as exc:
            raise ConfigError(
                "engine 'presidio' needs the presidio-analyzer package: pip install presidio-analyzer"
            ) from exc
        self._engine: Any = presidio.AnalyzerEngine()
        self._entities = sorted(e for e, c in _PRESIDIO_ENTITIES.items() if c in self.categories)
        self._score_threshold = score_threshold
        self._builtin = BuiltinDetector(self.categories)

    def find(self, text: str) -> list[Finding]:
        found = self._builtin.find(text)
        if self._entities:
            results = self._engine.analyze(
                text=text, language="en", entities=self._entities, score_threshold=self._score_threshold
            )
            for r in results:
                category = _PRESIDIO_ENTITIES.get(r.entity_type)
                if category in self.categories:
                    found.append(Finding(category, r.start, r.end, text[r.start : r.end]))
        return _resolve(found)


def presidio_available() -> bool:
    """Whether presidio-analyzer can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("presidio_analyzer") is not None
    except (ImportError, ValueError):
        return False


def make_detector(engine: str = "builtin", categories: Iterable[str] | None = None) -> Detector:
    """The detector for a policy's ``engine``: builtin, presidio, or auto (presidio when installed)."""
    if engine == "auto":
        engine = "presidio" if presidio_available() else "builtin"
    if engine == "builtin":
        return BuiltinDetector(categories)
    if engine == "presidio":
        return PresidioDetector(categories)
    raise ConfigError(f"unknown PII detector engine {engine!r}; expected builtin, presidio or auto")


# --- masking ---------------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z_]*_\d+\]")


class Redactor:
    """Masks findings with stable placeholders and restores them in an answer."""

    def __init__(self, detector: Detector) -> None:
        self._detector = detector
        self._placeholders: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._counts: Counter[str] = Counter()

    def mask(self, text: str) -> str:
        """``text`` with every finding replaced; the same value gets the same placeholder each time."""
        parts, position = [], 0
        for finding in self._detector.find(text):
            parts += [text[position : finding.start], self._placeholder(finding)]
            position = finding.end
        parts.append(text[position:])
        return "".join(parts)

    def restore(self, text: str) -> str:
        """Placeholders this redactor handed out back to their values; exact matches only."""
        if not self._values:
            return text
        return _PLACEHOLDER.sub(lambda m: self._values.get(m.group(), m.group()), text)

    @property
    def counts(self) -> dict[str, int]:
        """Category -> number of distinct values masked so far."""
        return dict(self._counts)

    def _placeholder(self, finding: Finding) -> str:
        key = (finding.category, finding.value)
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            self._counts[finding.category] += 1
            placeholder = f"[{finding.category.upper()}_{self._counts[finding.category]}]"
            self._placeholders[key] = placeholder
            self._values[placeholder] = finding.value
        return placeholder
