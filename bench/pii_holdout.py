"""Scores the PII detector against a held-out corpus (tests/pii/holdout_v4.yaml, or v2/v3 with --corpus).

``python -m bench.pii_holdout [--json FILE]`` prints recall per category and per language, the
false-positive rate over the hard negatives, every value left unmasked, and what a scan costs in
µs per KB. The corpus was written without reading the detector and is frozen (tests/pii/README.md):
this is the number issue 12's bars are judged on, never a corpus the detector was tuned against.

A value counts as caught only when masking the text removes it whole (``Redactor.mask``), whatever
category found it: that is what keeps it from a cloud model and out of the audit line. A negative
counts as a false positive when the detector finds anything in it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from bench.pii_corpus import microseconds_per_kb
from gateway.pii import PII_CATEGORIES, Redactor, make_detector
from gateway.pii.findings import Detector

CORPORA = Path(__file__).resolve().parent.parent / "tests" / "pii"
CORPUS = CORPORA / "holdout_v4.yaml"
#: issue 12's bars
RECALL_BAR = 0.98
FPR_BAR = 0.02


@dataclass
class Tally:
    caught: int = 0
    values: int = 0
    flagged: int = 0
    negatives: int = 0
    missed: list[str] = field(default_factory=list)
    #: each miss with the value, what was found and the text (``--misses``)
    details: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float | None:
        return self.caught / self.values if self.values else None

    @property
    def fpr(self) -> float | None:
        return self.flagged / self.negatives if self.negatives else None


def load(path: Path = CORPUS) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load(path.read_text())["cases"]
    return cases


def score(detector: Detector, cases: list[dict[str, Any]]) -> dict[str, dict[str, Tally]]:
    """Tallies by category, by language and overall (``{"all": {"all": ...}}``)."""
    out: dict[str, dict[str, Tally]] = {"category": defaultdict(Tally), "language": defaultdict(Tally),
                                         "all": defaultdict(Tally)}  # fmt: skip
    for case in cases:
        text, language = case["text"], case["language"]
        tallies = [out["language"][language], out["all"]["all"]]
        if case["kind"] == "negative":
            findings = detector.find(text)
            for tally in tallies:
                tally.negatives += 1
                tally.flagged += bool(findings)
            if findings:
                out["all"]["all"].missed.append(f"false positive {case['id']}")
                found = ", ".join(f"{f.category} {f.value!r}" for f in findings)
                out["all"]["all"].details.append(f"false positive {case['id']}: {found}\n    in {text!r}")
            continue
        masked = Redactor(detector).mask(text)
        for value in case["values"]:
            caught = value not in masked
            for tally in [*tallies, out["category"][case["category"]]]:
                tally.values += 1
                tally.caught += caught
            if not caught:
                out["all"]["all"].missed.append(f"missed {case['id']} ({case['category']})")
                found = ", ".join(f"{f.category} {f.value!r}" for f in detector.find(text)) or "nothing"
                out["all"]["all"].details.append(
                    f"missed {case['id']} ({case['category']}) {value!r}\n    found {found}\n    in {text!r}"
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pii_holdout", description=__doc__)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--corpus", default="v4", choices=["v2", "v3", "v4"], help="which held-out corpus (v2, v3: spent)"
    )
    parser.add_argument("--show-missed", action="store_true", help="list the ids missed (spends the corpus)")
    parser.add_argument(
        "--misses",
        action="store_true",
        help="each miss with its value, the findings and the text (spends it)",
    )
    args = parser.parse_args(argv)
    detector = make_detector("builtin", sorted(PII_CATEGORIES))
    cases = load(CORPORA / f"holdout_{args.corpus}.yaml")
    corpus = f"held-out corpus {args.corpus}"
    tallies = score(detector, cases)
    console = Console(highlight=False, width=120)
    figures: dict[str, Any] = {}
    for group in ("category", "language", "all"):
        table = Table(title=f"{corpus} by {group}" if group != "all" else f"{corpus}, overall")
        for column in (group, "values", "recall", "negatives", "false-positive rate"):
            table.add_column(column, justify="right" if column != group else "left")
        for name, t in sorted(tallies[group].items()):
            recall = "—" if t.recall is None else f"{t.recall:.3f}"
            fpr = "—" if t.fpr is None else f"{t.fpr:.3f}"
            table.add_row(name, str(t.values), recall, str(t.negatives), fpr)
            figures.setdefault(group, {})[name] = {"values": t.values, "recall": t.recall,
                                                   "negatives": t.negatives, "fpr": t.fpr}  # fmt: skip
        console.print(table)
    overall = tallies["all"]["all"]
    positives = " ".join(c["text"] for c in cases if c["kind"] == "positive")
    negatives = " ".join(c["text"] for c in cases if c["kind"] == "negative")
    figures["cost_us_per_kb"] = {
        "pii_dense": round(microseconds_per_kb(detector, positives), 1),
        "hard_negatives": round(microseconds_per_kb(detector, negatives), 1),
    }
    console.print(f"cost: {figures['cost_us_per_kb']['pii_dense']} µs/KB on the positives (PII-dense), "
                  f"{figures['cost_us_per_kb']['hard_negatives']} µs/KB on the negatives")  # fmt: skip
    if args.misses:
        for line in overall.details:
            console.print(line, markup=False)
    elif args.show_missed:
        for line in overall.missed:
            console.print(f"  {line}")
    else:
        console.print(f"{len(overall.missed)} values missed or negatives flagged (--show-missed lists them)")
    met = (overall.recall or 0) >= RECALL_BAR and (overall.fpr or 0) <= FPR_BAR
    console.print(f"recall {overall.recall:.3f} (bar {RECALL_BAR}), false-positive rate {overall.fpr:.3f} "
                  f"(bar {FPR_BAR}): {'met' if met else 'NOT met'}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
