"""The label shortlist (``rac.shortlist``): its ranking rule, and that every candidate keeps a score."""

from __future__ import annotations

import numpy as np
import pytest

from rac.shortlist import OUTSIDE_CEILING, Shortlist, fill_scores, select

SIMILARITY = np.array([0.1, 0.9, 0.3, 0.8, 0.5, 0.2])


def test_top_labels_by_cosine_in_candidate_order_rest_by_cosine() -> None:
    picked = select(SIMILARITY, 3)
    assert picked.kept.tolist() == [1, 3, 4]  # the three best, in the order the model reads them
    assert picked.rest.tolist() == [2, 5, 0]  # the others, best first


def test_carried_labels_are_always_kept() -> None:
    picked = select(SIMILARITY, 3, carried=[0])
    assert picked.kept.tolist() == [0, 1, 3]
    assert picked.rest.tolist() == [4, 2, 5]
    # more carried labels than fit: all of them, nothing else
    assert select(SIMILARITY, 2, carried=[0, 5, 2]).kept.tolist() == [0, 2, 5]


def test_extra_evidence_is_added_to_the_cosine() -> None:
    evidence = np.array([0.0, 0.0, 0.7, 0.0, 0.0, 0.0])
    assert select(SIMILARITY, 2, evidence=evidence).kept.tolist() == [1, 2]
    with pytest.raises(ValueError, match="one value per label"):
        select(SIMILARITY, 2, evidence=np.zeros(3))


def test_ties_go_to_the_earlier_label_and_small_sets_are_kept_whole() -> None:
    assert select(np.zeros(5), 2).kept.tolist() == [0, 1]
    whole = select(SIMILARITY, 10)
    assert whole.kept.tolist() == list(range(6)) and whole.rest.size == 0


def test_outside_scores_sit_below_every_kept_score_in_evidence_order() -> None:
    picked = select(SIMILARITY, 3)
    scores = fill_scores(picked, np.array([0.7, 0.2, 0.9]))
    assert scores[picked.kept].tolist() == [0.7, 0.2, 0.9]
    outside = scores[picked.rest]
    assert outside.max() < min(OUTSIDE_CEILING, 0.2) and outside.min() > 0
    assert (np.diff(outside) < 0).all()
    # a kept score under the ceiling pulls the band down with it
    low = fill_scores(picked, np.array([1e-8, 0.5, 0.5]))
    assert low[picked.rest].max() < 1e-8


def test_every_candidate_of_a_thousand_gets_a_score() -> None:
    rng = np.random.default_rng(0)
    similarity = rng.uniform(-1, 1, 1000)
    picked = select(similarity, 25, carried=[7, 999])
    assert len(picked.kept) == 25 and {7, 999} <= set(picked.kept.tolist())
    assert sorted(picked.kept.tolist() + picked.rest.tolist()) == list(range(1000))
    scores = fill_scores(picked, rng.uniform(0.01, 1, 25))
    assert np.isfinite(scores).all() and scores.shape == (1000,)
    assert scores[picked.rest].max() < scores[picked.kept].min()
    assert scores[picked.rest].sum() < 1e-3  # a softmax over the kept labels stays a distribution


def test_errors() -> None:
    with pytest.raises(ValueError, match="size must be >= 1"):
        select(SIMILARITY, 0)
    with pytest.raises(ValueError, match="2 scores for 3"):
        fill_scores(Shortlist(kept=np.array([0, 1, 2]), rest=np.array([3])), np.zeros(2))


# ------------------------------------------------------------------------------------------- in the classifier
TEXT = "Can you book a table for two at an italian restaurant tonight?"
#: 1,000 candidates: a few real intents among synthetic ones.
MANY = [f"synthetic label {i}" for i in range(996)] + ["restaurant reservation", "weather", "music", "alarm"]


@pytest.fixture(scope="module")
def model(minilm_path: str):
    from rac.model import GLiClassModel

    return GLiClassModel.from_encoder(minilm_path, seed=0).eval()


def test_a_thousand_labels_take_one_pass_and_all_come_back_ranked(model) -> None:
    from rac.classifier import RACClassifier

    clf = RACClassifier(model)
    [result] = clf.predict(TEXT, MANY, threshold=0.5)
    assert result.passes == 1 and sorted(result.scores) == sorted(MANY)
    values = [score for _, score in result.labels]
    assert values == sorted(values, reverse=True)
    scored, outside = values[:25], values[25:]
    assert min(scored) > max(outside) and max(outside) <= OUTSIDE_CEILING
    assert set(result.predicted) <= {name for name, _ in result.labels[:25]}

    # the shortlist is the best cosines, and the model scores it exactly as if asked for those labels alone
    embedder = clf.label_embedder
    cosine = embedder.encode(MANY) @ embedder.encode([TEXT])[0]
    best = {MANY[j] for j in np.argsort(-cosine)[:25]}
    assert {name for name, _ in result.labels[:25]} == best
    alone = clf.predict(TEXT, [name for name in MANY if name in best])[0].scores
    assert max(abs(alone[name] - result.scores[name]) for name in best) < 1e-6


def test_labels_the_examples_carry_are_always_shortlisted(model) -> None:
    from rac.classifier import RACClassifier

    carried = "synthetic label 123"
    [result] = RACClassifier(model).predict(TEXT, MANY, examples=[{"text": "a table for four", "true_labels": [carried]}])
    assert carried in {name for name, _ in result.labels[:25]}
    assert carried in result.evidence


def test_shortlist_off_scores_every_label_in_chunks(model) -> None:
    from rac.classifier import RACClassifier

    labels = MANY[-100:]
    exhaustive = RACClassifier(model, shortlist=False)
    assert "shortlist=False" in repr(exhaustive)
    [result] = exhaustive.predict(TEXT, labels)
    assert result.passes == 4 and min(result.scores.values()) > 0.01
    [short] = RACClassifier(model).predict(TEXT, labels)
    assert short.passes == 1 and sorted(short.scores) == sorted(labels)


def test_labels_of_the_nearest_neighbours_are_shortlisted(model) -> None:
    """Retrieved neighbours count even below the similarity cut of the shown examples (the fusion weighs them)."""
    from rac.classifier import RACClassifier
    from rac.formatting import RACExample
    from rac.index import ExampleIndex

    index = ExampleIndex.build([RACExample("the weather in oslo tomorrow", ("synthetic label 5",)),
                                RACExample("a table for four at eight", ("synthetic label 77",))])
    [result] = RACClassifier(model, index).predict(TEXT, MANY, k=3, min_similarity=0.99)
    assert result.examples == []  # none shown to the model
    kept = {name for name, _ in result.labels[:25]}
    assert {"synthetic label 5", "synthetic label 77"} <= kept
