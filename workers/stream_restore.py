"""A streamed answer's ``redact_pii`` placeholders (``[EMAIL_1]``) put back before the client sees them.

The whole answer is restored once it is complete (``Plan.restore``); a stream reaches the client a
delta at a time, and a placeholder may be split across deltas (``[EMA`` then ``IL_1]``). So text
after an unclosed ``[`` waits for the next delta, up to the longest a placeholder can be, and the
rest is restored and sent. Tool-call arguments are held back the same way, per call.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.chat import Delta, Emit, TextDelta, ToolCallDelta

#: longer than any placeholder ("[" + category + "_" + count + "]"); past it, a "[" is just text
_HOLD_LIMIT = 48


class RestoringEmit:
    """Wraps the relay's ``emit``: every delta's text restored, a split placeholder held back."""

    def __init__(self, restore: Callable[[str], str], emit: Emit) -> None:
        self._restore = restore
        self._emit = emit
        self._text = ""
        self._args: dict[int, str] = {}

    def __call__(self, delta: Delta) -> None:
        if isinstance(delta, TextDelta):
            ready, self._text = _split(self._text + delta.text)
            if ready:
                self._emit(TextDelta(self._restore(ready)))
            return
        ready, self._args[delta.index] = _split(self._args.get(delta.index, "") + delta.arguments)
        if ready or delta.id is not None or delta.name is not None:
            self._emit(ToolCallDelta(delta.index, delta.id, delta.name, self._restore(ready)))

    def flush(self) -> None:
        """What is still held back, once the stream ended (an unclosed ``[`` was just text)."""
        if self._text:
            self._emit(TextDelta(self._restore(self._text)))
            self._text = ""
        for index, held in sorted(self._args.items()):
            if held:
                self._emit(ToolCallDelta(index, arguments=self._restore(held)))
        self._args.clear()


def _split(text: str) -> tuple[str, str]:
    """(what can be sent now, what must wait): the tail from an unclosed ``[`` waits."""
    cut = text.rfind("[")
    if cut == -1 or "]" in text[cut:] or len(text) - cut > _HOLD_LIMIT:
        return text, ""
    return text[:cut], text[cut:]
