"""Scores the PII detector against the labelled corpus and times it on ordinary prose.

``python -m bench.pii_corpus`` prints precision, recall and F1 per category and overall, then what a
scan costs in µs per KB. A sample's findings are compared with its labels as multisets of categories;
tests/unit/test_pii.py holds the same numbers to a floor.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from gateway.pii import PII_CATEGORIES, BuiltinDetector, Detector, detectors

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "unit" / "pii_corpus.yaml"
#: written blind (without reading the detector or its corpus): the honest number
HOLDOUT = CORPUS.with_name("pii_holdout.yaml")

#: a paragraph of business prose with the numbers such text has (dates, times, money, versions, a URL)
PROSE = (
    "The quarterly review covered 12 projects across 3 regions. Revenue grew 4.5% to $1,204,000, "
    "while costs fell by 2.1 percent. On 2024-03-15 at 10:30 the team met to discuss the roadmap for "
    "version 2.4; Dr. Smith noted that the rollout at the Berlin office, scheduled for Q3, depends on "
    "the vendor's API. Please see https://example.com/docs/guide for details: the build takes about "
    "45 minutes and uses 16 GB of memory. Meanwhile, the board approved a budget of 250 thousand "
    "dollars for the next 18 months. Everyone agreed that communication could improve, and a "
    "follow-up was set for Friday. "
)


@dataclass(frozen=True)
class Sample:
    text: str
    expect: tuple[str, ...]


@dataclass
class Score:
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    @property
    def precision(self) -> float:
        found = self.true_positives + self.false_positives
        return self.true_positives / found if found else 1.0

    @property
    def recall(self) -> float:
        expected = self.true_positives + self.false_negatives
        return self.true_positives / expected if expected else 1.0

    @property
    def f1(self) -> float:
        total = self.precision + self.recall
        return 2 * self.precision * self.recall / total if total else 0.0


@dataclass
class Evaluation:
    """Scores by category, ``overall`` across all of them, and every sample the detector got wrong."""

    scores: dict[str, Score]
    mistakes: list[tuple[Sample, list[str]]] = field(default_factory=list)

    @property
    def overall(self) -> Score:
        return self.scores["overall"]


def load_corpus(path: Path = CORPUS) -> list[Sample]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    samples = [Sample(entry["text"], tuple(entry["expect"])) for entry in data["samples"]]
    unknown = {c for s in samples for c in s.expect} - PII_CATEGORIES
    if unknown:
        raise ValueError(f"{path}: unknown categories {sorted(unknown)}")
    return samples


def evaluate(detector: Detector, samples: list[Sample]) -> Evaluation:
    evaluation = Evaluation({name: Score() for name in [*sorted(PII_CATEGORIES), "overall"]})
    for sample in samples:
        found = [f.category for f in detector.find(sample.text)]
        expected, got = Counter(sample.expect), Counter(found)
        if expected != got:
            evaluation.mistakes.append((sample, found))
        for category in expected | got:
            hits = min(expected[category], got[category])
            for score in (evaluation.scores[category], evaluation.overall):
                score.true_positives += hits
                score.false_positives += got[category] - hits
                score.false_negatives += expected[category] - hits
    return evaluation


def microseconds_per_kb(detector: Detector, text: str, seconds: float = 0.5) -> float:
    """Mean cost of ``detector.find(text)``, run for about ``seconds``, per 1,024 characters.

    Every round scans: the process's scan memo (``detectors._SCANS``) would otherwise answer each
    round after the first from memory, and the bench would time a dict lookup, not the detector."""
    remembered = detectors._SCANS
    detectors._SCANS = detectors._ScanMemo(entries=0)
    try:
        detector.find(text)
        rounds, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            detector.find(text)
            rounds += 1
    finally:
        detectors._SCANS = remembered
    return elapsed / rounds * 1e6 / (len(text) / 1024)


def main() -> int:
    console = Console()
    detector = BuiltinDetector()
    samples = load_corpus()
    for title, path in (("development corpus", CORPUS), ("held-out corpus", HOLDOUT)):
        if path.exists():
            _report(console, detector, title, load_corpus(path))

    prose = (PROSE * (10240 // len(PROSE) + 1))[:10240]
    dense = "\n".join(s.text for s in samples)
    console.print(f"ordinary prose, 10 KB: {microseconds_per_kb(detector, prose):.1f} µs/KB")
    console.print(
        f"the corpus ({len(dense) // 1024} KB, PII-dense): {microseconds_per_kb(detector, dense):.1f} µs/KB"
    )
    return 0


def _report(console: Console, detector: Detector, title: str, samples: list[Sample]) -> None:
    evaluation = evaluate(detector, samples)
    table = Table(title=f"PII detector ({detector.name}), {title}: {len(samples)} labelled samples")
    for column in ("category", "TP", "FP", "FN", "precision", "recall", "F1"):
        table.add_column(column, justify="left" if column == "category" else "right")
    for name, score in evaluation.scores.items():
        table.add_row(
            name,
            str(score.true_positives),
            str(score.false_positives),
            str(score.false_negatives),
            f"{score.precision:.3f}",
            f"{score.recall:.3f}",
            f"{score.f1:.3f}",
            style="bold" if name == "overall" else None,
        )
    console.print(table)
    for sample, found in evaluation.mistakes:
        console.print(f"[yellow]mismatch[/]: expected {list(sample.expect)}, found {found}: {sample.text!r}")


if __name__ == "__main__":
    sys.exit(main())
