"""What the frozen held-out corpora's tests share: loading a corpus and the checksums its values
must pass (each corpus's own test says what it pins and covers)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


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
