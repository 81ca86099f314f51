"""Masking: findings become stable placeholders (``[EMAIL_1]``), restored in the answer."""

from __future__ import annotations

import re
from collections import Counter

from gateway.pii.findings import Detector, Finding

_PLACEHOLDER = re.compile(r"\[[A-Z][A-Z_]*_\d+\]")


class Redactor:
    """Masks findings with stable placeholders and restores them in an answer."""

    def __init__(self, detector: Detector) -> None:
        self._detector = detector
        self._placeholders: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._counts: Counter[str] = Counter()

    def mask(self, text: str) -> str:
        """``text`` with every finding replaced; the same value gets the same placeholder each time."""
        parts, position = [], 0
        for finding in self._detector.find(text):
            parts += [text[position : finding.start], self._placeholder(finding)]
            position = finding.end
        parts.append(text[position:])
        return "".join(parts)

    def restore(self, text: str) -> str:
        """Placeholders this redactor handed out back to their values; exact matches only."""
        if not self._values:
            return text
        return _PLACEHOLDER.sub(lambda m: self._values.get(m.group(), m.group()), text)

    @property
    def counts(self) -> dict[str, int]:
        """Category -> number of distinct values masked so far."""
        return dict(self._counts)

    def _placeholder(self, finding: Finding) -> str:
        key = (finding.category, finding.value)
        placeholder = self._placeholders.get(key)
        if placeholder is None:
            self._counts[finding.category] += 1
            placeholder = f"[{finding.category.upper()}_{self._counts[finding.category]}]"
            self._placeholders[key] = placeholder
            self._values[placeholder] = finding.value
        return placeholder
