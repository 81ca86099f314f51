"""What a failed job's error says: PII from the job masked, the gateway's own endpoints left readable.

An error message can quote what the job carried (a provider echoing the prompt, a script's
stderr, a model's answer), so it is masked before it is stored or audited. But the detector also
sees the gateway's own configuration in it: ``ConnectError talking to http://127.0.0.1:11434``
became ``http://[IP_ADDRESS_1]:11434``, hiding the one fact an operator needs. Findings inside a
configured ``api_base`` are the gateway's, not the job's, and stay as they are. Every provider
call's error and the job's final error go through the same masker, so they agree.
"""

from __future__ import annotations

from collections.abc import Iterable

from gateway.errors import CallBoundError, GatewayError, NoDeploymentError, ProviderError
from gateway.pii import Detector, Finding, Redactor
from gateway.policies import Plan


class ErrorMasker:
    """Masks PII in error messages, except inside the gateway's own endpoint URLs."""

    def __init__(self, detector: Detector, own_endpoints: Iterable[str]) -> None:
        self._detector = detector
        self._endpoints = sorted({e for e in own_endpoints if e}, key=len, reverse=True)

    def mask(self, message: str) -> str:
        own = _spans(message, self._endpoints)
        kept = _KeepOwn(self._detector, own)
        return Redactor(kept).mask(message)

    def apply(self, error: GatewayError) -> None:
        """Mask ``error``'s message in place (it is what the result, the audit and the logs show)."""
        _set_message(error, self.mask(error.message))


def explain_local_failure(error: GatewayError, plan: Plan) -> None:
    """Say why a job that failed on a local model never went elsewhere: "kept on the local model
    `sensitive` because of PII (email, phone)" (``Plan.local_reason``: categories, never values).

    Only for failures of the local model itself (a provider error, nothing callable, the call
    bound): a budget, a policy or a skill error has nothing to do with where the job was kept.
    """
    if not isinstance(error, ProviderError | NoDeploymentError | CallBoundError):
        return
    reason = plan.local_reason()
    if reason is None or error.message.startswith("kept on"):
        return
    _set_message(error, f"{reason}; it is never sent to a cloud model: {error.message}")


def _set_message(error: GatewayError, message: str) -> None:
    if message != error.message:
        error.message = message
        error.args = (message,)


def _spans(text: str, needles: list[str]) -> list[tuple[int, int]]:
    spans = []
    for needle in needles:
        start = text.find(needle)
        while start != -1:
            spans.append((start, start + len(needle)))
            start = text.find(needle, start + len(needle))
    return spans


class _KeepOwn:
    """A detector that drops findings lying inside one of the given spans."""

    def __init__(self, detector: Detector, own: list[tuple[int, int]]) -> None:
        self.name = detector.name
        self._detector = detector
        self._own = own

    def find(self, text: str) -> list[Finding]:
        return [
            f for f in self._detector.find(text) if not any(a <= f.start and f.end <= b for a, b in self._own)
        ]
