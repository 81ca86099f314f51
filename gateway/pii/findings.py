"""What a detector reports: the categories, one ``Finding``, and the ``Detector`` interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, get_args

Category = Literal[
    "email", "phone", "credit_card", "iban", "us_ssn", "ip_address",
    "date_of_birth", "postal_address", "national_id", "passport",
    "api_key", "private_key", "jwt", "url_password", "password",
]  # fmt: skip
PII_CATEGORIES: frozenset[str] = frozenset(get_args(Category))
SECRET_CATEGORIES: frozenset[str] = frozenset({"api_key", "private_key", "jwt", "url_password", "password"})

#: the regions whose national format a phone number without a leading ``+`` is read in, first match
#: wins; a policy's ``phone_regions`` replaces them
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("GB", "DE", "FR", "ES", "PT", "IT", "NL", "PL", "US")


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
