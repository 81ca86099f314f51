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
    re.compile(r"SG\.[A-Za-z0-9_-]{16,32}\.[A-Za-z0-9_-]{16,64}"),  # SendGrid
    re.compile(r"glpat-[A-Za-z0-9_-]{20,}"),  # GitLab personal access token
)
_KEY_PREFIX = re.compile(
    r"sk-(?:ant-(?:api\d+-|admin\d+-)?|proj-|svcacct-|admin-)?|AKIA|ASIA|gh[pousr]_|github_pat_"
    r"|xox[baprs]-|[sr]k_(?:live|test)_|AIza|SG\.|glpat-"
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


# --- passwords -------------------------------------------------------------------------------------

#: needles for the names a password or secret goes by, in code (``db_password``, ``API_KEY``), env
#: files, JSON and YAML, connection strings (``Pwd=``) and prose in English, German, French, Spanish,
#: Portuguese, Italian, Dutch and Polish (Passwort, Kennwort, mot de passe, contraseña, clave, senha,
#: parola d'ordine, wachtwoord, hasło); Italian writes "password" too
_PASSWORD_NEEDLES = (
    "pass", "pwd", "secret", "token", "api_key", "apikey", "api-key", "kennwort", "mot de passe",
    "contraseña", "contrasena", "clave", "senha", "parola d'ordine", "wachtwoord", "hasło", "haslo",
)  # fmt: skip
_PASSWORD_NAME = re.compile(
    r"(?:pass(?:word|wd|wort|phrase)?|pwd|secret|token|api[_-]?key|apikey|kennwort|mot de passe"
    r"|contrase[ñn]a|clave|senha|parola d'ordine|wachtwoord|has[łl]o)"
    # a name may go on (PASSWORD_HASH is not a password, DB_PASSWORD_FILE neither): only _key, _value
    r"(?:[_-](?:key|value))?(?![\w-])"
)
#: what joins a name to its value: ``=``, ``:``, ``=>``, JSON quotes, or a word of prose ("is",
#: "lautet", "est", "es", "é", "è", "jest", "to")
_PASSWORD_JOIN = re.compile(
    r"[\"']?\s{0,3}(?:[:=]|=>|:=)\s{0,3}[\"'`]?"
    r"|[\"']?\s{0,3}(?::\s*)?(?:is|was|lautet|ist|est|es|era|é|è|e|jest|to|wynosi)\s*[:\"'`]?\s{0,2}"
)
_PASSWORD_VALUE = re.compile(r"[^\s\"'`,;<>()\[\]{}]{4,128}")
#: values that stand for a password rather than being one: templates, masks, types, stock words
_PASSWORD_PLACEHOLDER = re.compile(
    r"(?:\$.*|%.*|\{.*|<.*|\*+|x{3,}|\.{3,}|•+|_+|-+|#+"
    r"|changeme|change_me|changeit|password|passwort|secret|token|example|redacted|hidden|masked|none|null"
    r"|nil|true|false|required|optional|string|str|bytes|int|text|empty|undefined|your[_-]?\w*|my[_-]?\w*"
    r"|placeholder|dummy|sample|test|todo|tbd|n/a|\w+\.(?:get|env|environ|getenv)\b.*)\Z",
    re.IGNORECASE,
)
#: names that only ever hold a credential: a weak-looking value still counts; ``token``/``secret``
#: values must look random (a "token count: 1500" is not one)
_LOOSE_NAMES = (
    "pass",
    "pwd",
    "kennwort",
    "mot de passe",
    "contrase",
    "clave",
    "senha",
    "parola",
    "wacht",
    "has",
)


def _password_ok(name: str, value: str, quoted: bool) -> bool:
    if _PASSWORD_PLACEHOLDER.match(value) or value.startswith(("/", "http")):
        return False
    if not quoted and re.fullmatch(r"[a-z_][a-z0-9_]*\.[a-z_][\w.]*|[a-z]+_[a-z_]+", value):
        return False  # a variable or attribute in code: password = user.password, pwd = raw_input
    lower, upper = value != value.upper(), value != value.lower()
    digit = any(map(str.isdigit, value))
    symbol = not value.isalnum()
    classes = lower + upper + digit + symbol
    if name.startswith(_LOOSE_NAMES):
        if value.isdigit():
            return len(value) >= 6  # a PIN-like password, not "password: 1234"-short
        capitalised_word = value[:1].isupper() and value[1:].islower() and value.isalpha()
        return classes >= 2 and not capitalised_word
    return len(value) >= 12 and classes >= 2 and _entropy(value) >= 3.0


def _prose_trim(value: str) -> str:
    """An unquoted value less a full stop that ends the sentence ("Passwort: Sonne2024.")."""
    return value[:-1] if value.endswith((".", "!", "?")) and len(value) > 4 else value


def _scan_password(t: _Text) -> Iterator[Finding]:
    """A value assigned to a password-like name (``"password": "…"``, ``DB_PASSWORD=…``,
    ``api_key: …``, ``Pwd=…;``, "Passwort: …", "la contraseña es …"), placeholders excluded."""
    text, lowered = t.text, t.lower
    seen: set[int] = set()
    for needle in _PASSWORD_NEEDLES:
        if not needle.isascii() and text.isascii():
            continue
        at = lowered.find(needle)
        while at != -1:
            name = _PASSWORD_NAME.match(lowered, at)
            at = lowered.find(needle, at + 1)
            if not name or name.start() in seen:
                continue
            seen.add(name.start())
            join = _PASSWORD_JOIN.match(text, name.end())
            if not join or join.end() == name.end():
                continue
            value = _PASSWORD_VALUE.match(text, join.end())
            if not value:
                continue
            quoted = join.group().rstrip()[-1:] in "\"'`"
            candidate = value.group() if quoted else _prose_trim(value.group())
            if _password_ok(name.group(), candidate, quoted):
                yield Finding("password", value.start(), value.start() + len(candidate), candidate)
