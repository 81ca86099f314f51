"""PII detection: each category's validators, overlap rules, the Redactor's placeholders, the engines."""

from __future__ import annotations

import importlib.machinery
import sys
import time
import types
from dataclasses import dataclass
from typing import Any

import pytest

from bench.pii_corpus import HOLDOUT, evaluate, load_corpus
from gateway import pii
from gateway.errors import ConfigError
from gateway.pii import (
    PII_CATEGORIES,
    SECRET_CATEGORIES,
    BuiltinDetector,
    Detector,
    Finding,
    PresidioDetector,
    Redactor,
    iban_ok,
    luhn_ok,
    make_detector,
    ssn_ok,
)

JWT = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0"
    "IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def _found(text: str, categories: list[str] | None = None) -> list[tuple[str, str]]:
    return [(f.category, f.value) for f in BuiltinDetector(categories).find(text)]


# --- what each category finds, exactly --------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "category", "value"),
    [
        ("mail jane.doe+tag@mail.example.co.uk today", "email", "jane.doe+tag@mail.example.co.uk"),
        ("<carlos.ruiz@empresa.es>", "email", "carlos.ruiz@empresa.es"),
        ("call +44 20 7946 0958 now", "phone", "+44 20 7946 0958"),
        ("office +1 (415) 555-2671.", "phone", "+1 (415) 555-2671"),
        ("Berlin: +49 30 901820", "phone", "+49 30 901820"),
        ("desk (415) 555-2671", "phone", "(415) 555-2671"),
        ("desk 415-555-2671", "phone", "415-555-2671"),
        ("desk 415.555.2671", "phone", "415.555.2671"),
        ("Tel: 020 7946 0958", "phone", "020 7946 0958"),
        ("Visa 4111 1111 1111 1111, exp", "credit_card", "4111 1111 1111 1111"),
        ("MC 5555-5555-5555-4444", "credit_card", "5555-5555-5555-4444"),
        ("Amex 3782 822463 10005", "credit_card", "3782 822463 10005"),
        ("card 2223003122003222", "credit_card", "2223003122003222"),
        ("to DE89 3704 0044 0532 0130 00.", "iban", "DE89 3704 0044 0532 0130 00"),
        ("IBAN GB82WEST12345698765432 EUR", "iban", "GB82WEST12345698765432"),
        ("SSN: 123-45-6789", "us_ssn", "123-45-6789"),
        ("SSN 123 45 6789", "us_ssn", "123 45 6789"),
        ("host 203.0.113.42.", "ip_address", "203.0.113.42"),
        ("loopback 127.0.0.1:8080", "ip_address", "127.0.0.1"),
        ("private 10.0.0.5", "ip_address", "10.0.0.5"),
        ("v6 2001:db8::8a2e:370:7334.", "ip_address", "2001:db8::8a2e:370:7334"),
        ("bind ::1 only", "ip_address", "::1"),
        ("mapped ::ffff:192.0.2.128 here", "ip_address", "::ffff:192.0.2.128"),
        ("born on 12 March 1985 in Lyon", "date_of_birth", "12 March 1985"),
        ("DOB: 03/12/1985", "date_of_birth", "03/12/1985"),
        ("date of birth 1985-03-12", "date_of_birth", "1985-03-12"),
        (
            "at 1600 Amphitheatre Parkway, Mountain View, CA 94043.",
            "postal_address",
            "1600 Amphitheatre Parkway, Mountain View, CA 94043",
        ),
        ("at 221B Baker Street, London NW1 6XE.", "postal_address", "221B Baker Street, London NW1 6XE"),
        ("in Austin, TX 78701.", "postal_address", "Austin, TX 78701"),
        ("Postcode: SW1A 1AA", "postal_address", "SW1A 1AA"),
        (
            "key sk-proj-di4PzJ59FHz5r1pY4OjE2jBMptUsGr7CmY",
            "api_key",
            "sk-proj-di4PzJ59FHz5r1pY4OjE2jBMptUsGr7CmY",
        ),
        ("id AKIA6I8J76B2LAJLJ4H9.", "api_key", "AKIA6I8J76B2LAJLJ4H9"),
        ("ghp_g8xNbe3nNyjOq9wMxEhh2FDEEtfjgVvVqE1S", "api_key", "ghp_g8xNbe3nNyjOq9wMxEhh2FDEEtfjgVvVqE1S"),
        ("xoxb-31002516780-0837407188181-VVEqZe2q", "api_key", "xoxb-31002516780-0837407188181-VVEqZe2q"),
        ("'sk_live_PmpGXafq0fjzLczbttOofL9H'", "api_key", "sk_live_PmpGXafq0fjzLczbttOofL9H"),
        ("AIzaiB3m03nbqnsGpWLuqIA1id6Vw5DQL05HA06", "api_key", "AIzaiB3m03nbqnsGpWLuqIA1id6Vw5DQL05HA06"),
        ('api_key = "a8F3kLm2Qp9Zx7Vb1Nc4"', "api_key", "a8F3kLm2Qp9Zx7Vb1Nc4"),
        ("Authorization: Bearer 7BWr2drgd1QsO7jprBGumXxY", "api_key", "7BWr2drgd1QsO7jprBGumXxY"),
        (f"token {JWT} ok", "jwt", JWT),
        ("postgres://admin:s3cr3tP4ss@db.example.com/app", "url_password", "admin:s3cr3tP4ss"),
        ("redis://:Zq8mK2pL9v@cache:6379", "url_password", ":Zq8mK2pL9v"),
    ],
)
def test_pii_builtin_finds_the_exact_value(text: str, category: str, value: str) -> None:
    assert _found(text) == [(category, value)]


def test_pii_private_key_block_is_found_whole() -> None:
    key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq8cZ5sT6\nabc==\n-----END RSA PRIVATE KEY-----"
    assert _found(f"the key:\n{key}\nrotate it") == [("private_key", key)]


@pytest.mark.parametrize("after", ["\nThanks!", "\n\nThanks!", "", "\nAAAA"])
def test_pii_cut_off_private_key_is_found_up_to_its_last_base64_line(after: str) -> None:
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ"
    expected = key + after if after == "\nAAAA" else key
    assert _found(key + after) == [("private_key", expected)]


@pytest.mark.parametrize(
    "text",
    [
        "icon@2x.png and git@github.com:acme/widgets.git",  # an asset, an SSH remote
        "https://deploy@git.example.com/repo.git",  # a URL's user, not a mailbox
        "order 123456789012, version 1.2.3.4, at 2024-01-15T10:30:00Z for $1,299.00",
        "Example 123-456-7890 has area code 123",  # NANP area codes start 2-9
        "Call about order 123456789 soon",  # the phone word is not about this number
        "Card 4111 1111 1111 1112",  # Luhn fails
        "Ledger 1234567812345670",  # Luhn passes, no card issuer starts with 12
        "IBAN DE89 3704 0044 0532 0130 01",  # mod 97 fails
        "SSNs 000-12-3456 666-12-3456 900-12-3456 123-00-4567 123-45-0000",
        "Part 123 45 6789",  # spaced SSN shape without the word SSN
        "version 1.2.3.4, v1.2.3.4, build 10.0.19041.1, OID 1.3.6.1.4.1.311, 256.1.1.1",
        "10:30:00, std::vector, f :: Int, 00:1A:2B:3C:4D:5E, dead::beef",
        "Released 2024-01-15; born out of a 2019 merger; our birthday sale runs 2024-06-01",
        "3 Easy Street Food Recipes; in 2020 Wall Street fell",
        "sk-... YOUR_API_KEY sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx AKIAIOSFODNN7EXAMPLE",
        "token: the_quick_brown_fox_jumps, api_key = os.environ['OPENAI_API_KEY']",
        "The file starts with -----BEGIN RSA PRIVATE KEY----- and so on.",
        "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
        "eyJmb28iOiJiYXIifQ.eyJ4IjoxfQ.zgEOzdmenCkhvMdgaKjI",  # decodes, but has no alg
        "postgres://user:password@localhost/db mysql://root:${PW}@db/app https://example.com/a?b=c",
    ],
)
def test_pii_builtin_ignores_lookalikes(text: str) -> None:
    assert _found(text) == []


# --- dates of birth in other languages and in structured data ----------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Née le 3 avril 1985 à Lyon", "3 avril 1985"),
        ("né le 1er mars 1990", "1er mars 1990"),
        ("Il est né(e) le 12/03/1985.", "12/03/1985"),
        ("Marie Martin, née à Lyon le 3 avril 1985", "3 avril 1985"),
        ("Date de naissance : 19/08/1991", "19/08/1991"),
        ("Jürgen Weber, geboren am 12.05.1978 in München", "12.05.1978"),
        ("Max Mustermann (geb. am 3. März 1985)", "3. März 1985"),
        ("geb. 12. Mai 1978", "12. Mai 1978"),
        ("Geburtsdatum: 1978-05-12", "1978-05-12"),
        ("Geb.-Datum: 03.04.1985", "03.04.1985"),
        ("nacido el 3 de abril de 1985", "3 de abril de 1985"),
        ("Nacida en Sevilla el 07/02/1979", "07/02/1979"),
        ("Fecha de nacimiento: 07/02/1979", "07/02/1979"),
        ("F. nac.: 07/02/1979", "07/02/1979"),
        ("nascido em 02/03/1983", "02/03/1983"),
        ("Data de nascimento: 3 de março de 1983", "3 de março de 1983"),
        ("nato il 3 aprile 1985", "3 aprile 1985"),
        ("nata a Roma il 12/03/1985", "12/03/1985"),
        ("Data di nascita: 12/03/1985", "12/03/1985"),
        ("geboren op 3 april 1985", "3 april 1985"),
        ("Geboortedatum: 03-04-1985", "03-04-1985"),
        ("DOB: March 3, 1985", "March 3, 1985"),
        ("Birth date: 3 Sept. 1985", "3 Sept. 1985"),
    ],
)
def test_pii_date_of_birth_in_other_languages_is_found(text: str, value: str) -> None:
    assert _found(text) == [("date_of_birth", value)]


@pytest.mark.parametrize(
    "text",
    [
        '{"patient_id": "P-1", "dob": "1956-12-01", "ward": "3B"}',
        '{"dateOfBirth":"1956-12-01"}',
        "{'birth_date': '1956-12-01'}",
        "birthDate: 1956-12-01",
        "date_of_birth: 1956-12-01",
        "patientDob=1956-12-01",
        "DOB:1956-12-01",
        "dob\n1956-12-01",
    ],
)
def test_pii_date_of_birth_under_a_field_name_is_found(text: str) -> None:
    assert _found(text) == [("date_of_birth", "1956-12-01")]


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("id,name,dob\n1,Ann,1988-11-23\n2,Bob,02/03/1979", ["1988-11-23", "02/03/1979"]),
        ("dob,name\r\n1988-11-23,Ann\r\n", ["1988-11-23"]),
        ("name;Geburtsdatum;Ort\nWeber;12.05.1978;Berlin", ["12.05.1978"]),
        ('"id","date_of_birth","city"\n"1","1988-11-23","Paris"', ["1988-11-23"]),
        ("id\tbirthdate\n7\t 23/11/1988 ", ["23/11/1988"]),
        ("| id | dob |\n|---|---|\n| 1 | 1988-11-23 |", ["1988-11-23"]),
    ],
)
def test_pii_date_of_birth_in_a_csv_birth_column_is_found(text: str, values: list[str]) -> None:
    findings = BuiltinDetector(["date_of_birth"]).find(text)
    assert [f.value for f in findings] == values
    assert all(text[f.start : f.end] == f.value for f in findings)


@pytest.mark.parametrize(
    "text",
    [
        "La Renaissance a commencé le 3 avril 1450; date de livraison : 19/08/2024",
        "Né en 1985 à Lyon",  # a year, not a date
        "née Dupont, mariée le 12/06/2010",  # another word between
        "Lieferdatum: 12.05.2024, geboren 1978",
        "Geburtstagsfeier am 12.05.2024; Gebäude 3, Baujahr 12.05.1978",
        "Fecha de nacimiento: pendiente; fecha de alta 07/02/2019",
        "nacional desde el 07/02/1979",
        "NATO on 4 April 1949; natale il 25/12/2020",
        "Data di scadenza: 12/03/2025, nato nel 1985",
        "born 12 Lyon 1985, born on 31 février 1985",  # no such month, no such day
        '{"dob_verified_at": "2024-01-15", "updated": "2024-01-15"}',
        '{"dob": "unknown", "admitted": "2024-06-10"}',
        "The rebirth date 2024-01-15",
    ],
)
def test_pii_dates_near_birth_lookalikes_are_ignored(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "id,name,birth_city\n1,Ann,1988-11-23",  # the word does not end the field
        "id,dob,name\n1,Ann,1988-11-23",  # the date is in another column
        'id,name,dob\n1,"Raman, Priya",1988-11-23',  # a quoted comma: the row no longer lines up
        "id,name,dob\n1,Ann\n2,Bob,1988-11-23",  # the table ends at a short row
        "dob,x\n1988-13-45,y",  # no such date
        "id,created\n1,2024-01-15",
    ],
)
def test_pii_csv_dates_outside_a_birth_column_are_ignored(text: str) -> None:
    assert _found(text) == []


# --- national phone numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("contactez l'accueil au 01 42 68 53 00 (du lundi au vendredi)", "01 42 68 53 00"),
        ("Portable : 06 12 34 56 78", "06 12 34 56 78"),
        ("06.12.34.56.78", "06.12.34.56.78"),
        ("appelez le 09-87-65-43-21", "09-87-65-43-21"),
        ("Téléphone client : 06 12 34 56 78", "06 12 34 56 78"),
        ("Tél. 0142685300", "0142685300"),
        ("Telefon: 030 901820", "030 901820"),
        ("Handy 0171 1234567", "0171 1234567"),
        ("Mobil: 0171 1234567", "0171 1234567"),
        ("Tel.: 089 2180 3456", "089 2180 3456"),
        ("teléfono 912 345 678", "912 345 678"),
        ("móvil: 612 345 678", "612 345 678"),
        ("telefone 21 123 4567", "21 123 4567"),
        ("telefono 06 6982 1234", "06 6982 1234"),
        ("cellulare 347 123 4567", "347 123 4567"),
        ("telefoon 020 123 4567", "020 123 4567"),
    ],
)
def test_pii_national_phone_number_is_found(text: str, value: str) -> None:
    assert _found(text) == [("phone", value)]


@pytest.mark.parametrize(
    "text",
    [
        "Commande 01 23 45 67 89 expédiée",  # an id word before the pairs
        "Facture n° 06 12 34 56 78, réf. 01.42.68.53.00",
        "tirage 01 02 03 04 05 06",  # six pairs
        "00 12 34 56 78, 1 42 68 53 00, 01 42 68 53 000, 01 42 68 53",
        "0142 68 53 00, 01 42.68 53 00",  # not in pairs, mixed separators
        "0142685300",  # ten bare digits: only with a phone word
        "030 901820",  # a German number: only with a phone word
        "Bestellnummer 0171 1234567, Rechnung 0171 1234568",
        "Telefon-Hotline, Kundennummer 0171 1234567",  # the id word is nearer than the phone word
        "Montant : 1 234 567,89 €, code postal 75008 Paris",
        "Horodatage 2024-06-12 10:30:00, commande #0612345678",
        "Telefon: 75008 Paris; Tel. 2024-06-12; Handy: 12.05.1978; Mobil: 1.234.567,89 €",
    ],
)
def test_pii_national_number_lookalikes_are_ignored(text: str) -> None:
    assert _found(text) == []


# --- text as it arrives: Unicode spaces, any-case IBANs, dotted cards, internationalised emails ----


@pytest.mark.parametrize(
    ("text", "category", "value"),
    [
        (
            "tel +33\u00a06\u00a012\u00a034\u00a056\u00a078",
            "phone",
            "+33\u00a06\u00a012\u00a034\u00a056\u00a078",
        ),
        ("Tel.\u2009: +49\u200930\u2009901820", "phone", "+49\u200930\u2009901820"),
        ("desk (415)\u00a0555-2671", "phone", "(415)\u00a0555-2671"),
        ("Visa 4111\u202f1111\u202f1111\u202f1111", "credit_card", "4111\u202f1111\u202f1111\u202f1111"),
        ("Amex 3782\u2007822463\u200710005", "credit_card", "3782\u2007822463\u200710005"),
        (
            "IBAN FR76\u00a03000\u00a06000\u00a00112\u00a03456\u00a07890\u00a0189",
            "iban",
            "FR76\u00a03000\u00a06000\u00a00112\u00a03456\u00a07890\u00a0189",
        ),
        (
            "to DE89\u20093704\u20090044\u20090532\u20090130\u200900.",
            "iban",
            "DE89\u20093704\u20090044\u20090532\u20090130\u200900",
        ),
        ("SSN\u00a0123\u00a045\u00a06789", "us_ssn", "123\u00a045\u00a06789"),
    ],
)
def test_pii_unicode_spaces_inside_a_value_are_spaces(text: str, category: str, value: str) -> None:
    findings = BuiltinDetector().find(text)
    assert [(f.category, f.value) for f in findings] == [(category, value)]
    assert all(text[f.start : f.end] == f.value for f in findings)  # offsets and values are the original's


def test_pii_redactor_restores_values_with_unicode_spaces() -> None:
    redactor = Redactor(BuiltinDetector())
    text = "Appelez le +33\u00a06\u00a012\u00a034\u00a056\u00a078\u202f!"
    assert redactor.mask(text) == "Appelez le [PHONE_1]\u202f!"
    assert redactor.restore("[PHONE_1]") == "+33\u00a06\u00a012\u00a034\u00a056\u00a078"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("gb82 west 1234 5698 7654 32", "gb82 west 1234 5698 7654 32"),
        ("Gb82 West 1234 5698 7654 32.", "Gb82 West 1234 5698 7654 32"),
        ("iban: de89370400440532013000", "de89370400440532013000"),
        ("send to De89 3704 0044 0532 0130 00 today", "De89 3704 0044 0532 0130 00"),
        ("ref ab12 de89 3704 0044 0532 0130 00", "de89 3704 0044 0532 0130 00"),  # a lookalike just before
    ],
)
def test_pii_iban_is_found_in_any_case(text: str, value: str) -> None:
    assert _found(text) == [("iban", value)]


@pytest.mark.parametrize(
    "text",
    [
        "de89 apples 1234 5678",
        "the de89 3704 0044 0532 0130 01",  # mod 97 fails
        "de89 3704 0044 0532 0130 0",  # Germany is 22 characters
        "zz89 3704 0044 0532 0130 00",  # no such country
        "xde89 3704 0044 0532 0130 00",  # inside a longer word
        "ie11 build 1234567 abcd, h264 mp4 1234 5678 9012",
    ],
)
def test_pii_lower_case_iban_lookalikes_are_ignored(text: str) -> None:
    assert _found(text) == []


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("Visa 4111.1111.1111.1111, exp", "4111.1111.1111.1111"),
        ("MC 5555.5555.5555.4444.", "5555.5555.5555.4444"),
        ("Amex 3782.822463.10005", "3782.822463.10005"),
        ("card 4111.1111.1111.1111.003", "4111.1111.1111.1111.003"),  # 19 digits, 4-4-4-4-3
    ],
)
def test_pii_card_with_dots_between_groups_is_found(text: str, value: str) -> None:
    assert _found(text) == [("credit_card", value)]


@pytest.mark.parametrize(
    "text",
    [
        "card 4111.1111.1111.1112",  # Luhn fails
        "ledger 1234.5678.1234.5670",  # Luhn passes, no issuer starts with 12
        "4222.2222.2222.2",  # a 13-digit Visa with spaces, but dotted groups must be whole
        "4111.1111 1111.1111",  # mixed separators
        "1.4111.1111.1111.1111 and 4111.1111.1111.1111.5",  # part of a longer dotted number
        "v4111.1111.1111.1111",
        "version 4.1.1.1, build 2024.0101.1234.5678, release 4.111.111.111.111",
        "pi 3.1415926535897932, total 12.345.678,90 EUR, 4111.11 USD",
    ],
)
def test_pii_dotted_numbers_that_are_not_cards_are_ignored(text: str) -> None:
    assert _found(text) == []


def test_pii_dotted_ip_is_still_an_address_not_a_card() -> None:
    assert _found("host 4.1.1.1, 41.111.111.111") == [
        ("ip_address", "4.1.1.1"),
        ("ip_address", "41.111.111.111"),
    ]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("write to jane@exämple.de", "jane@exämple.de"),
        ("<josé@correo.es>", "josé@correo.es"),
        ("Écrivez à zoë.müller@straße.de.", "zoë.müller@straße.de"),
        ("почта: иван@пример.рф", "иван@пример.рф"),
        ("メールはuser@例え.jpまで", "user@例え.jp"),  # no space before: the kana stay out of the address
    ],
)
def test_pii_email_with_non_ascii_local_part_or_domain_is_found(text: str, value: str) -> None:
    assert _found(text) == [("email", value)]


@pytest.mark.parametrize(
    "text",
    [
        "naïve@home, Grüße@Müller, café@exämple",  # no dot in the domain
        "git@gitlab.exämple.de:org/repo",  # an SSH remote
        "icône@2x.png",  # an asset name
        "https://josé@git.exämple.de/repo.git",  # a URL's user
    ],
)
def test_pii_non_ascii_email_lookalikes_are_ignored(text: str) -> None:
    assert _found(text) == []


# --- validators ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4111111111111111", True),
        ("378282246310005", True),
        ("79927398713", True),
        ("4111111111111112", False),
    ],
)
def test_pii_luhn_checks_the_card_checksum(number: str, valid: bool) -> None:
    assert luhn_ok(number) is valid


@pytest.mark.parametrize(
    ("iban", "valid"),
    [
        ("DE89 3704 0044 0532 0130 00", True),
        ("GB82WEST12345698765432", True),
        ("NO9386011117947", True),
        ("DE89 3704 0044 0532 0130 01", False),  # check digits
        ("DE89 3704 0044 0532 0130 0", False),  # Germany is 22 characters
        ("ZZ89370400440532013000", False),  # no such country
    ],
)
def test_pii_iban_checks_length_and_mod_97(iban: str, valid: bool) -> None:
    assert iban_ok(iban) is valid


@pytest.mark.parametrize(
    ("ssn", "valid"),
    [
        ("123-45-6789", True),
        ("000-45-6789", False),
        ("666-45-6789", False),
        ("950-45-6789", False),
        ("123-00-6789", False),
        ("123-45-0000", False),
    ],
)
def test_pii_ssn_rejects_numbers_never_issued(ssn: str, valid: bool) -> None:
    assert ssn_ok(ssn) is valid


# --- overlaps and categories --------------------------------------------------------------------


def test_pii_jwt_wins_over_the_bearer_token_that_holds_it() -> None:
    assert _found(f"Authorization: Bearer {JWT}") == [("jwt", JWT)]


def test_pii_url_password_wins_over_the_email_shape_inside_it() -> None:
    assert _found("amqp://guest:Gu3st2024@rabbit.example.com/") == [("url_password", "guest:Gu3st2024")]


def test_pii_card_wins_over_a_phone_shape() -> None:
    assert _found("call me, card 4111-1111-1111-1111") == [("credit_card", "4111-1111-1111-1111")]


def test_pii_findings_are_sorted_and_never_overlap_on_the_whole_corpus() -> None:
    detector = BuiltinDetector()
    for sample in load_corpus():
        findings = detector.find(sample.text)
        assert findings == sorted(findings, key=lambda f: f.start)
        assert all(a.end <= b.start for a, b in zip(findings, findings[1:], strict=False))
        assert all(sample.text[f.start : f.end] == f.value for f in findings)


def test_pii_detector_looks_only_for_its_categories() -> None:
    text = "mail jane@example.com or call +44 20 7946 0958"
    assert _found(text, ["phone"]) == [("phone", "+44 20 7946 0958")]
    assert _found(text, []) == []


def test_pii_unknown_category_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown PII categories"):
        BuiltinDetector(["email", "driving_licence"])


def test_pii_secret_categories_are_pii_too() -> None:
    assert {"api_key", "private_key", "jwt", "url_password", "password"} == SECRET_CATEGORIES
    assert SECRET_CATEGORIES < PII_CATEGORIES and len(PII_CATEGORIES) == 15


def test_pii_finding_repr_never_shows_the_value() -> None:
    finding = BuiltinDetector().find("SSN 123-45-6789")[0]
    assert "123-45-6789" not in repr(finding) and "us_ssn" in repr(finding)


# --- Redactor -----------------------------------------------------------------------------------


def test_redactor_numbers_each_category_from_one() -> None:
    redactor = Redactor(BuiltinDetector())
    masked = redactor.mask("a@example.com, b@example.com, +44 20 7946 0958, card 4111 1111 1111 1111")
    assert masked == "[EMAIL_1], [EMAIL_2], [PHONE_1], card [CREDIT_CARD_1]"
    assert redactor.counts == {"email": 2, "phone": 1, "credit_card": 1}


def test_redactor_same_value_gets_the_same_placeholder_across_texts() -> None:
    redactor = Redactor(BuiltinDetector())
    assert redactor.mask("to a@example.com and a@example.com") == "to [EMAIL_1] and [EMAIL_1]"
    assert redactor.mask("b@example.com, then a@example.com") == "[EMAIL_2], then [EMAIL_1]"
    assert redactor.counts == {"email": 2}


def test_redactor_restores_the_original_text() -> None:
    redactor = Redactor(BuiltinDetector())
    text = f"Mail jane@example.com, SSN 123-45-6789, key AKIA6I8J76B2LAJLJ4H9, token {JWT}."
    masked = redactor.mask(text)
    assert "jane@example.com" not in masked and "123-45-6789" not in masked and JWT not in masked
    assert redactor.restore(masked) == text


def test_redactor_restores_only_exact_placeholders_it_issued() -> None:
    redactor = Redactor(BuiltinDetector())
    redactor.mask("jane@example.com")
    answer = "Wrote to [EMAIL_1]; not [email_1], [EMAIL_2] or [PHONE_1]."
    assert redactor.restore(answer) == "Wrote to jane@example.com; not [email_1], [EMAIL_2] or [PHONE_1]."


def test_redactor_leaves_clean_text_alone() -> None:
    redactor = Redactor(BuiltinDetector())
    assert redactor.mask("nothing to see here") == "nothing to see here"
    assert redactor.restore("[EMAIL_1]") == "[EMAIL_1]"
    assert redactor.counts == {}


# --- engines ------------------------------------------------------------------------------------


@dataclass
class _FakeResult:
    entity_type: str
    start: int
    end: int
    score: float = 0.85


class _FakeAnalyzerEngine:
    """Stands in for presidio's AnalyzerEngine: "Alice" is a phone number, "Paris" a location."""

    def analyze(
        self, text: str, language: str, entities: list[str], score_threshold: float
    ) -> list[_FakeResult]:
        assert language == "en"
        results = []
        for word, entity in (("Alice", "PHONE_NUMBER"), ("Paris", "LOCATION")):
            at = text.find(word)
            if at != -1 and entity in entities:
                results.append(_FakeResult(entity, at, at + len(word)))
        return results


@pytest.fixture
def fake_presidio(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("presidio_analyzer")
    module.__spec__ = importlib.machinery.ModuleSpec("presidio_analyzer", None)
    fake: Any = module
    fake.AnalyzerEngine = _FakeAnalyzerEngine
    monkeypatch.setitem(sys.modules, "presidio_analyzer", module)
    return module


@pytest.fixture
def no_presidio(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "presidio_analyzer", None)  # makes the import fail


def test_make_detector_builtin_is_the_default() -> None:
    detector: Detector = make_detector()
    assert isinstance(detector, BuiltinDetector) and detector.name == "builtin"


@pytest.mark.usefixtures("no_presidio")
def test_make_detector_presidio_without_the_package_names_the_install() -> None:
    with pytest.raises(ConfigError) as raised:
        make_detector("presidio")
    assert str(raised.value) == (
        "engine 'presidio' needs the presidio-analyzer package: pip install presidio-analyzer"
    )


@pytest.mark.usefixtures("no_presidio")
def test_make_detector_auto_falls_back_to_builtin() -> None:
    assert make_detector("auto", ["email"]).name == "builtin"


@pytest.mark.usefixtures("fake_presidio")
def test_make_detector_auto_uses_presidio_when_installed() -> None:
    assert pii.presidio_available()
    assert isinstance(make_detector("auto"), PresidioDetector)


def test_make_detector_rejects_an_unknown_engine() -> None:
    with pytest.raises(ConfigError, match="unknown PII detector engine 'spacy'"):
        make_detector("spacy")


@pytest.mark.usefixtures("fake_presidio")
def test_presidio_detector_maps_entities_and_keeps_builtin_secrets() -> None:
    detector = make_detector("presidio")
    text = f"Alice lives in Paris; token {JWT}"
    # PHONE_NUMBER maps to phone; LOCATION has no category of ours; the JWT comes from the builtin scan
    assert [(f.category, f.value) for f in detector.find(text)] == [("phone", "Alice"), ("jwt", JWT)]


@pytest.mark.usefixtures("fake_presidio")
def test_presidio_detector_respects_categories() -> None:
    assert make_detector("presidio", ["email"]).find("Alice at alice@example.com") == [
        Finding("email", 9, 26, "alice@example.com")
    ]


# --- the corpus and the cost --------------------------------------------------------------------


def test_pii_corpus_precision_and_recall() -> None:
    samples = load_corpus()
    assert len(samples) >= 150
    # every category has positives; the issue-12 ones are covered case by case in test_pii_issue12.py
    assert {c for s in samples for c in s.expect} == PII_CATEGORIES - {"national_id", "passport", "password"}
    evaluation = evaluate(BuiltinDetector(), samples)
    mistakes = "\n".join(
        f"expected {list(s.expect)}, found {found}: {s.text!r}" for s, found in evaluation.mistakes
    )
    assert evaluation.overall.precision >= 0.97, mistakes
    assert evaluation.overall.recall >= 0.95, mistakes


def test_pii_held_out_corpus_keeps_its_measured_floor() -> None:
    """The held-out corpus, written without seeing the detector: blind it measured 0.978 / 0.899; the
    multilingual birth words, field names and national phone formats (general rules, written after its
    misses were known, so no longer a blind score) brought it to 0.980 / 0.980."""
    samples = load_corpus(HOLDOUT)
    evaluation = evaluate(BuiltinDetector(), samples)
    assert evaluation.overall.precision >= 0.97
    assert evaluation.overall.recall >= 0.97


@pytest.mark.parametrize(
    "text",
    [
        "eyJ" * 30_000,
        "1 " * 50_000,
        "a@" * 50_000,
        "1:" * 50_000,
        "-----BEGIN PRIVATE KEY-----\n" * 5_000,
        "born 12 12 12 " * 5_000,
        "x://" + "a" * 100 + ":" + "b@" * 50_000,
        "1\u00a0" * 50_000,
        "é@" * 50_000,
        "x@" + "ä." * 50_000,
        "ab12 " * 20_000,
        "4111." * 20_000,
        "dob," * 50_000,
        "dob,x\n" * 50_000,
        "id,dob\n" + "1,1988-11-23\n" * 30_000,
        "née le " * 30_000,
        "born " + "Lyon " * 50_000,
        "01 " * 50_000,
    ],
    ids=[
        "jwt-prefixes",
        "spaced-digits",
        "at-signs",
        "colons",
        "key-headers",
        "birth-words",
        "userinfo",
        "no-break-spaced-digits",
        "non-ascii-at-signs",
        "idn-labels",
        "iban-heads",
        "dotted-groups",
        "csv-header-fields",
        "csv-headers",
        "csv-rows",
        "french-birth-words",
        "month-like-words",
        "digit-pairs",
    ],  # fmt: skip
)
def test_pii_scan_stays_linear_on_hostile_input(text: str) -> None:
    started = time.perf_counter()
    BuiltinDetector().find(text)
    assert time.perf_counter() - started < 2.0  # linear is ~10-100 ms; backtracking blow-ups take minutes


def test_detectors_sharing_categories_find_the_same_as_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan memo (one scan per category and text in a process) changes no finding: a detector
    after another with overlapping categories, and a no-break space's value taken from the text."""
    from gateway.pii import detectors

    text = "Mail jane.doe@example.com or call +44\u00a07911\u00a0123456, card 4111 1111 1111 1111."
    monkeypatch.setattr(detectors, "_SCANS", detectors._ScanMemo(entries=0))  # remembers nothing
    alone = make_detector("builtin").find(text)
    monkeypatch.setattr(detectors, "_SCANS", detectors._ScanMemo())
    make_detector("builtin", ["email", "phone"]).find(text)
    shared = make_detector("builtin").find(text)
    assert shared == alone
    assert {f.category for f in alone} >= {"email", "phone", "credit_card"}
    assert all(text[f.start : f.end] == f.value for f in shared)


def test_the_scan_memo_is_bounded() -> None:
    from gateway.pii.detectors import _ScanMemo

    memo = _ScanMemo(entries=3, max_chars=10)
    for i in range(5):
        memo.put("email", f"text {i}", ())
    assert memo.get("email", "text 0") is None and memo.get("email", "text 4") == ()
    memo.put("email", "x" * 11, ())
    assert memo.get("email", "x" * 11) is None  # too long to keep
