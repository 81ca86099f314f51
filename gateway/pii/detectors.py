"""The detectors: the builtin one over all scanners, Presidio united with it, and the choice between them."""

from __future__ import annotations

import bisect
import functools
import importlib
import importlib.util
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import phonenumbers

from gateway.errors import ConfigError
from gateway.pii.birth_dates import _scan_date_of_birth
from gateway.pii.contact import _scan_email, _scan_phone, _scan_postal_address
from gateway.pii.credentials import (
    _scan_api_key,
    _scan_jwt,
    _scan_password,
    _scan_private_key,
    _scan_url_password,
)
from gateway.pii.findings import DEFAULT_PHONE_REGIONS, PII_CATEGORIES, Detector, Finding
from gateway.pii.identity import _scan_national_id, _scan_passport
from gateway.pii.numbers import _scan_credit_card, _scan_iban, _scan_ip, _scan_ssn
from gateway.pii.text import _Text

#: On overlap the earlier category wins, then the longer match: a validated secret or number beats
#: a shape that merely contains it (a JWT inside ``token=…``, an email inside ``user:pw@host``).
_PRIORITY: dict[str, int] = {name: rank for rank, name in enumerate((
    "private_key", "jwt", "url_password", "api_key", "password", "iban", "credit_card", "national_id",
    "us_ssn", "passport", "email", "postal_address", "date_of_birth", "phone", "ip_address",
))}  # fmt: skip


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
    "password": _scan_password,
    "national_id": _scan_national_id,
    "passport": _scan_passport,
}


def _check_categories(categories: Iterable[str] | None) -> frozenset[str]:
    if categories is None:
        return PII_CATEGORIES
    chosen = frozenset(categories)
    unknown = sorted(chosen - PII_CATEGORIES)
    if unknown:
        raise ConfigError(f"unknown PII categories {unknown}; known: {', '.join(sorted(PII_CATEGORIES))}")
    return chosen


def _check_regions(regions: Sequence[str] | None) -> tuple[str, ...]:
    """Upper-cased region codes, each one libphonenumber has metadata for (a typo would silently
    turn phone detection without a ``+`` off)."""
    if regions is None:
        return DEFAULT_PHONE_REGIONS
    chosen = tuple(region.upper() for region in regions)
    unknown = sorted(set(chosen) - phonenumbers.SUPPORTED_REGIONS)
    if unknown:
        raise ConfigError(f"unknown phone regions {unknown}: use ISO 3166 codes such as GB, DE, US")
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

    def __init__(
        self, categories: Iterable[str] | None = None, *, phone_regions: Sequence[str] | None = None
    ) -> None:
        self.categories = _check_categories(categories)
        regions = _check_regions(phone_regions)
        self._scanners: list[tuple[Hashable, Callable[[_Text], Iterator[Finding]]]] = [
            (("phone", tuple(regions)), functools.partial(_scan_phone, regions=regions))
            if name == "phone"
            else (name, _SCANNERS[name])
            for name in sorted(self.categories, key=_PRIORITY.__getitem__)
        ]

    def find(self, text: str) -> list[Finding]:
        scanned: _Text | None = None
        candidates: list[Finding] = []
        for key, scan in self._scanners:
            found = _SCANS.get(key, text)
            if found is None:
                scanned = scanned or _Text(text)
                found = _SCANS.put(key, text, tuple(scan(scanned)))
            candidates.extend(found)
        # scanned with ASCII spaces; the values to mask are what the text holds (a no-break space)
        return [_as_in(text, f) for f in _resolve(candidates)]


def _as_in(text: str, finding: Finding) -> Finding:
    value = text[finding.start : finding.end]
    return finding if finding.value == value else Finding(finding.category, finding.start, finding.end, value)


class _ScanMemo:
    """What each scanner found in the last few texts, shared by every detector of the process.

    A worker judges a prompt with the PII rule's detector and then masks the same text for the
    audit line with the log's detector: the categories both have are scanned once. Bounded in
    entries and in the length of a text worth remembering; safe across threads.
    """

    def __init__(self, entries: int = 256, max_chars: int = 32_768) -> None:
        self.entries, self.max_chars = entries, max_chars
        self._found: dict[tuple[Hashable, str], tuple[Finding, ...]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, text: str) -> tuple[Finding, ...] | None:
        if len(text) > self.max_chars:
            return None
        return self._found.get((key, text))

    def put(self, key: Hashable, text: str, found: tuple[Finding, ...]) -> tuple[Finding, ...]:
        if self.entries > 0 and len(text) <= self.max_chars:
            with self._lock:
                if len(self._found) >= self.entries:
                    del self._found[next(iter(self._found))]  # the oldest
                self._found[key, text] = found
        return found


_SCANS = _ScanMemo()


#: Presidio's entity types that mean the same as one of ours (its DATE_TIME is any date, not a DOB)
_PRESIDIO_ENTITIES: dict[str, str] = {
    "EMAIL_ADDRESS": "email", "PHONE_NUMBER": "phone", "CREDIT_CARD": "credit_card", "IBAN_CODE": "iban",
    "US_SSN": "us_ssn", "IP_ADDRESS": "ip_address",
}  # fmt: skip


class PresidioDetector:
    """Presidio's analyzer for what it knows, united with the builtin detector for the rest (secrets…)."""

    name = "presidio"

    def __init__(
        self,
        categories: Iterable[str] | None = None,
        *,
        score_threshold: float = 0.5,
        phone_regions: Sequence[str] | None = None,
    ) -> None:
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
        self._builtin = BuiltinDetector(self.categories, phone_regions=phone_regions)

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


def make_detector(
    engine: str = "builtin",
    categories: Iterable[str] | None = None,
    *,
    phone_regions: Sequence[str] | None = None,
) -> Detector:
    """The detector for a policy's ``engine``: builtin, presidio, or auto (presidio when installed);
    ``phone_regions``: where a number without ``+`` may be from (default ``DEFAULT_PHONE_REGIONS``)."""
    if engine == "auto":
        engine = "presidio" if presidio_available() else "builtin"
    if engine == "builtin":
        return BuiltinDetector(categories, phone_regions=phone_regions)
    if engine == "presidio":
        return PresidioDetector(categories, phone_regions=phone_regions)
    raise ConfigError(f"unknown PII detector engine {engine!r}; expected builtin, presidio or auto")
