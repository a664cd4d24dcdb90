"""``rac eval``: metric functions against hand-computed values, the vote rule, dataset splitting, and end-to-end
runs on tiny folders with the real packaged embedder and a real (random-head) GLiClass model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rac.cli import main
from rac.evaluation import (
    CENTROID,
    KNN,
    LOGREG,
    MACRO_TOP1,
    MICRO_AT_THRESHOLD,
    VOTE,
    ZERO_SHOT,
    Decisions,
    EvalDataset,
    drift_split,
    evaluate,
    load_dataset,
    macro_f1,
    micro_f1,
    vote,
)
from rac.formatting import RACExample

LABELS = ["a", "b", "c", "d"]


def onehot(rows: list[list[str]], labels: list[str] = LABELS) -> np.ndarray:
    out = np.zeros((len(rows), len(labels)), dtype=bool)
    for i, row in enumerate(rows):
        for label in row:
            out[i, labels.index(label)] = True
    return out


# ------------------------------------------------------------------------------------------- metrics
def test_macro_f1_matches_hand_computation() -> None:
    # a: tp1 fn1 -> 2/3; b: tp1 fp2 -> 1/2; c: fn1 -> 0; d absent from both -> skipped. (2/3 + 1/2 + 0) / 3
    gold = onehot([["a"], ["a"], ["b"], ["c"]])
    pred = onehot([["a"], ["b"], ["b"], ["b"]])
    assert macro_f1(gold, pred) == pytest.approx(7 / 18)


def test_macro_f1_counts_labels_only_predicted() -> None:
    # a: tp1 fn1 -> 2/3; d: fp1 (never gold, still counted) -> 0; mean 1/3
    assert macro_f1(onehot([["a"], ["a"]]), onehot([["a"], ["d"]])) == pytest.approx(1 / 3)


def test_micro_f1_matches_hand_computation() -> None:
    # tp = 2 (a in row 0, b in row 1), fp = 1 (c), fn = 1 (b in row 0): 2*2 / (2*2 + 1 + 1)
    gold = onehot([["a", "b"], ["b"], []])
    pred = onehot([["a"], ["b", "c"], []])
    assert micro_f1(gold, pred) == pytest.approx(2 / 3)


def test_f1_edge_cases() -> None:
    empty = onehot([[], []])
    gold = onehot([["a"], ["b", "c"]])
    assert micro_f1(empty, empty) == 1.0 and macro_f1(empty, empty) == 1.0  # nothing to find, nothing claimed
    assert micro_f1(gold, empty) == 0.0 and macro_f1(gold, empty) == 0.0
    assert micro_f1(empty, gold) == 0.0 and macro_f1(empty, gold) == 0.0
    assert micro_f1(gold, gold) == 1.0 and macro_f1(gold, gold) == 1.0
    with pytest.raises(ValueError, match="shape"):
        micro_f1(gold, onehot([["a"]]))


def test_decisions_from_scores() -> None:
    scores = np.array([[0.2, 0.7, 0.6, 0.1], [0.3, 0.1, 0.2, 0.4]])
    decisions = Decisions.from_scores(scores, 0.5)
    assert (decisions.best == onehot([["b"], ["d"]])).all()
    assert (decisions.chosen == onehot([["b", "c"], []])).all()


def test_vote_rule() -> None:
    def ex(labels: tuple[str, ...], similarity: float) -> RACExample:
        return RACExample("x", labels, similarity=similarity)

    fallback = Decisions(onehot([["d"]] * 4), onehot([["d"]] * 4))
    neighbours = [
        [ex(("a",), 0.9), ex(("b",), 0.8), ex(("b",), 0.6)],  # b has more votes despite a being nearest
        [ex(("a",), 0.6), ex(("c",), 0.9)],  # 1-1 tie: larger summed similarity wins; no strict majority
        [ex(("a", "b"), 0.7), ex(("b",), 0.7), ex(("c",), 0.7)],  # b carried by 2 of 3
        [],  # no neighbour: fallback
    ]
    decisions = vote(neighbours, LABELS, fallback)
    assert (decisions.best == onehot([["b"], ["c"], ["b"], ["d"]])).all()
    assert (decisions.chosen == onehot([["b"], [], ["b"], ["d"]])).all()


# ------------------------------------------------------------------------------------------- datasets
def write_split(path: Path, rows: list[tuple[str, list[str]]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t, "labels": ls}) + "\n" for t, ls in rows), encoding="utf-8")


def test_load_dataset_without_train_split_halves_test(tmp_path: Path) -> None:
    rows = [(f"text number {i}", ["x"] if i % 3 else ["x", "y"]) for i in range(21)]
    write_split(tmp_path / "d" / "test.jsonl", rows)
    data = load_dataset(tmp_path / "d", max_queries=5, seed=1)
    assert data.corpus_source == "half of test" and data.multi_label and data.labels == ("x", "y")
    assert len(data.corpus) == 10 and len(data.queries) == 5
    assert not {q.text for q in data.queries} & {c.text for c in data.corpus}
    again = load_dataset(tmp_path / "d", max_queries=5, seed=1)
    assert again.queries == data.queries and again.corpus == data.corpus
    assert load_dataset(tmp_path / "d", max_queries=None, seed=1).queries.__len__() == 11


def test_load_dataset_labels_are_union_of_corpus_and_test(tmp_path: Path) -> None:
    write_split(tmp_path / "d" / "train.jsonl", [("one", ["p"]), ("two", ["q"])])
    write_split(tmp_path / "d" / "test.jsonl", [("three", ["r"]), ("four", ["p"])])
    data = load_dataset(tmp_path / "d", max_queries=1, max_corpus=1)
    # the label set comes from the full splits, not from the samples
    assert data.labels == ("p", "q", "r") and not data.multi_label and data.corpus_source == "train"
    assert len(data.queries) == 1 and len(data.corpus) == 1
    with pytest.raises(FileNotFoundError):
        load_dataset(tmp_path / "missing")


# ------------------------------------------------------------------------------------------- end to end
SEPARABLE = [  # (corpus text, near-duplicate query, single label, label set)
    ("The striker scored a late goal and the football team won the championship match.",
     "The striker scored a late goal, and the football team won the championship match!", "football", ["sport"]),
    ("Simmer the tomato sauce with garlic, olive oil and fresh basil for twenty minutes.",
     "simmer the tomato sauce with garlic, olive oil and fresh basil for 20 minutes", "cooking", ["food", "health"]),
    ("The telescope captured images of a distant spiral galaxy and its black hole.",
     "The telescope captured an image of a distant spiral galaxy and its black hole.", "astronomy", ["science"]),
    ("The central bank raised interest rates to curb inflation and stabilise the currency.",
     "The central bank raised its interest rates to curb inflation and stabilize the currency.", "finance",
     ["economy", "news"]),
]


@pytest.fixture(scope="module")
def random_head_model(minilm_path: str):
    """A real GLiClass model (MiniLM backbone, untrained head): exercises every code path, scores are noise."""
    from rac.model import GLiClassModel

    return GLiClassModel.from_encoder(minilm_path, seed=0)


@pytest.fixture(scope="module")
def embedder():
    from rac.embedding import Embedder

    return Embedder()


def test_separable_toy_is_perfect_for_retrieval_vote(tmp_path: Path, random_head_model, embedder) -> None:
    corpus, queries, names = ([row[i] for row in SEPARABLE] for i in range(3))
    vectors = embedder.encode(queries)
    sims = vectors @ embedder.encode(corpus).T
    # preconditions that make the baselines provably perfect: each query's only neighbour >= 0.5 is its twin,
    # and its own label name is the closest label name
    assert (np.diag(sims) >= 0.9).all() and (sims[~np.eye(len(sims), dtype=bool)] < 0.5).all()
    assert ((vectors @ embedder.encode(names).T).argmax(1) == np.arange(len(names))).all()
    single, multi = tmp_path / "single", tmp_path / "multi"
    write_split(single / "train.jsonl", [(c, [label]) for c, _, label, _ in SEPARABLE])
    write_split(single / "test.jsonl", [(q, [label]) for _, q, label, _ in SEPARABLE])
    write_split(multi / "train.jsonl", [(c, labels) for c, _, _, labels in SEPARABLE])
    write_split(multi / "test.jsonl", [(q, labels) for _, q, _, labels in SEPARABLE])

    report = evaluate([single, multi], model=random_head_model, embedder=embedder, ks=[0, 1], progress=False)
    by_name = {r.name: r for r in report.datasets}
    assert not by_name["single"].multi_label and by_name["multi"].multi_label
    for result in report.datasets:
        assert result.coverage == 1.0
        assert result.scores[VOTE][result.metric] == 1.0
        # every peer on the same embeddings is perfect on a separable set
        for peer in (LOGREG, KNN, CENTROID):
            assert result.scores[peer][result.metric] == 1.0, (result.name, peer)
    assert by_name["single"].scores[VOTE][MICRO_AT_THRESHOLD] == 1.0
    assert by_name["single"].scores[ZERO_SHOT][MACRO_TOP1] == 1.0
    # the columns come from predict itself: "model alone" is the untrained head's own scores, the fixed mix
    # adds the examples' labels, which alone make every query right
    for result in report.datasets:
        assert result.scores["fixed mix k=1"][result.metric] == 1.0
        assert result.scores["model alone k=1"][result.metric] < 1.0


def test_drift_split_removes_every_row_of_the_unseen_labels() -> None:
    rows = [RACExample(f"text {i}", (f"l{i % 10}",) if i % 3 else (f"l{i % 10}", f"l{(i + 1) % 10}"))
            for i in range(60)]
    dataset = EvalDataset("toy", rows, rows[:5], tuple(f"l{i}" for i in range(10)), True, "train")
    corpus, unseen = drift_split(dataset, 0.3, seed=1)
    assert len(unseen) == 3
    assert corpus and not any(unseen.intersection(row.true_labels) for row in corpus)
    assert [row for row in rows if not unseen.intersection(row.true_labels)] == corpus
    assert drift_split(dataset, 0.3, seed=1) == (corpus, unseen)  # seeded
    assert drift_split(dataset, 0.3, seed=2)[1] != unseen
    assert drift_split(dataset, 0.0) == (rows, frozenset())
    with pytest.raises(ValueError, match="unseen-labels fraction must be in"):
        drift_split(dataset, 1.0)


def test_eval_reports_hits_on_unseen_and_seen_labels(tmp_path: Path, random_head_model, embedder) -> None:
    folder = tmp_path / "single"
    write_split(folder / "train.jsonl", [(c, [label]) for c, _, label, _ in SEPARABLE])
    write_split(folder / "test.jsonl", [(q, [label]) for _, q, label, _ in SEPARABLE])
    report = evaluate([folder], model=random_head_model, embedder=embedder, ks=[0, 1], unseen_labels=0.25,
                      progress=False)
    [result] = report.datasets
    assert len(result.unseen_labels) == 1 and result.n_unseen_queries == 1 and result.n_corpus == 3
    # a supervised peer cannot name a label it has no example of; it still gets every seen query right
    for peer in (LOGREG, KNN, CENTROID):
        assert result.hits[peer] == {"unseen": 0.0, "seen": 1.0}
    assert result.hits[ZERO_SHOT]["unseen"] == 1.0  # the names alone are separable
    assert "## Unseen and seen labels" in report.to_markdown()


def test_cli_eval_writes_table_json_and_markdown(tmp_path: Path, random_head_model, capsys) -> None:
    model_dir = tmp_path / "model"
    random_head_model.save_pretrained(model_dir)
    rows = [(c, [label]) for c, _, label, _ in SEPARABLE] + [(q, [label]) for _, q, label, _ in SEPARABLE]
    write_split(tmp_path / "toy" / "train.jsonl", rows[:6])
    write_split(tmp_path / "toy" / "test.jsonl", rows[6:])
    write_split(tmp_path / "halves" / "test.jsonl", [(c, labels) for c, _, _, labels in SEPARABLE]
                + [(q, labels) for _, q, _, labels in SEPARABLE])
    out = tmp_path / "res" / "acc"
    code = main(["eval", str(tmp_path / "toy"), str(tmp_path / "halves"), "--k", "0,2", "--max-queries", "3",
                 "--model", str(model_dir), "--max-labels-per-pass", "2", "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    header = [cell.strip() for cell in printed[0].strip("|").split("|")]
    assert header == ["dataset", "type", "metric", "queries", "corpus", "labels", "k=0", "k=2", "model alone k=2",
                      "fixed mix k=2", LOGREG, KNN, CENTROID, ZERO_SHOT, VOTE, "with neighbour"]
    assert [line.split("|")[1].strip() for line in printed[2:]] == ["toy", "halves", "**average**"]

    data = json.loads((tmp_path / "res" / "acc.json").read_text())
    assert data["config"]["ks"] == [0, 2] and data["config"]["command"].startswith("rac eval ")
    assert data["config"]["max_labels_per_pass"] == 2 and "--max-labels-per-pass 2" in data["config"]["command"]
    toy, halves = data["datasets"]
    assert (toy["n_queries"], toy["n_corpus"], toy["corpus_source"], toy["multi_label"]) == (2, 6, "train", False)
    assert (halves["n_queries"], halves["n_corpus"], halves["corpus_source"]) == (3, 4, "half of test")
    assert halves["multi_label"] and halves["metric"] == MICRO_AT_THRESHOLD
    for result in data["datasets"]:
        assert set(result["scores"]) == {"k=0", "k=2", "model alone k=2", "fixed mix k=2", LOGREG, KNN, CENTROID,
                                         ZERO_SHOT, VOTE}
        for metrics in result["scores"].values():
            assert set(metrics) == {MACRO_TOP1, MICRO_AT_THRESHOLD}
            assert all(0.0 <= value <= 1.0 for value in metrics.values())
    average = np.mean([toy["scores"][VOTE][MACRO_TOP1], halves["scores"][VOTE][MICRO_AT_THRESHOLD]])
    assert data["average"]["headline"][VOTE] == pytest.approx(average)
    markdown = (tmp_path / "res" / "acc.md").read_text()
    assert data["config"]["command"] in markdown and markdown.count("| **average** |") == 2

    assert (tmp_path / "res" / "acc.png").stat().st_size > 1000  # the chart

    # --no-fusion: the k columns are the model's own scores
    assert main(["eval", str(tmp_path / "toy"), "--k", "0,2", "--max-queries", "3", "--model", str(model_dir),
                 "--no-fusion", "--out", str(out), "--no-progress"]) == 0
    data = json.loads((tmp_path / "res" / "acc.json").read_text())
    assert data["config"]["fusion"] == "off" and "--no-fusion" in data["config"]["command"]
    scores = data["datasets"][0]["scores"]
    assert scores["k=2"] == scores["model alone k=2"]


def test_cli_eval_rejects_bad_arguments_before_loading_anything(tmp_path: Path, capsys) -> None:
    assert main(["eval", str(tmp_path), "--k", "0,x"]) == 2
    assert "--k must be comma-separated integers" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "no test.jsonl in dataset folder(s)" in capsys.readouterr().err
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "test.jsonl").write_text('{"text": "a", "labels": ["x"]}\n')
    assert main(["eval", str(tmp_path / "set"), "--max-labels-per-pass", "0"]) == 2
    assert "max_labels_per_pass must be >= 1, got 0" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "set"), "--unseen-labels", "1.5"]) == 2
    assert "unseen-labels fraction must be in [0, 1), got 1.5" in capsys.readouterr().err
