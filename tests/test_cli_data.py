"""`rac build-index` / `rac generate` end to end, and the bad-input table: every bad input is a clear error
naming file, line/row and column, and an existing index is left byte-for-byte untouched."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from rac.cli import main
from rac.corpus import CorpusError, read_corpus
from rac.index import ExampleIndex
from rac.retrieval import Retriever

REPO = Path(__file__).resolve().parents[1]
CLI_TO_KWARG = {"--text-col": "text_col", "--label-sep": "label_sep", "--all-labels-col": "all_labels_col"}
GOOD = '{"text": "play some jazz", "labels": ["music"]}\n{"text": "rain in oslo tomorrow?", "labels": ["weather"]}\n'


def _write(name: str, content: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_text(content, encoding="utf-8")
        return tmp / name

    return make


def _parquet(frame: dict) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        pd.DataFrame(frame).to_parquet(tmp / "c.parquet")
        return tmp / "c.parquet"

    return make


# (case id, corpus builder, extra CLI args, fragments the message must contain; location None = whole file)
CORPUS_CASES = [
    ("missing file", lambda tmp: tmp / "nope.jsonl", [], ["nope.jsonl", "no such corpus file"]),
    ("unknown format", _write("c.txt", "hello"), [], ["c.txt", "unknown corpus format", "'.txt'"]),
    ("jsonl missing text", _write("c.jsonl", GOOD + '{"body": "x", "labels": ["a"]}\n'), [], ["c.jsonl", "line 3", "column 'text'", "missing column"]),
    ("csv missing labels col", _write("c.csv", "text,label\nhi,a\n"), [], ["c.csv", "column 'labels'", "missing column", "'label'"]),
    ("parquet missing text col", _parquet({"body": ["x"], "labels": [["a"]]}), [], ["c.parquet", "column 'text'", "missing column"]),
    ("custom text col missing", _write("c.jsonl", GOOD), ["--text-col", "utterance"], ["c.jsonl", "line 1", "column 'utterance'"]),
    ("empty text", _write("c.jsonl", GOOD + '{"text": "   ", "labels": ["a"]}\n'), [], ["line 3", "column 'text'", "empty text", "'   '"]),
    ("non-string text", _write("c.jsonl", '{"text": 42, "labels": ["a"]}\n'), [], ["line 1", "column 'text'", "must be a string", "42"]),
    ("null text", _write("c.jsonl", '{"text": null, "labels": ["a"]}\n'), [], ["line 1", "column 'text'", "missing text", "None"]),
    ("no labels jsonl", _write("c.jsonl", GOOD + '{"text": "x", "labels": []}\n'), [], ["line 3", "column 'labels'", "row has no labels", "[]"]),
    ("no labels csv", _write("c.csv", 'text,labels\nhi,a\nyo,[]\n'), [], ["c.csv", "row 2", "column 'labels'", "row has no labels"]),
    ("no labels after split", _write("c.csv", "text,labels\nhi,a\nyo,;;\n"), ["--label-sep", ";"], ["row 2", "column 'labels'", "row has no labels"]),
    ("non-string label", _write("c.jsonl", '{"text": "x", "labels": ["a", 3]}\n'), [], ["line 1", "column 'labels'", "non-empty string", "3"]),
    ("labels wrong type", _write("c.jsonl", '{"text": "x", "labels": {"a": 1}}\n'), [], ["line 1", "column 'labels'", "list or a string"]),
    ("bad json-list labels", _write("c.csv", 'text,labels\nhi,"[""a"", "\n'), [], ["row 1", "column 'labels'", "JSON list"]),
    ("malformed jsonl", _write("c.jsonl", GOOD + '{"text": "x", "labels": ["a"]\n'), [], ["c.jsonl", "line 3", "malformed JSON"]),
    ("jsonl not an object", _write("c.jsonl", GOOD + '["x", ["a"]]\n'), [], ["line 3", "JSON object"]),
    ("nan text in csv", _write("c.csv", "text,labels\nhi,a\nNaN,b\n"), [], ["c.csv", "row 2", "column 'text'", "missing text", "nan"]),
    ("empty cell labels in csv", _write("c.csv", "text,labels\nhi,\n"), [], ["c.csv", "row 1", "column 'labels'", "missing labels"]),
    ("null text in parquet", _parquet({"text": ["ok", None], "labels": [["a"], ["b"]]}), [], ["c.parquet", "row 2", "column 'text'", "missing text"]),
    ("not parquet bytes", _write("c.parquet", "definitely not parquet"), [], ["c.parquet", "cannot read as parquet"]),
    ("true label outside all_labels", _write("c.jsonl", '{"text": "x", "labels": ["a"], "all": ["b", "c"]}\n'),
     ["--all-labels-col", "all"], ["line 1", "column 'all'", "not in all_labels"]),
    ("empty corpus", _write("c.jsonl", "\n\n"), [], ["c.jsonl", "no rows"]),
]


def _corrupt(name: str, data: bytes) -> Callable[[Path], None]:
    def apply(index_dir: Path) -> None:
        (index_dir / name).write_bytes(data)

    return apply


def _manifest(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def apply(index_dir: Path) -> None:
        manifest = json.loads((index_dir / "manifest.json").read_text())
        edit(manifest)
        (index_dir / "manifest.json").write_text(json.dumps(manifest))

    return apply


# (case id, how to damage a saved index, fragments the message must contain)
INDEX_CASES = [
    ("missing manifest", lambda d: (d / "manifest.json").unlink(), ["manifest.json", "no rac index manifest"]),
    ("missing hnsw file", lambda d: (d / "hnsw.bin").unlink(), ["hnsw.bin", "index file missing"]),
    ("missing store", lambda d: (d / "examples.parquet").unlink(), ["examples.parquet", "index file missing"]),
    ("corrupt store", _corrupt("examples.parquet", b"garbage"), ["examples.parquet", "corrupt"]),
    ("truncated hnsw", lambda d: (d / "hnsw.bin").write_bytes((d / "hnsw.bin").read_bytes()[:100]), ["hnsw.bin", "corrupt"]),
    ("corrupt manifest", _corrupt("manifest.json", b"{not json"), ["manifest.json", "corrupt rac index manifest"]),
    ("newer format version", _manifest(lambda m: m.update(format_version=99)), ["manifest.json", "format version 99", "upgrade rac"]),
    ("manifest field missing", _manifest(lambda m: m.pop("hnsw")), ["manifest.json", "'hnsw'"]),
    ("not a rac manifest", _manifest(lambda m: m.update(format="other")), ["manifest.json", "not a rac index"]),
    ("missing folder", lambda d: shutil.rmtree(d), ["no such index folder"]),
]


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real index of data/sample.jsonl built through the CLI (the issue's 'done when' command)."""
    out = tmp_path_factory.mktemp("idx") / "index" / "sample"
    assert main(["build-index", str(REPO / "data" / "sample.jsonl"), "--out", str(out), "--quiet"]) == 0
    return out


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_build_index_sample(saved_index: Path) -> None:
    index = ExampleIndex.load(saved_index)
    assert len(index) == 280 and len(index.label_space()) == 7
    [hits] = Retriever(index).retrieve(["what will the weather be in chicago on friday"])
    assert hits and hits[0].true_labels == ("get weather",)


def test_build_index_default_out_and_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"utt": ["play jazz", "rain tomorrow?"], "tags": ["music|fun", "weather"]}).to_csv("my corpus.csv", index=False)
    assert main(["build-index", "my corpus.csv", "--text-col", "utt", "--labels-col", "tags", "--label-sep", "|", "--quiet"]) == 0
    index = ExampleIndex.load(tmp_path / "index" / "my corpus")
    assert index.examples[0].true_labels == ("music", "fun") and index.label_space() == ["fun", "music", "weather"]


@pytest.mark.parametrize("make, extra, fragments", [c[1:] for c in CORPUS_CASES], ids=[c[0] for c in CORPUS_CASES])
def test_bad_corpus(make: Callable, extra: list[str], fragments: list[str], saved_index: Path, tmp_path: Path,
                    capsys: pytest.CaptureFixture) -> None:
    existing = tmp_path / "existing"
    shutil.copytree(saved_index, existing)
    before = _snapshot(existing)
    corpus = make(tmp_path)
    assert main(["build-index", str(corpus), "--out", str(existing), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rac build-index: error: ") and err.count("\n") == 1  # one clean line, no traceback
    for fragment in fragments:
        assert fragment in err
    assert _snapshot(existing) == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # the library raises the same, with the location as attributes for callers
    kwargs = {CLI_TO_KWARG[flag]: value for flag, value in zip(extra[::2], extra[1::2])}
    with pytest.raises((CorpusError, FileNotFoundError)):
        read_corpus(corpus, **kwargs)


@pytest.mark.parametrize("damage, fragments", [c[1:] for c in INDEX_CASES], ids=[c[0] for c in INDEX_CASES])
def test_bad_index_folder(damage: Callable, fragments: list[str], saved_index: Path, tmp_path: Path,
                          capsys: pytest.CaptureFixture) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(saved_index, broken)
    damage(broken)
    out = tmp_path / "train.jsonl"
    assert main(["generate", str(REPO / "data" / "sample.jsonl"), "--index", str(broken), "--out", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rac generate: error: ") and str(broken) in err
    for fragment in fragments:
        assert fragment in err
    assert not out.exists()
    with pytest.raises((ValueError, FileNotFoundError)):
        ExampleIndex.load(broken)


def test_generate_cli_deterministic(saved_index: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = str(REPO / "data" / "sample.jsonl")
    args = ["generate", corpus, "-n", "60", "--seed", "5", "--quiet", "--num-negatives", "2"]
    assert main([*args, "--out", str(tmp_path / "a.jsonl"), "--index", str(saved_index)]) == 0
    assert main([*args, "--out", str(tmp_path / "b.jsonl")]) == 0  # indexing on the fly gives the same result
    a = (tmp_path / "a.jsonl").read_text()
    assert a == (tmp_path / "b.jsonl").read_text()
    items = [json.loads(line) for line in a.splitlines()]
    assert len(items) == 280 and all(len(i["all_labels"]) == 3 for i in items)
    summary = json.loads((tmp_path / "a.summary.json").read_text())
    assert summary["selected"] == 60 and summary["augmented"] == sum("<<EXAMPLE>>" in i["text"] for i in items)
    assert "60" in capsys.readouterr().out


def test_help_explains_options(capsys: pytest.CaptureFixture) -> None:
    for command in ("build-index", "generate"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        for option in ("--text-col", "--labels-col", "--label-sep", "--embedder", "--out"):
            assert option in text
    assert "--noise-rate" in text and "--seed" in text
