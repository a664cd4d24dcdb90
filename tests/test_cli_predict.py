"""``rac predict``: text sources, label sources, options and errors, against the Python API on a real model."""

from __future__ import annotations

import io
import json

import pytest

from rac.classifier import RACClassifier
from rac.cli import main
from rac.formatting import RACExample
from rac.model import GLiClassModel

TEXTS = ["The battery dies by noon, awful phone.", "Our flight was delayed again.", "Who wrote Hamlet?"]
LABELS = ["negative", "travel", "question"]


@pytest.fixture(scope="module")
def checkpoint(minilm_path: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(GLiClassModel.from_encoder(minilm_path, seed=0).save_pretrained(tmp_path_factory.mktemp("cli") / "model"))


@pytest.fixture(scope="module")
def expected(checkpoint: str) -> list[dict[str, float]]:
    return [r.scores for r in RACClassifier.from_pretrained(checkpoint).predict(TEXTS, LABELS)]


def run(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, list[dict], str]:
    code = main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def scores_of(rows: list[dict]) -> list[dict[str, float]]:
    return [{item["label"]: item["score"] for item in row["labels"]} for row in rows]


def assert_matches(rows: list[dict], expected: list[dict[str, float]]) -> None:
    assert [row["text"] for row in rows] == TEXTS
    for got, want in zip(scores_of(rows), expected):
        assert got.keys() == want.keys()
        assert max(abs(got[k] - want[k]) for k in want) < 1e-5


def test_texts_as_arguments(capsys, checkpoint, expected) -> None:
    code, rows, _ = run(capsys, *TEXTS, "--model", checkpoint, "--labels", " negative, travel,question")
    assert code == 0
    assert_matches(rows, expected)
    for row in rows:
        assert row["predicted"] == [i["label"] for i in row["labels"] if i["score"] >= 0.5]
        assert row["examples"] == []


def test_texts_from_plain_file_jsonl_and_stdin(capsys, checkpoint, expected, tmp_path, monkeypatch) -> None:
    plain = tmp_path / "texts.txt"
    plain.write_text("\n".join(TEXTS) + "\n\n", encoding="utf-8")
    assert_matches(run(capsys, "-i", str(plain), "--model", checkpoint, "--labels", ",".join(LABELS))[1], expected)

    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text("".join(json.dumps({"body": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)), encoding="utf-8")
    args = ("--model", checkpoint, "--labels", ",".join(LABELS), "--text-field", "body")
    assert_matches(run(capsys, "-i", str(jsonl), *args)[1], expected)

    monkeypatch.setattr("sys.stdin", io.StringIO(jsonl.read_text(encoding="utf-8")))
    assert_matches(run(capsys, "--jsonl", *args)[1], expected)
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(TEXTS)))
    assert_matches(run(capsys, "--model", checkpoint, "--labels", ",".join(LABELS))[1], expected)


def test_labels_file_threshold_and_single_label(capsys, checkpoint, expected, tmp_path) -> None:
    labels = tmp_path / "labels.txt"
    labels.write_text("negative\n\ntravel\nquestion\n", encoding="utf-8")
    code, rows, _ = run(capsys, *TEXTS, "--model", checkpoint, "--labels-file", str(labels), "--threshold", "0")
    assert code == 0
    assert_matches(rows, expected)
    assert all(len(row["predicted"]) == 3 for row in rows)

    code, rows, _ = run(capsys, *TEXTS, "--model", checkpoint, "--labels", ",".join(LABELS), "--single-label")
    assert all(len(row["predicted"]) == 1 and row["predicted"][0] == row["labels"][0]["label"] for row in rows)
    assert all(abs(sum(scores_of([row])[0].values()) - 1) < 1e-5 for row in rows)


def test_index_retrieval_and_labels_from_index(capsys, checkpoint, tmp_path) -> None:
    from rac.index import ExampleIndex

    corpus = [
        RACExample("The phone battery is terrible.", ("negative",)),
        RACExample("The train was two hours late.", ("travel", "negative")),
        RACExample("Who painted the Mona Lisa?", ("question",)),
    ]
    ExampleIndex.build(corpus).save(tmp_path / "index")
    common = ("--model", checkpoint, "--index", str(tmp_path / "index"), "--min-similarity", "0.2")
    code, rows, _ = run(capsys, *TEXTS, *common, "--labels-from-index", "--k", "1")
    assert code == 0
    assert all(sorted(scores_of([row])[0]) == sorted(LABELS) for row in rows)
    assert all(len(row["examples"]) == 1 and row["examples"][0]["similarity"] >= 0.2 for row in rows)
    assert rows[2]["examples"][0]["text"] == "Who painted the Mona Lisa?"
    code, rows, _ = run(capsys, *TEXTS, *common, "--labels-from-index", "--k", "0")
    assert all(row["examples"] == [] for row in rows)
    # --no-fusion: the model's own scores, as the Python API gives them with fusion=None
    alone = RACClassifier.from_pretrained(checkpoint, tmp_path / "index", fusion=None).predict(
        TEXTS, LABELS, k=1, min_similarity=0.2)
    code, rows, _ = run(capsys, *TEXTS, *common, "--labels", ",".join(LABELS), "--k", "1", "--no-fusion")
    assert scores_of(rows) == [r.scores for r in alone]
    assert all(set(row["evidence"]) == set(LABELS) and "contributions" not in row for row in rows)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["a text", "--labels", "x,,y"], "empty"),
        (["a text", "--labels", "x", "--threshold", "2"], "threshold"),
        (["a text", "--labels", "x", "--knn-k", "0"], "knn_k must be an integer >= 1"),
        (["a text", "--labels-from-index"], "needs --index"),
        (["a text", "--labels-file", "/nonexistent/labels.txt"], "labels.txt"),
        (["-i", "/nonexistent/texts.txt", "--labels", "x"], "texts.txt"),
        (["a text", "-i", "x.txt", "--labels", "x"], "not both"),
    ],
)
def test_errors_exit_2_with_a_message(capsys, checkpoint, argv, message) -> None:
    code = main(["predict", *argv, "--model", checkpoint])
    assert code == 2
    assert message in capsys.readouterr().err


def test_missing_text_field_and_missing_model(capsys, checkpoint, tmp_path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"other": "x"}\n', encoding="utf-8")
    assert main(["predict", "-i", str(bad), "--labels", "x", "--model", checkpoint]) == 2
    assert "line 1 has no 'text' field" in capsys.readouterr().err
    assert main(["predict", "text", "--labels", "x", "--model", str(tmp_path / "nope")]) == 2


def test_labels_are_required(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["predict", "some text"])
