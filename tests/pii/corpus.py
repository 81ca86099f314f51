"""What the frozen held-out corpora's tests share: loading a corpus, the schema every case keeps,
and the checksums its values must pass (each corpus's own test says what it pins and covers)."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import yaml

LANGUAGES = {"en", "de", "fr", "es", "pt", "it", "nl", "pl"}
CATEGORIES = {
    "email",
    "phone",
    "postal_address",
    "date_of_birth",
    "credit_card",
    "iban",
    "national_id",
    "passport",
    "api_key",
    "password",
    "private_key",
    "jwt",
    "url_password",
    "ip_address",
}
# Regions a phone number of each language is parsed in (numbers with a + or 00 prefix name their own).
PHONE_REGIONS = {
    "en": ["GB", "US"],
    "de": ["DE"],
    "fr": ["FR"],
    "es": ["ES"],
    "pt": ["PT"],
    "it": ["IT"],
    "nl": ["NL"],
    "pl": ["PL"],
}
#: a UK National Insurance number's format rules (python-stdnum has no module for it)
NINO = re.compile(r"(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]\d{6}[A-D]")
POSITIVE_KEYS = {"id", "language", "kind", "category", "text", "values"}
NEGATIVE_KEYS = {"id", "language", "kind", "text", "values"}


def load(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = yaml.safe_load(fh)
    return data


def headline_values(positives: list[dict[str, Any]], category: str) -> list[tuple[str, str, str]]:
    """(case id, language, value) for the first value of every case of a category (its headline value)."""
    return [(c["id"], c["language"], c["values"][0]) for c in positives if c["category"] == category]


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(value: str) -> bool:
    compact = re.sub(r"\s", "", value).upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{10,30}", compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def assert_well_formed(case: dict[str, Any]) -> None:
    """A case's schema: a known language, a text, and for a positive its values, each in the text."""
    assert case["language"] in LANGUAGES
    assert isinstance(case["text"], str) and case["text"].strip()
    assert isinstance(case["values"], list)
    if case["kind"] == "positive":
        assert set(case) == POSITIVE_KEYS
        assert case["category"] in CATEGORIES
        assert case["values"], "a positive lists at least one value"
        assert len(set(case["values"])) == len(case["values"])
        for value in case["values"]:
            assert isinstance(value, str) and value.strip() == value and value
            assert value in case["text"], value
    else:
        assert case["kind"] == "negative"
        assert set(case) == NEGATIVE_KEYS
        assert case["values"] == []


def assert_card_number(case_id: str, value: str) -> None:
    digits = re.sub(r"[ -]", "", value)
    assert digits.isdigit() and 13 <= len(digits) <= 19
    assert luhn_ok(digits), case_id


def assert_no_card_number(negatives: list[dict[str, Any]]) -> None:
    """A negative 'order number' that passed Luhn would be indistinguishable from a card number."""
    for case in negatives:
        for run in re.findall(r"\d[\d -]{11,24}\d", case["text"]):
            digits = re.sub(r"\D", "", run)
            if 13 <= len(digits) <= 19:
                assert not luhn_ok(digits), (case["id"], run)


def national_id_ok(module: str, value: str) -> bool:
    """Whether ``value`` is valid for a stdnum module (``"gb.nino"``: the NINO format rules)."""
    if module == "gb.nino":
        return NINO.fullmatch(re.sub(r"\s", "", value).upper()) is not None
    valid: bool = importlib.import_module(f"stdnum.{module}").is_valid(value)
    return valid
