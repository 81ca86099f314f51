"""Scanners for secrets: API keys and tokens, private keys, JWTs, passwords in URLs."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from gateway.pii.findings import Finding
from gateway.pii.text import _char, _Text


def _entropy(value: str) -> float:
    """Shannon entropy in bits per character (at most log2 of the number of distinct characters)."""
    counts = Counter(value).values()
    return math.log2(len(value)) - sum(n * math.log2(n) for n in counts) / len(value)


#: words that mark a documentation placeholder or a variable name rather than a real credential
_PLACEHOLDER_MARKERS = (
    "your", "example", "xxxx", "placeholder", "redacted", "dummy", "sample", "changeme", "insert",
    "replace", "token", "secret", "password", "config", "setting", "environ", "getenv", "value",
    "production", "staging", "****", "....",
)  # fmt: skip


#: the markers in one pattern: one call in C where a loop over twenty ``in`` tests costs ten times more
_PLACEHOLDER_MARKER = re.compile("|".join(map(re.escape, _PLACEHOLDER_MARKERS)))


def _looks_random(value: str) -> bool:
    """A credential-like string: two of lower/upper/digit, no placeholder words, and high entropy."""
    if _PLACEHOLDER_MARKER.search(value.lower()):
        return False
    classes = (value != value.upper()) + (value != value.lower()) + any(map(str.isdigit, value))
    return classes >= 2 and _entropy(value) >= 3.0


_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")
#: one pattern per leading literal, so the regex engine skips ahead to it (see ``_Text``)
_API_KEYS = (  # OpenAI and Anthropic (sk-), Stripe (sk_, rk_), AWS key ids, Google, GitHub, Slack
    re.compile(r"sk(?:-[A-Za-z0-9_-]{20,}|_live_[A-Za-z0-9]{16,}|_test_[A-Za-z0-9]{16,})"),
    re.compile(r"rk_(?:live|test)_[A-Za-z0-9]{16,}"),
    re.compile(r"A(?:KIA[0-9A-Z]{16}|SIA[0-9A-Z]{16}|Iza[0-9A-Za-z_-]{35})"),
    re.compile(r"g(?:h[pousr]_[A-Za-z0-9]{36,}|ithub_pat_[A-Za-z0-9_]{22,}|lpat-[A-Za-z0-9_-]{20,})"),
    re.compile(r"xox[baprs]-[A-Za-z0-9-]{10,}"),
    re.compile(r"SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"),  # SendGrid; GitLab's glpat- is above
    re.compile(r"xkeysib-[a-f0-9]{64}-[A-Za-z0-9]{16}"),  # Brevo (Sendinblue)
    re.compile(r"key-[a-f0-9]{32}"),  # Mailgun
)
#: a vendor prefix and an underscore before a long random body (hf_…, shpat_…, lin_api_…, ntn_…,
#: dop_v1_…, glsa_…, npm_…, whsec_…): found from the underscore, the body must look random
_VENDOR_KEY = re.compile(r"([a-z]{2,8})_(?:[a-z0-9]{2,6}_)?([A-Za-z0-9]{24,128})(?![\w-])")
#: prefixes that name a hash or an identifier, not a credential
_NOT_KEY_PREFIXES = frozenset(
    {"sha", "sha1", "md5", "hash", "id", "uuid", "commit", "rev", "build", "trace", "span", "req", "request",
     "file", "img", "image", "test", "mock", "run", "job", "msg", "evt", "obj", "ch", "cus", "pi", "pm"}
)  # fmt: skip
_KEY_PREFIX = re.compile(
    r"sk-(?:ant-(?:api\d+-|admin\d+-)?|proj-|svcacct-|admin-)?|AKIA|ASIA|gh[pousr]_|github_pat_"
    r"|xox[baprs]-|[sr]k_(?:live|test)_|AIza|SG\.|glpat-|xkeysib-|key-"
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
#: a secret's noun a few words before a colon in prose, in the eight languages, no hash or id between
_SECRET_PROSE = re.compile(
    r"\b(?:token|secret|api[ _-]?key|access[ _-]?key|jeton|schl[üu]ssel|geheimnis|sleutel|clave|chiave|chave"
    r"|klucz|segreto|secreto|sekret)\b(?:(?!hash|sha|md5|checksum|digest|fingerprint|\bid\b)[^.:;!?\n]){0,32}\s?\Z"
)
#: the stems of ``_SECRET_PROSE``'s nouns, looked for with ``in`` before the regex runs
_SECRET_NOUNS = ("token", "secret", "key", "jeton", "schl", "geheim", "sleutel", "clave", "chiave", "chave",
                 "klucz", "segreto", "sekret")  # fmt: skip
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_BEARER = re.compile(r"earer\s+([A-Za-z0-9._~+/=-]{16,})")


def _unpronounceable(body: str) -> bool:
    """A letters-only body of random characters (hf_…), not camelCase words: 30+ letters, few vowels."""
    vowels = sum(c in "aeiouAEIOU" for c in body)
    return len(body) >= 30 and vowels / len(body) < 0.3


def _vendor_keys(t: _Text) -> Iterator[Finding]:
    """``prefix_body`` keys of vendors not listed in ``_API_KEYS``, found from their underscore."""
    text = t.text
    for at in t.find_all("_"):
        prefix_start = at
        while prefix_start > 0 and at - prefix_start < 9 and "a" <= text[prefix_start - 1] <= "z":
            prefix_start -= 1
        if prefix_start == at or _char(text, prefix_start - 1) in _KEY_CHARS:
            continue
        m = _VENDOR_KEY.match(text, prefix_start)
        if m is None or m.group(1) in _NOT_KEY_PREFIXES or not _looks_random(body := m.group(2)):
            continue
        if any(map(str.isdigit, body)) or _unpronounceable(body):
            yield Finding("api_key", m.start(), m.end(), m.group())


def _assigned_keys(t: _Text) -> Iterator[Finding]:
    """A random value after a secret's name and ``:`` or ``=`` (``api_key = "…"``), or after a colon
    a few words past a secret's noun in prose ("here is the courier's API token: …")."""
    for pattern in _ASSIGNMENTS:
        for m in pattern.finditer(t.text):
            value, lead = m.group(1), max(0, m.start() - 48)
            if _SECRET_NAME.search(t.lower, lead, m.start()):
                named = True
            elif m.group().startswith(":") and len(value) >= 20 and not _UUID.fullmatch(value):
                window = t.lower[lead : m.start()]
                named = any(noun in window for noun in _SECRET_NOUNS) and bool(_SECRET_PROSE.search(window))
            else:
                named = False
            if named and _looks_random(value):
                yield Finding("api_key", m.start(1), m.end(1), value)


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
    yield from _assigned_keys(t)
    yield from _vendor_keys(t)
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
#: the password may hold a "#" written unencoded (redis://default:pa#ss@host): it cannot start a fragment
#: before the host
_USERINFO = re.compile(r"([^\s:/?#@\[\]<>\"']{0,128}):([^\s/?<>\"']{1,256})@(?=[A-Za-z0-9\[])")
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


# --- passwords -------------------------------------------------------------------------------------

#: the names a password or secret goes by, lowercased, as they end before ``=`` or ``:`` in code
#: (``db_password``, ``userPassword``), env files (``SMTP_PASSWORD=``, ``STRIPE_API_KEY=``), JSON and
#: YAML fields, connection strings (``Pwd=``) and prose in English, German, French, Spanish,
#: Portuguese, Italian (which says "password"), Dutch and Polish
_SECRET_NAMES = (
    "password", "passwd", "passwort", "pass", "pwd", "passphrase", "kennwort", "mot de passe", "mdp",
    "contraseña", "contrasena", "clave", "senha", "wachtwoord", "hasło", "haslo",
    "secret", "token", "api_key", "apikey", "api-key", "secret_key", "access_key", "auth_key",
)  # fmt: skip
#: names that only ever hold a password: a weak-looking value still counts there, while the values of
#: ``token``/``secret``/``api_key`` must look random (a "token: 1500" count is not one)
_PASSWORD_NAMES = frozenset(_SECRET_NAMES[: _SECRET_NAMES.index("secret")])
#: prose that names a password and joins it to the value with a word ("the password is …",
#: "das Passwort lautet …", "le mot de passe est …", "la contraseña es …", "a senha é …", "la password
#: è …", "het wachtwoord is …", "hasło to …"), with up to four words of what it is for between ("la
#: password del wifi è …") and an adverb after ("est bien …", "ist jetzt …"): needles for the words,
#: then the word and the join
_PROSE_NEEDLES = ("pas", "contras", "clave", "kennw", "senha", "wacht", "hasł")
_PROSE_NAME = re.compile(
    r"(?:password|passwort|kennwort|passe|contrase[ñn]a|clave|senha|wachtwoord|has[łl]o)"
    r"(?:\s+[\w'’]{1,14}){0,4}?"
    r"\s+(?:was|is|ist|lautet|est|es|era|é|è|e|jest|to|wynosi|brzmi)"
    r"(?:\s+(?:still|now|just|simply|bien|toujours|maintenant|d[ée]sormais|aussi|noch|jetzt|nun|immer noch"
    r"|todav[ií]a|ahora|tambi[ée]n|ainda|agora|tamb[ée]m|ancora|ora|adesso|sempre|nog|nu|steeds|nadal|teraz"
    r"|wci[ąa][żz]|te[żz]))?"
    r"(?:\s*:)?\s{1,2}[\"'`]?"
)
_PASSWORD_VALUE = re.compile(r"[^\s\"'`,;<>()\[\]{}]{4,128}")
#: values that stand for a password rather than being one: templates, masks, types, stock examples
_PASSWORD_PLACEHOLDER = re.compile(
    r"(?:\$.*|%.*|\{.*|<.*|\?.*|\*+|x{3,}|\.{3,}|•+|_+|-+|#+|[\w.]+\(.*"
    r"|change_?me|change_?it|password\d*|passwort|secret|token|example|redacted|hidden|masked|none|null"
    r"|nil|true|false|required|optional|string|str|bytes|int|text|empty|undefined|your[_-]?[\w-]*|my[_-]?[\w-]*"
    r"|placeholder|dummy|sample|test|todo|tbd|n/a|hunter2|letmein|qwerty|123456\d*|abc123"
    r"|\w+\.(?:get|env|environ|getenv)\b.*)\Z",
    re.IGNORECASE,
)
#: what a value that is a name in code looks like: user.password, raw_input, DB_PASSWORD_FROM_VAULT
_CODE_REFERENCE = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][\w.]*|[a-z]+_[a-z_]+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")


#: words inside a value that mark documentation (AWS's ``wJalrXUtnFEMI/…EXAMPLEKEY``), not a secret
_DOC_MARKERS = ("example", "xxxx", "placeholder", "redacted", "changeme", "dummy", "sample")


def _password_ok(password_name: bool, value: str, quoted: bool) -> bool:
    if _PASSWORD_PLACEHOLDER.match(value) or value.startswith(("/", "http")):
        return False
    if any(marker in value.lower() for marker in _DOC_MARKERS):
        return False
    if not quoted and _CODE_REFERENCE.fullmatch(value):
        return False
    classes = (value != value.upper()) + (value != value.lower()) + any(map(str.isdigit, value))
    classes += not value.isalnum()
    if password_name:
        if value.isdigit():
            return len(value) >= 6  # a PIN-like password
        capitalised_word = value[:1].isupper() and value[1:].islower() and value.isalpha()
        return classes >= 2 and not capitalised_word
    return len(value) >= 12 and classes >= 2 and _entropy(value) >= 3.0


def _prose_trim(value: str) -> str:
    """An unquoted value less a full stop that ends the sentence ("Passwort: Sonne2024.")."""
    return value[:-1] if value.endswith(".") and len(value) > 4 else value


def _secret_name_before(t: _Text, end: int) -> str | None:
    """The secret name that ends at ``end`` as a word or a word's last part (``DB_PASSWORD``,
    ``userPassword``, ``"password"``), or None."""
    lowered, text = t.lower, t.text
    if not lowered.endswith(_SECRET_NAMES, 0, end):
        return None  # nearly every ":" and "=": one call in C rather than one for each name
    for name in _SECRET_NAMES:
        if lowered.endswith(name, max(0, end - len(name)), end):
            start = end - len(name)
            before = _char(lowered, start - 1)
            if (
                not before.isalnum()
                or before in "_-."
                or (text[start].isupper() and text[start - 1].islower())
            ):
                return name
            return None
    return None


_XML_KEY = re.compile(r"(?:key|name)=[\"'][\w.:-]*?(password|passwd|pwd|secret|token|api_?key)[\"']\s+\Z")


def _scan_password(t: _Text) -> Iterator[Finding]:
    """A value assigned to a password-like name (``"password": "…"``, ``DB_PASSWORD=…``,
    ``api_key: …``, ``Pwd=…;``, "Passwort: …", "la contraseña es …"), placeholders excluded."""
    text = t.text
    for separator in ":=":
        at = text.find(separator)
        while at != -1:
            sep, at = at, text.find(separator, at + 1)
            if separator == ":" and _char(text, sep + 1) == "=":
                continue  # ":=" is found once, from "="
            name_end = sep - (separator == "=" and _char(text, sep - 1) == ":")
            while name_end > 0 and sep - name_end < 4 and text[name_end - 1] in " \t\"'`":
                name_end -= 1
            name = _secret_name_before(t, name_end)
            if name is None:
                continue
            value_start = sep + 1 + (_char(text, sep + 1) == ">")
            while value_start < len(text) and value_start - sep < 5 and text[value_start] in " \t":
                value_start += 1
            yield from _password_value(text, value_start, name in _PASSWORD_NAMES)
    for at in t.find_all("value="):  # <add key="SmtpPassword" value="…" />, .NET and Java XML config
        key = _XML_KEY.search(t.lower, max(0, at - 64), at)
        if key and _char(text, at + 6) in "\"'":
            yield from _password_value(text, at + 6, key.group(1) in _PASSWORD_NAMES)
    ascii_only = text.isascii()
    for needle in _PROSE_NEEDLES:
        for at in t.find_all(needle) if needle.isascii() or not ascii_only else ():
            m = _PROSE_NAME.match(t.lower, at)
            if m and not _char(t.lower, at - 1).isalpha():
                yield from _password_value(text, m.end() - (m.group()[-1] in "\"'`"), True)


def _password_value(text: str, start: int, password_name: bool) -> Iterator[Finding]:
    quoted = _char(text, start) in "\"'`"
    value = _PASSWORD_VALUE.match(text, start + quoted)
    if not value:
        return
    candidate = value.group() if quoted else _prose_trim(value.group())
    if _password_ok(password_name, candidate, quoted):
        yield Finding("password", value.start(), value.start() + len(candidate), candidate)
