"""Validates the third held-out PII corpus itself (never the detector): schema, coverage, checksums, phones.

Like v2, the corpus is only worth something while it is well formed and frozen, so these checks fail when a
case is malformed, a listed value is not in its text, a checksum-bearing value is invalid, a phone number is
not valid for its language's region, a negative looks like PII it must not hold, or the file changed without
its pinned digest being updated on purpose.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.pii.corpus import (
    CATEGORIES,
    LANGUAGES,
    PHONE_REGIONS,
    assert_card_number,
    assert_no_card_number,
    headline_values,
    iban_ok,
    load,
    national_id_ok,
)

CORPUS = Path(__file__).with_name("holdout_v3.yaml")

ADDRESS_LANGUAGES = {"en", "de", "fr", "es", "pt", "it", "nl", "pl"}
# stdnum modules a national_id value of each language must satisfy (at least one of them);
# "gb.nino" is checked here because python-stdnum has no module for it.
NATIONAL_ID_MODULES = {
    "en": ["us.ssn", "gb.nino"],
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
    assert len(POSITIVES) >= 220
    assert sum(len(c["values"]) for c in POSITIVES) >= 240
    assert len(NEGATIVES) >= 140
    per = Counter((c["language"], c["kind"]) for c in CASES)
    for lang in LANGUAGES:
        assert per[(lang, "positive")] >= 27, lang
        assert per[(lang, "negative")] >= 17, lang


def test_classes_are_covered_in_every_language() -> None:
    present = {(c["language"], c["category"]) for c in POSITIVES}
    every = ("email", "phone", "date_of_birth", "national_id", "passport", "iban", "credit_card")
    for lang in LANGUAGES:
        for category in (*every, "password", "api_key", "url_password", "ip_address"):
            assert (lang, category) in present, (lang, category)
    for lang in ADDRESS_LANGUAGES:
        assert (lang, "postal_address") in present, lang
    assert {c["category"] for c in POSITIVES} == CATEGORIES


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("credit_card"))
def test_credit_cards_pass_luhn(case_id: str, lang: str, value: str) -> None:
    assert_card_number(case_id, value)


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("iban"))
def test_ibans_pass_mod_97(case_id: str, lang: str, value: str) -> None:
    assert iban_ok(value), case_id


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("iban"))
def test_ibans_pass_the_country_rules(case_id: str, lang: str, value: str) -> None:
    iban = pytest.importorskip("stdnum.iban")
    assert iban.is_valid(value), case_id


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("national_id"))
def test_national_ids_have_valid_checksums(case_id: str, lang: str, value: str) -> None:
    pytest.importorskip("stdnum")
    assert any(national_id_ok(m, value) for m in NATIONAL_ID_MODULES[lang]), case_id


@pytest.mark.parametrize(("case_id", "lang", "value"), _values("phone"))
def test_phone_numbers_are_valid_for_their_region(case_id: str, lang: str, value: str) -> None:
    phonenumbers = pytest.importorskip("phonenumbers")

    def valid(region: str) -> bool:
        try:
            ok: bool = phonenumbers.is_valid_number(phonenumbers.parse(value, region))
        except phonenumbers.NumberParseException:
            return False
        return ok

    assert any(valid(region) for region in PHONE_REGIONS[lang]), case_id


def test_order_numbers_in_negatives_fail_luhn() -> None:
    assert_no_card_number(NEGATIVES)


def test_negatives_hold_no_email_or_iban() -> None:
    for case in NEGATIVES:
        assert not re.search(r"[\w.+-]+@[\w-]+\.\w", case["text"]), case["id"]
        for run in re.findall(r"\b[A-Z]{2}\d{2}[A-Z0-9 ]{10,30}", case["text"]):
            assert not iban_ok(run.strip()), (case["id"], run)


def test_negatives_hold_no_valid_phone_number() -> None:
    phonenumbers = pytest.importorskip("phonenumbers")
    for case in NEGATIVES:
        for region in PHONE_REGIONS[case["language"]]:
            leniency = phonenumbers.Leniency.VALID
            found = phonenumbers.PhoneNumberMatcher(case["text"], region, leniency=leniency)
            assert [m.raw_string for m in found] == [], (case["id"], region)
