"""Validates the second held-out PII corpus itself (never the detector): schema, coverage, checksums.

The corpus is only worth something if it is well formed and stays frozen, so these checks fail when a case
is malformed, a listed value is not in its text, a checksum-bearing value is invalid, or the file changed
without its pinned digest being updated on purpose.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.pii.corpus import (
    LANGUAGES,
    assert_card_number,
    assert_no_card_number,
    headline_values,
    iban_ok,
    load,
)

CORPUS = Path(__file__).with_name("holdout_v2.yaml")

# Street addresses are the class the first external run missed in every one of these languages.
ADDRESS_LANGUAGES = {"de", "fr", "es", "pt", "it", "nl", "pl"}
# stdnum modules a national_id value of each language must satisfy (at least one of them).
NATIONAL_ID_MODULES = {
    "en": ["us.ssn"],
    "de": ["de.idnr"],
    "fr": ["fr.nir"],
    "es": ["es.dni", "es.nie"],
    "pt": ["pt.nif"],
    "it": ["it.codicefiscale"],
    "nl": ["nl.bsn"],
    "pl": ["pl.pesel"],
}


DATA = load(CORPUS)
CASES: list[dict[str, Any]] = DATA["cases"]
POSITIVES = [c for c in CASES if c["kind"] == "positive"]
NEGATIVES = [c for c in CASES if c["kind"] == "negative"]


def _values(category: str) -> list[tuple[str, str, str]]:
    return headline_values(POSITIVES, category)


def test_counts_per_kind_and_language() -> None:
    assert len(POSITIVES) >= 200
    assert len(NEGATIVES) >= 130
    per = Counter((c["language"], c["kind"]) for c in CASES)
    for lang in LANGUAGES:
        assert per[(lang, "positive")] >= 24, lang
        assert per[(lang, "negative")] >= 15, lang


def test_issue_classes_are_covered_in_every_language() -> None:
    present = {(c["language"], c["category"]) for c in POSITIVES}
    for lang in LANGUAGES:
        for category in ("phone", "date_of_birth", "national_id", "passport", "iban", "credit_card", "email"):
            assert (lang, category) in present, (lang, category)
        assert (lang, "password") in present and (lang, "api_key") in present, lang
    for lang in ADDRESS_LANGUAGES:
        assert (lang, "postal_address") in present, lang


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("credit_card"))
def test_credit_cards_pass_luhn(case_id: str, lang: str, value: str) -> None:
    assert_card_number(case_id, value)


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("iban"))
def test_ibans_pass_mod_97(case_id: str, lang: str, value: str) -> None:
    assert iban_ok(value), case_id


def test_order_numbers_in_negatives_fail_luhn() -> None:
    assert_no_card_number(NEGATIVES)


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("national_id"))
def test_national_ids_have_valid_checksums(case_id: str, lang: str, value: str) -> None:
    pytest.importorskip("stdnum")
    import importlib

    modules = [importlib.import_module(f"stdnum.{name}") for name in NATIONAL_ID_MODULES[lang]]
    assert any(m.is_valid(value) for m in modules), case_id


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("iban"))
def test_ibans_pass_the_country_rules(case_id: str, lang: str, value: str) -> None:
    iban = pytest.importorskip("stdnum.iban")
    assert iban.is_valid(value), case_id
