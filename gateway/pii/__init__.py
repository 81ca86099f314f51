"""Finds PII and secrets in text before it leaves the machine, and masks them with placeholders.

This runs on every job, so the built-in detector is regexes plus validators (Luhn, mod-97, octet
ranges, entropy, context words in eight languages, libphonenumber for phones, stdnum for national
IDs), each anchored on something cheap to find (``@``, ``://``, a digit,
a literal prefix) so that 10 KB of prose costs well under a millisecond. Precision comes first: a
false positive blocks or reroutes a job, so shapes that are ambiguous on their own (bare digit
runs, dates, version strings) count only with a validator or a context word. Loopback and private
IP addresses count like any other: they still describe someone's infrastructure.

The categories (``PII_CATEGORIES``; ``SECRET_CATEGORIES`` are the ones ``block_secrets`` acts on)::

    personal data   email, phone, postal_address        contact.py
                    credit_card, iban, us_ssn, ip_address   numbers.py (checksums in validators.py)
                    national_id, passport                identity.py (stdnum checksums)
                    date_of_birth                        birth_dates.py
    secrets         api_key, password, private_key, jwt, url_password  credentials.py

Every scanner reads the shared view of the text in ``text.py``; ``detectors.py`` runs them and
resolves overlaps, ``redactor.py`` masks what they find, ``findings.py`` holds the types.
"""

from gateway.pii.detectors import BuiltinDetector, PresidioDetector, make_detector, presidio_available
from gateway.pii.findings import (
    DEFAULT_PHONE_REGIONS,
    PII_CATEGORIES,
    SECRET_CATEGORIES,
    Category,
    Detector,
    Finding,
)
from gateway.pii.redactor import Redactor
from gateway.pii.validators import iban_ok, luhn_ok, ssn_ok

__all__ = [
    "DEFAULT_PHONE_REGIONS",
    "PII_CATEGORIES",
    "SECRET_CATEGORIES",
    "BuiltinDetector",
    "Category",
    "Detector",
    "Finding",
    "PresidioDetector",
    "Redactor",
    "iban_ok",
    "luhn_ok",
    "make_detector",
    "presidio_available",
    "ssn_ok",
]
