from __future__ import annotations

import random

import pytest

from kerasft.tasks.ner import entity_scores, spans


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O"], [("PER", 0, 2)]),
        (["O", "I-PER", "I-PER"], [("PER", 1, 3)]),  # I- after O starts an entity
        (
            ["B-PER", "I-LOC"],
            [("PER", 0, 1), ("LOC", 1, 2)],
        ),  # a type change ends one, starts another
        (["B-PER", "B-PER"], [("PER", 0, 1), ("PER", 1, 2)]),
        (["O", "B-ORG", "I-ORG"], [("ORG", 1, 3)]),  # entity at sentence end
        (["B-MISC"], [("MISC", 0, 1)]),
        (["O", "O"], []),
    ],
)
def test_spans(tags, expected):
    assert spans(tags) == expected


def test_hand_computed_scores():
    true = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "B-MISC"]]
    scores = entity_scores(true, pred)
    # gold: PER, LOC, ORG; predicted: PER, ORG(wrong span type at 3), ORG, MISC; hits: PER, ORG(second sentence)
    assert scores["precision"] == pytest.approx(2 / 4)
    assert scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert scores["per_type"]["PER"]["f1"] == 1.0


def test_matches_seqeval_on_random_sequences():
    seqeval = pytest.importorskip("seqeval.metrics")
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG"]
    true = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(400)]
    pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in row] for row in true]
    ours = entity_scores(true, pred)
    assert ours["f1"] == pytest.approx(seqeval.f1_score(true, pred), abs=1e-9)
    assert ours["precision"] == pytest.approx(seqeval.precision_score(true, pred), abs=1e-9)
    assert ours["recall"] == pytest.approx(seqeval.recall_score(true, pred), abs=1e-9)
