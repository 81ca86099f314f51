"""Measure the text and decide the summary's target length and shape (code decides, the model writes)."""

import json
import re
import sys

ctx = json.load(sys.stdin)
text = ctx["text"]
words = len(text.split())
paragraphs = len([p for p in re.split(r"\n\s*\n", text) if p.strip()])
target = min(ctx.get("max_words") or 150, max(25, words // 4))
if words <= target:
    print("flag:already-short — the text is no longer than the target; answer with one sentence")
measure = {
    "words": words,
    "paragraphs": paragraphs,
    "target_words": target,
    "shape": "a few bullet points" if paragraphs >= 3 else "one short paragraph",
}
print(json.dumps({"measure": measure}, sort_keys=True))
