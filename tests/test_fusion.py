"""The evidence fusion: features, scoring, contributions, fitting and its file round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rac.evidence import Evidence, knn_share, shown_share
from rac.formatting import RACExample
from rac.fusion import ALL_FEATURES, SOURCES, EvidenceFusion, features


def evidence(model, shown=None, knn=None, prototype=None, indexed=None, reliability=0.5) -> Evidence:
    n = len(model)
    zeros = np.zeros(n)
    return Evidence(np.asarray(model, float), np.asarray(zeros if shown is None else shown, float),
                    np.asarray(zeros if knn is None else knn, float),
                    np.asarray(zeros if prototype is None else prototype, float),
                    np.asarray(np.ones(n) if indexed is None else indexed, float), reliability)


def test_shares_weight_by_similarity() -> None:
    found = [RACExample("a", ("x",), similarity=0.9), RACExample("b", ("y",), similarity=0.6)]
    assert shown_share(found, ["x", "y", "z"]) == pytest.approx([0.6, 0.4, 0.0])
    knn = knn_share(found, ["x", "y", "z"])
    assert knn.sum() == pytest.approx(1.0) and knn[0] > 0.99  # softmax(cos / 0.05): 0.3 apart is decisive
    assert knn_share([], ["x"]).tolist() == [0.0]


def test_features_are_relative_where_they_should_be() -> None:
    x = features(evidence([0.9, 0.5, 0.1], prototype=[0.7, 0.2, 0.9], indexed=[1, 1, 0]))
    names = list(ALL_FEATURES)
    gap = x[:, names.index("model_gap")]
    assert gap[0] == 0.0 and (gap[1:] < 0).all()
    # the prototype gap is measured against the best *indexed* label; unindexed labels get none
    assert x[:, names.index("prototype_gap")] == pytest.approx([0.0, -0.5, 0.0])
    assert x[:, names.index("unseen_model")][:2].tolist() == [0.0, 0.0] and x[2, names.index("unseen_model")] < 0
    assert x[:, names.index("name_gap")].tolist() == [0.0, 0.0, 0.0]  # no label-name cosines: no say


def test_label_name_features_are_gaps_to_the_best_name() -> None:
    ev = Evidence(np.array([0.9, 0.5, 0.1]), np.zeros(3), np.zeros(3), np.zeros(3), np.array([1.0, 1.0, 0.0]), 0.5,
                  name=np.array([0.2, 0.5, 0.4]))
    x = features(ev, ("name_gap", "unseen_name"))
    assert x[:, 0] == pytest.approx([-0.3, 0.0, -0.1])
    assert x[:, 1] == pytest.approx([0.0, 0.0, -0.1])  # only the label the index has no example of
    assert Evidence.from_dicts(["a", "b", "c"], ev.as_dicts(["a", "b", "c"])).name.tolist() == [0.2, 0.5, 0.4]


def toy_fusion() -> EvidenceFusion:
    """Fitted on synthetic evidence where the kNN share tells the truth for indexed labels, and for an
    unindexed true label the neighbours carry an old one while the model knows: the fit must learn both."""
    rng = np.random.default_rng(0)
    rows, targets = [], []
    for _ in range(300):
        truth = rng.integers(4)
        indexed = np.ones(4) if rng.random() < 0.5 else (np.arange(4) != truth).astype(float)
        model = rng.uniform(0.05, 0.4, 4)
        model[truth] = rng.uniform(0.5, 0.95)
        if indexed[truth]:
            model = rng.uniform(0.05, 0.95, 4)  # the model is noise where the corpus knows
        knn = np.where(indexed > 0, rng.uniform(0, 0.2, 4), 0.0)
        # the neighbours carry the true label when it is indexed, else some old label (the drift case)
        knn[truth if indexed[truth] else (truth + 1 + rng.integers(3)) % 4] = rng.uniform(0.5, 1.0)
        ev = evidence(model, knn=knn, shown=knn, indexed=indexed, reliability=0.8)
        rows.append(features(ev))
        targets.append((np.arange(4) == truth).astype(int))
    return EvidenceFusion.fit(np.concatenate(rows), np.concatenate(targets), feature_names=ALL_FEATURES,
                              fitted_on={"datasets": ["toy"]})


def test_fit_learns_when_to_trust_which_source() -> None:
    fusion = toy_fusion()
    # an old label the neighbours carry wins when the model is unsure ...
    corpus_knows = evidence([0.5, 0.55, 0.3], knn=[0.9, 0.05, 0.05], shown=[0.9, 0.05, 0.05], reliability=0.8)
    assert fusion.score(corpus_knows).argmax() == 0
    # ... and a new label with no example wins when the model is sure of it, even though the
    # neighbours all carry an old one
    new_label = evidence([0.1, 0.95, 0.2], knn=[1.0, 0.0, 0.0], shown=[1.0, 0.0, 0.0], indexed=[1, 0, 1],
                         reliability=0.8)
    assert fusion.score(new_label).argmax() == 1


def test_contributions_sum_to_the_fused_logit() -> None:
    fusion = toy_fusion()
    ev = evidence([0.2, 0.8], knn=[0.7, 0.1], indexed=[1, 0])
    parts = fusion.contributions(ev)
    assert set(parts[0]) == set(SOURCES)
    logits = np.log(fusion.score(ev)) - np.log1p(-fusion.score(ev))
    assert [sum(p.values()) + fusion.intercept for p in parts] == pytest.approx(logits.tolist())


def test_save_load_round_trip_and_bad_files(tmp_path: Path) -> None:
    fusion = toy_fusion()
    path = fusion.save(tmp_path)
    assert path.name == "fusion.json" and not list(tmp_path.glob(".*tmp*"))
    loaded = EvidenceFusion.load(tmp_path)
    ev = evidence([0.3, 0.6, 0.9], knn=[0.5, 0.5, 0.0], prototype=[0.3, 0.1, 0.2])
    assert loaded.score(ev).tolist() == fusion.score(ev).tolist()
    assert loaded.fitted_on == {"datasets": ["toy"]}

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: corrupt rac fusion file, not JSON"):
        EvidenceFusion.load(tmp_path / "bad.json")
    raw = fusion.to_dict()
    raw["features"] = ["model_logit", "pickle_me"]
    (tmp_path / "unknown.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="unknown fusion feature"):
        EvidenceFusion.load(tmp_path / "unknown.json")
    raw = fusion.to_dict()
    raw["format_version"] = 99
    (tmp_path / "newer.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="upgrade rac"):
        EvidenceFusion.load(tmp_path / "newer.json")
    with pytest.raises(FileNotFoundError, match="no rac fusion file"):
        EvidenceFusion.load(tmp_path / "missing.json")
