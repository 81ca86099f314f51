"""What every frozen held-out corpus must keep (tests/pii/README.md): its header, its pinned digest,
unique ids that name their language (and, from v3 on, their category), and the case schema. Each
corpus's own test checks what it covers and the checksums of its values."""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.pii.corpus import assert_well_formed, load

HERE = Path(__file__).parent
#: corpus -> (version, SHA-256): pinned so that any edit to a frozen corpus is a deliberate change in review
FROZEN = {
    "holdout_v2.yaml": (2, "8821935bd08fd391d1d063e3acb71233049591b7d1fedd42d1bff4a15b20893e"),
    "holdout_v3.yaml": (3, "d3cc3ead3cf2ff6cf58903c25889b4a7932bcc912ecdf0392a4f1160c7705b5c"),
    "holdout_v4.yaml": (4, "5231b733c37e93aa01bee9433367d3061d929a08f27be35ee3d9c6b7bd9df6f1"),
}
DATA = {name: load(HERE / name) for name in FROZEN}
ALL_CASES = [(name, case) for name, data in DATA.items() for case in data["cases"]]


@pytest.mark.parametrize("name", FROZEN)
def test_header_marks_the_corpus_frozen(name: str) -> None:
    assert DATA[name]["version"] == FROZEN[name][0]
    assert DATA[name]["frozen"] is True


@pytest.mark.parametrize("name", FROZEN)
def test_file_matches_its_pinned_digest(name: str) -> None:
    assert hashlib.sha256((HERE / name).read_bytes()).hexdigest() == FROZEN[name][1]


@pytest.mark.parametrize("name", FROZEN)
def test_ids_are_unique_and_name_their_language(name: str) -> None:
    cases = DATA[name]["cases"]
    ids = [c["id"] for c in cases]
    assert [i for i, n in Counter(ids).items() if n > 1] == []
    for case in cases:
        assert case["id"].startswith(case["language"] + "-"), case["id"]
        if FROZEN[name][0] >= 3:  # v3 on: <language>-<category>-NN or <language>-neg-<topic>-NN
            topic = case["category"].replace("_", "-") if case["kind"] == "positive" else "neg"
            assert re.fullmatch(rf"{case['language']}-{topic}-([a-z0-9]+-)?\d\d", case["id"]), case["id"]


@pytest.mark.parametrize(("name", "case"), ALL_CASES, ids=[f"{n[8:10]}-{c['id']}" for n, c in ALL_CASES])
def test_case_schema(name: str, case: dict[str, Any]) -> None:
    assert_well_formed(case)
