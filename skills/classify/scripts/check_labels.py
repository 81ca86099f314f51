"""Refuse label sets a model cannot be held to: empty, duplicated (ignoring case), too many, multi-line."""

import json
import sys

MAX_LABELS = 50

labels = json.load(sys.stdin)["labels"]
folded = [label.strip().casefold() for label in labels]
problem = None
if len(labels) < 2:
    problem = "give at least two labels"
elif len(labels) > MAX_LABELS:
    problem = f"at most {MAX_LABELS} labels"
elif any(not label.strip() or "\n" in label or "\r" in label for label in labels):
    problem = "labels must be non-empty single lines"
elif len(set(folded)) != len(folded):
    problem = "labels must be distinct (ignoring case)"
if problem:
    print(f"check_labels: {problem}", file=sys.stderr)
    sys.exit(2)
print(json.dumps({"label_count": len(labels)}))
