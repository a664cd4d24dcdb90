"""Issue 11, reliability and security: one test (or table) per finding, each failing before its fix.

Crashes (concurrency, damaged or hostile index folders), lost data (overwrite rules, interrupted saves, a
generate output over its input, misread CSV), untrusted names in artefacts, dependency floors, and the
smaller input-error messages. Markers in user text (items 7 and 8) are tested in test_inputs.py.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import rac.embedding
import rac.index as rac_index
import rac.model
from crash_worker import BATCH, DIMENSION, added_examples
from rac.cli import main
from rac.corpus import CorpusError, read_corpus
from rac.embedding import Embedder
from rac.formatting import RACExample
from rac.index import DATA_FILES, ExampleIndex, build_index
from rac.storage import file_sha256

REPO = Path(__file__).resolve().parents[1]
TEXTS = {
    "get weather": ["will it rain tomorrow in oslo", "weather forecast for paris this weekend", "is it going to snow tonight",
                    "how hot will it be in madrid on friday"],
    "play music": ["play some jazz by miles davis", "put on my running playlist", "play the new taylor swift album",
                   "shuffle my chill songs"],
    "book restaurant": ["book a table for two at an italian place", "reserve a restaurant for six people friday",
                        "get me a sushi table tonight at eight"],
}
EXAMPLES = [RACExample(t, (label,), id=f"{label}-{i}") for label, texts in TEXTS.items() for i, t in enumerate(texts)]
QUERIES = ["what will the weather be in berlin tomorrow", "play something relaxing", "book a restaurant for four",
           "rain in london next week", "put on some rock music", "table for two at a steakhouse"]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def _vector_index(n: int = 30, **options) -> ExampleIndex:
    examples, vectors = added_examples(0, n)
    return ExampleIndex.build(examples, vectors=vectors, **options)


def _leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# -- 1. concurrent add / search / predict ---------------------------------------------------------


def _check_result(result: dict, labels: list[str]) -> None:
    scores = [item["score"] for item in result["labels"]]
    assert sorted(item["label"] for item in result["labels"]) == sorted(labels) and set(result["predicted"]) <= set(labels)
    assert scores == sorted(scores, reverse=True) and all(0.0 <= score <= 1.0 for score in scores)
    assert all(e["text"] in {x.text for x in EXAMPLES} and e["similarity"] >= 0.5 for e in result["examples"])


def test_concurrent_add_search_and_predict_are_safe_and_replayable(embedder: Embedder) -> None:
    """One thread adds 60 batches of 40 while 4 search and predict; no crash (the issue: a segfault in 6 of 6
    runs), every answer valid, and the model's own scores replay exactly (the noise added is never retrieved)."""
    from rac.classifier import RACClassifier

    index = ExampleIndex.build(EXAMPLES, embedder)
    fused = RACClassifier.from_pretrained(index=index)  # its evidence reads the whole, growing, index
    plain = RACClassifier(fused.model, index)  # scores from the model and the retrieved examples only
    labels = list(TEXTS)
    query_vectors = embedder.encode(QUERIES)
    rng = np.random.default_rng(0)
    batches = [rng.normal(size=(40, index.dimension)).astype(np.float32) for _ in range(60)]  # far from every query
    done, errors, calls = threading.Event(), [], []

    def adder() -> None:
        try:
            for b, vectors in enumerate(batches):
                index.add([RACExample(f"noise {b}-{i}", ("noise",)) for i in range(len(vectors))], vectors)
                time.sleep(0.01)
        except Exception as err:  # noqa: BLE001 - any exception fails the test below
            errors.append(err)
        finally:
            done.set()

    def reader(seed: int) -> None:
        local = random.Random(seed)
        try:
            while not done.is_set():
                k = local.randint(1, 8)
                ids, sims = index.search(query_vectors, k)
                size = len(index)  # examples are only added, so every id found must be below it
                for row_ids, row_sims in zip(ids, sims):
                    assert len(set(row_ids)) == k and (row_ids >= 0).all() and (row_ids < size).all()
                    assert np.all(np.diff(row_sims) <= 1e-6) and np.all(np.abs(row_sims) <= 1 + 1e-5)
                    assert all(index.example(i).text for i in row_ids)
                texts = local.sample(QUERIES, 2)
                classifier = plain if seed % 2 else fused
                results = [r.to_dict() for r in classifier.predict(texts, labels)]
                for result in results:
                    _check_result(result, labels)
                if classifier is plain:
                    calls.append((texts, results))
        except Exception as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=adder)] + [threading.Thread(target=reader, args=(s,)) for s in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads) and len(index) == len(EXAMPLES) + 2400 and calls
    decisions = ("text", "predicted", "labels", "examples")
    for texts, results in calls:
        again = [r.to_dict() for r in plain.predict(texts, labels)]
        assert [{key: r[key] for key in decisions} for r in again] == [{key: r[key] for key in decisions} for r in results]


def test_read_write_lock_lets_a_waiting_writer_through() -> None:
    index = _vector_index()
    with index.reading():
        assert len(index.examples) == 30  # a reader may read again
        with pytest.raises(RuntimeError, match="while this thread is reading"):
            index.add(*added_examples(30, 1))
    added = threading.Thread(target=index.add, args=added_examples(30, 1))
    with index.reading():
        added.start()
        time.sleep(0.05)
        assert len(index) == 30  # the writer waits for the reader...
    added.join(5)
    assert len(index) == 31  # ...and gets in after it


# -- remove ---------------------------------------------------------------------------------------


def test_remove_tombstones_persist_and_never_come_back(tmp_path: Path) -> None:
    index = _vector_index()
    vectors = index.vectors(range(30))
    assert index.remove([3, 7]) == 2
    assert len(index) == 28 and [e.id for e in index.examples] == [i for i in range(30) if i not in (3, 7)]
    ids, _ = index.search(vectors, 30)
    assert not np.isin(ids, [3, 7]).any() and (ids[:, :28] >= 0).all() and (ids[:, 28:] == -1).all()
    with pytest.raises(KeyError, match="HNSW label 3"):
        index.example(3)
    assert index.ids_for_text("row 3") == []
    with pytest.raises(KeyError, match="no example with id 3"):
        index.remove([5, 3])  # all or none
    assert len(index) == 28 and index.example(5).id == 5
    with pytest.raises(TypeError, match="list of example ids"):
        index.remove("row 5")
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert (manifest["count"], manifest["removed"]) == (30, 2)
    assert "row 3" not in pq.read_table(tmp_path / "idx" / "examples.parquet").column("text").to_pylist()
    loaded = ExampleIndex.load(tmp_path / "idx")
    assert len(loaded) == 28 and loaded.examples == index.examples
    np.testing.assert_array_equal(loaded.search(vectors, 5)[0], index.search(vectors, 5)[0])
    loaded.add(*added_examples(30, 2))
    assert loaded.remove([30]) == 1 and len(loaded) == 29
    loaded.save(tmp_path / "idx")
    assert len(ExampleIndex.load(tmp_path / "idx")) == 29


def test_ids_compare_as_json_and_must_be_json() -> None:
    index = ExampleIndex.build([RACExample("a", ("x",), id={"b": 1, "a": [1, 2]}), RACExample("b", ("x",), id="1")],
                               vectors=np.eye(2, 4))
    with pytest.raises(KeyError):
        index.remove([1])  # the string "1" is not the number 1
    assert index.remove([{"a": [1, 2], "b": 1}]) == 1
    for bad in (object(), float("nan"), {1, 2}):
        with pytest.raises(ValueError, match="example 0: id .* not JSON-serialisable"):
            index.add([RACExample("c", ("x",), id=bad)], np.ones((1, 4)))
    with pytest.raises(ValueError, match="metadata"):
        index.add([RACExample("c", ("x",), metadata={"when": object()})], np.ones((1, 4)))
    assert len(index) == 1


def test_search_falls_back_to_exact_when_the_graph_comes_up_short() -> None:
    rng = np.random.default_rng(29)
    vectors = rng.normal(size=(300, 8)).astype(np.float32)
    index = ExampleIndex.build([RACExample(f"t{i}", ("x",), id=i) for i in range(300)], vectors=vectors, M=2,
                               ef_construction=2, ef_search=10)
    index.remove([int(i) for i in rng.choice(300, size=250, replace=False)])  # hnswlib alone raises here
    ids, sims = index.search(vectors[:50], 50)
    live = np.array([e.id for e in index.examples])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    exact = unit[:50] @ unit[live].T
    assert (np.sort(ids, axis=1) == np.sort(live)).all()
    np.testing.assert_allclose(sims, -np.sort(-exact, axis=1), atol=1e-5)


def test_pickle_round_trip_keeps_a_working_lock() -> None:
    import pickle

    index = _vector_index()
    copy = pickle.loads(pickle.dumps(index))
    copy.add(*added_examples(30, 1))
    assert len(copy) == 31 and len(index) == 30


# -- 2. damaged or hostile index folders ----------------------------------------------------------


def _rewrite(folder: Path, edit: Callable[[dict], None] | None = None, *, checksums: bool = True) -> None:
    """Re-sign the folder as a consistent (possibly hostile) writer would: file digests and manifest checksum."""
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"] = {name: file_sha256(folder / name) for name in DATA_FILES}
    if edit:
        edit(manifest)
    if checksums:
        manifest["checksum"] = rac_index._manifest_checksum(manifest)
    manifest_path.write_text(json.dumps(manifest))


def _patch_hnsw(offset: Callable[[dict], int], fmt: str, value: Callable[[tuple], tuple]) -> Callable[[Path], None]:
    """Overwrite one struct field of hnsw.bin (offset computed from its header) and re-sign the folder."""

    def apply(folder: Path) -> None:
        data = bytearray((folder / "hnsw.bin").read_bytes())
        names = ("offset_level0", "max_elements", "count", "per_element", "label_offset", "offset_data")
        header = dict(zip(names, struct.unpack_from("<6Q", data)))
        at = offset(header)
        struct.pack_into(fmt, data, at, *value(struct.unpack_from(fmt, data, at)))
        (folder / "hnsw.bin").write_bytes(bytes(data))
        _rewrite(folder)

    return apply


def _edit(change: Callable[[dict], None], *, checksums: bool = True) -> Callable[[Path], None]:
    return lambda folder: _rewrite(folder, change, checksums=checksums)


def _bad_store_id(folder: Path) -> None:
    table = pq.read_table(folder / "examples.parquet")
    ids = table.column("id").to_pylist()
    pq.write_table(table.set_column(table.schema.get_field_index("id"), "id", [["{not json"] + ids[1:]]), folder / "examples.parquet")
    _rewrite(folder)


def _foreign_hnsw(folder: Path) -> None:
    _vector_index(12).save(folder.parent / "other")
    (folder / "hnsw.bin").write_bytes((folder.parent / "other" / "hnsw.bin").read_bytes())
    _rewrite(folder)


LEVEL0 = rac_index.HNSW_HEADER.size
# (case id, how to damage a saved 30 x 16 index, fragments of the error)
HOSTILE_CASES = [
    ("files {} and a damaged hnsw", lambda d: (_patch_hnsw(lambda h: LEVEL0 + 4, "<I", lambda v: (10**9,))(d),
                                               _rewrite(d, lambda m: m.update(files={}))), ["files must map exactly"]),
    ("files []", _edit(lambda m: m.update(files=[])), ["files must map exactly"]),
    ("one file unlisted", _edit(lambda m: m["files"].pop("hnsw.bin")), ["files must map exactly"]),
    ("manifest edited, checksum not", _edit(lambda m: m["embedder"].update(dimension=17), checksums=False),
     ["manifest checksum does not match"]),
    ("checksum removed", _edit(lambda m: m.pop("checksum"), checksums=False), ["'checksum'"]),
    ("dimension re-signed", _edit(lambda m: m["embedder"].update(dimension=17)), ["hnsw.bin", "dimension 16 in the file, 17 expected"]),
    ("count re-signed", _edit(lambda m: m.update(count=29)), ["element count 30 in the file, 29 expected"]),
    ("M re-signed", _edit(lambda m: m["hnsw"].update(M=8)), ["M 16 in the file, 8 expected"]),
    ("ef_search -1", _edit(lambda m: m["hnsw"].update(ef_search=-1)), ["ef_search must be an integer >= 1, got -1"]),
    ("ef_search string", _edit(lambda m: m["hnsw"].update(ef_search="64")), ["ef_search must be an integer >= 1"]),
    ("M 1", _edit(lambda m: m["hnsw"].update(M=1)), ["M must be an integer in [2, 32767]"]),
    ("space l2", _edit(lambda m: m["hnsw"].update(space="l2")), ["hnsw.space must be 'cosine'"]),
    ("dimension bool", _edit(lambda m: m["embedder"].update(dimension=True)), ["embedder.dimension must be an integer"]),
    ("another index's hnsw", _foreign_hnsw, ["element count 12 in the file, 30 expected"]),
    ("link out of the graph", _patch_hnsw(lambda h: LEVEL0 + 4, "<I", lambda v: (10**6,)), ["level-0 link"]),
    ("labels shuffled", _patch_hnsw(lambda h: LEVEL0 + h["label_offset"], "<Q", lambda v: (1,)), ["labels are not 0..count-1"]),
    ("vector not unit", _patch_hnsw(lambda h: LEVEL0 + h["offset_data"], "<f", lambda v: (v[0] + 3,)), ["unit-length"]),
    ("entry point outside", _patch_hnsw(lambda h: 52, "<I", lambda v: (999,)), ["entry point 999"]),
    ("removed count lies", _edit(lambda m: m.update(removed=1)), ["0 removed examples", "manifest says 1"]),
    ("non-JSON id in the store", _bad_store_id, ["examples.parquet", "example 0", "column 'id'", "not JSON"]),
]


@pytest.mark.parametrize("damage, fragments", [c[1:] for c in HOSTILE_CASES], ids=[c[0] for c in HOSTILE_CASES])
def test_hostile_index_folder_is_a_clear_error(damage: Callable, fragments: list[str], tmp_path: Path) -> None:
    folder = _vector_index().save(tmp_path / "idx")
    damage(folder)
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        ExampleIndex.load(folder)
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_format_1_folders_still_load(tmp_path: Path) -> None:
    index = _vector_index()
    folder = index.save(tmp_path / "idx")
    table = pq.read_table(folder / "examples.parquet")
    pq.write_table(table.drop_columns(["deleted"]), folder / "examples.parquet")
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["removed"]
    manifest.update(format_version=1, files={name: file_sha256(folder / name) for name in DATA_FILES})
    manifest["checksum"] = rac_index._manifest_checksum(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    loaded = ExampleIndex.load(folder)
    assert loaded.examples == index.examples
    queries = index.vectors(range(5))
    np.testing.assert_array_equal(loaded.search(queries, 3)[0], index.search(queries, 3)[0])


def test_bad_hnsw_parameters_are_refused_before_building() -> None:
    for options, message in (({"M": 1}, "M must be"), ({"ef_construction": 0}, "ef_construction"), ({"ef_search": -1}, "ef_search")):
        with pytest.raises(ValueError, match=message):
            _vector_index(**options)
    index = _vector_index()
    with pytest.raises(ValueError, match="ef_search"):
        index.ef_search = 0
    index.ef_search = 5
    assert index.ef_search == 5 and len(index.search(index.vectors([0]), 10)[0][0]) == 10


# -- 3. saves replace only their own kind ---------------------------------------------------------


def _web_app(folder: Path) -> dict[str, str]:
    (folder / "sub").mkdir(parents=True)
    files = {"manifest.json": '{"name": "my web app", "start_url": "/"}', "notes.txt": "precious", "sub/deep.txt": "deep"}
    for name, text in files.items():
        (folder / name).write_text(text)
    return files


def _contents(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): p.read_text() for p in folder.rglob("*") if p.is_file()}


def test_index_save_refuses_foreign_folders_and_files(tmp_path: Path) -> None:
    index = _vector_index()
    files = _web_app(tmp_path / "app")
    with pytest.raises(ValueError, match="is not a rac index.*overwrite=True"):
        index.save(tmp_path / "app")
    assert _contents(tmp_path / "app") == files
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(ValueError, match="not a folder"):
        index.save(tmp_path / "plain")
    assert (tmp_path / "plain").read_text() == "a file"
    index.save(tmp_path / "idx")
    (tmp_path / "idx" / "my-notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"holds files that are not part of a rac index \(my-notes.txt\)"):
        index.save(tmp_path / "idx")  # a rebuild would delete the user's file
    assert (tmp_path / "idx" / "my-notes.txt").read_text() == "mine"
    (tmp_path / "idx" / "my-notes.txt").unlink()
    index.save(tmp_path / "idx")  # the same kind, the same files: replaced
    (tmp_path / "empty").mkdir()
    index.save(tmp_path / "empty")
    for target in ("app", "plain"):
        index.save(tmp_path / target, overwrite=True)
        assert len(ExampleIndex.load(tmp_path / target)) == 30
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_build_index_cli_refuses_before_embedding(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    files = _web_app(tmp_path / "app")
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": e.text, "labels": list(e.true_labels)}) + "\n" for e in EXAMPLES))
    monkeypatch.setattr(rac.index.Embedder, "encode", lambda *a, **k: pytest.fail("embedded before refusing"))
    assert main(["build-index", str(corpus), "--out", str(tmp_path / "app"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "not a rac index" in err and "--overwrite" in err and err.count("\n") == 1
    assert _contents(tmp_path / "app") == files
    assert main(["build-index", str(corpus), "--out", str(corpus), "--quiet", "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err and corpus.is_file()
    monkeypatch.undo()
    assert main(["build-index", str(corpus), "--out", str(tmp_path / "app"), "--quiet", "--overwrite"]) == 0
    assert len(ExampleIndex.load(tmp_path / "app")) == len(EXAMPLES)


def test_save_pretrained_replaces_only_a_checkpoint(tmp_path: Path, minilm_path: str) -> None:
    from rac.model import GLiClassModel
    from test_model import save_tiny_encoder

    model = GLiClassModel.from_encoder(save_tiny_encoder(tmp_path / "tiny", minilm_path), seed=0)
    files = _web_app(tmp_path / "app")
    with pytest.raises(ValueError, match="not a gliclass checkpoint.*overwrite=True"):
        model.save_pretrained(tmp_path / "app")
    assert _contents(tmp_path / "app") == files
    (tmp_path / "plain").write_text("a file")
    with pytest.raises(ValueError, match="not a folder"):
        model.save_pretrained(tmp_path / "plain")
    assert (tmp_path / "plain").read_text() == "a file"
    model.save_pretrained(tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "ckpt")  # its own kind: replaced
    (tmp_path / "ckpt" / "README.md").write_text("my notes")
    with pytest.raises(ValueError, match="README.md"):
        model.save_pretrained(tmp_path / "ckpt")
    model.save_pretrained(tmp_path / "app", overwrite=True)
    assert GLiClassModel.from_pretrained(tmp_path / "app").config.vocab_size == model.config.vocab_size


# -- 4. interrupted saves are recovered, leftovers cleaned ----------------------------------------


def _interrupted_swap(tmp_path: Path, pid: int, *, new_complete: bool = True) -> tuple[Path, ExampleIndex, ExampleIndex]:
    """The folder state of a save killed between its two renames: no target, the old copy parked, the new one staged."""
    old, new = _vector_index(20), _vector_index(25)
    target = old.save(tmp_path / "idx")
    new.save(tmp_path / "staged")
    target.rename(tmp_path / f".idx.old-{pid}-abcdefgh")
    (tmp_path / "staged").rename(tmp_path / f".idx.tmp-{pid}-abcdefgh")
    if not new_complete:
        (tmp_path / f".idx.tmp-{pid}-abcdefgh" / "manifest.json").unlink()
    return target, old, new


def test_load_restores_the_new_copy_of_an_interrupted_swap(tmp_path: Path) -> None:
    target, _, new = _interrupted_swap(tmp_path, _dead_pid())
    with pytest.warns(UserWarning, match="restored from .idx.tmp-"):
        loaded = ExampleIndex.load(target)
    assert loaded.examples == new.examples
    loaded.save(target)
    assert _leftovers(target) == []  # the parked old copy went with the next save


def test_load_restores_the_old_copy_when_the_new_one_is_incomplete(tmp_path: Path) -> None:
    target, old, _ = _interrupted_swap(tmp_path, _dead_pid(), new_complete=False)
    with pytest.warns(UserWarning, match="restored from .idx.old-"):
        assert ExampleIndex.load(target).examples == old.examples


def test_a_running_writer_is_left_alone(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        target, _, _ = _interrupted_swap(tmp_path, sleeper.pid)
        with pytest.raises(FileNotFoundError, match="missing while process .* replaces it; retry"):
            ExampleIndex.load(target)
        _vector_index(5).save(target)  # a save of its own leaves the live writer's folders alone
        assert len(_leftovers(target)) == 2
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_unswapped_complete_copy_is_reported_not_restored(tmp_path: Path) -> None:
    pid = _dead_pid()
    _vector_index(5).save(tmp_path / "staged")
    (tmp_path / "staged").rename(tmp_path / f".idx.tmp-{pid}-abcdefgh")
    with pytest.raises(FileNotFoundError, match=r"complete copy in .*\.idx\.tmp-.*rename it to idx"):
        ExampleIndex.load(tmp_path / "idx")


def test_stale_leftovers_are_cleaned_by_the_next_save(tmp_path: Path) -> None:
    target = _vector_index(5).save(tmp_path / "idx")
    pid = _dead_pid()
    for name in (f".idx.tmp-{pid}-x1y2z3w4", f".idx.old-{pid}-x1y2z3w4", f".idx.old-{'ab' * 16}", ".idx.tmp-k2j3h4g5"):
        (tmp_path / name).mkdir()  # this rac's names, and the pid-less ones of earlier versions
        (tmp_path / name / "hnsw.bin").write_bytes(b"x")
    (tmp_path / ".idx.notes").write_text("not a leftover")
    _vector_index(6).save(target)
    assert _leftovers(target) == [".idx.notes"]


def test_a_swap_that_fails_halfway_puts_the_old_folder_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = _vector_index(5).save(tmp_path / "idx")
    calls = []

    def failing_replace(source: str | Path, destination: str | Path) -> None:
        calls.append(Path(source).name)
        if len(calls) == 2:  # the staging folder cannot take the parked old folder's place
            raise OSError("device gone")
        os.rename(source, destination)

    monkeypatch.setattr("rac.storage.os.replace", failing_replace)
    with pytest.raises(OSError, match="device gone"):
        _vector_index(6).save(target)
    monkeypatch.undo()
    assert len(ExampleIndex.load(target)) == 5 and _leftovers(target) == []


@pytest.fixture(scope="module")
def crash_worker():
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(Path(__file__).parent)}
    process = subprocess.Popen([sys.executable, str(Path(__file__).parent / "crash_worker.py")], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, env=env)
    assert process.stdout.readline().strip() == "ready"
    yield process
    process.stdin.close()
    process.wait(30)


def _kill_during(worker: subprocess.Popen, request: dict, delay: float) -> None:
    worker.stdin.write(json.dumps(request) + "\n")
    worker.stdin.flush()
    pid = int(worker.stdout.readline())
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    assert worker.stdout.readline().strip() == "done"


def _sigkill_trials(worker: subprocess.Popen, tmp_path: Path, embedder: Embedder, trials: int) -> int:
    """Run the trials; how many of them killed a save midway (left a temp or parked folder behind)."""
    rng, interrupted = random.Random(trials), 0
    # build-index alternating two corpora: the folder must always be one of them, whole
    corpora, references = [], []
    for name, rows in (("a", EXAMPLES[:6]), ("b", EXAMPLES[4:])):
        corpora.append(tmp_path / f"{name}.jsonl")
        corpora[-1].write_text("".join(json.dumps({"text": e.text, "labels": list(e.true_labels)}) + "\n" for e in rows))
        references.append(ExampleIndex.build(read_corpus(corpora[-1]), embedder))
    queries = embedder.encode(QUERIES)
    built = tmp_path / "built"
    build_index(corpora[0], built, embedder=embedder)
    for _ in range(trials):
        _kill_during(worker, {"mode": "build", "corpora": [str(c) for c in corpora[::-1]], "out": str(built)},
                     rng.uniform(0.0, 2.0))
        interrupted += bool(_leftovers(built))
        loaded = ExampleIndex.load(built, embedder)
        [reference] = [r for r in references if r.examples == loaded.examples]
        np.testing.assert_array_equal(loaded.search(queries, 3)[0], reference.search(queries, 3)[0])
        loaded.save(built)
        assert _leftovers(built) == []
    # load + add + save: the folder must always hold a whole prefix of the stream of added rows
    grown = tmp_path / "grown"
    for _ in range(trials):
        examples, vectors = added_examples(0, 20)
        ExampleIndex.build(examples, vectors=vectors).save(grown)
        _kill_during(worker, {"mode": "add", "out": str(grown)}, rng.uniform(0.0, 1.0))
        interrupted += bool(_leftovers(grown))
        loaded = ExampleIndex.load(grown)
        expected, vectors = added_examples(0, len(loaded))
        assert len(loaded) % BATCH == 0 and loaded.examples == expected
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        probes = np.random.default_rng(1).normal(size=(8, DIMENSION)).astype(np.float32)
        exact = np.argsort(-(probes @ unit.T), axis=1)[:, :3]
        np.testing.assert_array_equal(loaded.search(probes, 3)[0], exact)
        loaded.save(grown)
        assert _leftovers(grown) == []
    return interrupted


def test_sigkill_during_build_index_and_add_save(crash_worker, tmp_path: Path, embedder: Embedder) -> None:
    _sigkill_trials(crash_worker, tmp_path, embedder, trials=3)


@pytest.mark.slow
def test_sigkill_during_build_index_and_add_save_many_times(crash_worker, tmp_path: Path, embedder: Embedder) -> None:
    interrupted = _sigkill_trials(crash_worker, tmp_path, embedder, trials=20)
    print(f"{interrupted} of 40 kills landed inside a save")
    assert interrupted  # the trials reach the states that matter, not only the time between saves


# -- 5. and 6. outputs over inputs, misread CSV ---------------------------------------------------


def test_generate_refuses_to_write_over_its_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": e.text, "labels": list(e.true_labels)}) + "\n" for e in EXAMPLES))
    before = corpus.read_bytes()
    for extra in (["--out", str(corpus)], ["--out", str(tmp_path / "t.jsonl"), "--summary", str(corpus)]):
        assert main(["generate", str(corpus), *extra, "--quiet"]) == 2
        assert "is the input" in capsys.readouterr().err
    assert corpus.read_bytes() == before


@pytest.mark.parametrize(
    "content, fragments",
    [("text,labels\nbook a table, for two,book restaurant\n", ["row 1 (line 2)", "3 fields but the header has 2", "quote"]),
     ("text,labels\nok,a\nhello,a,b,c\n", ["row 2 (line 3)", "4 fields"]),
     ("text,labels,labels\nhi,a,b\n", ["line 1", "duplicate column names ['labels']"]),
     ("", ["no header row"])],
)
def test_csv_rows_longer_than_the_header_are_errors(content: str, fragments: list[str], tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(content)
    with pytest.raises(CorpusError) as caught:
        read_corpus(tmp_path / "c.csv")
    for fragment in ["c.csv", *fragments]:
        assert fragment in str(caught.value)


def test_csv_quoted_commas_newlines_and_bom_read_right(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_bytes('\ufefftext,labels\n"book a table, for two",book restaurant\n"two\nlines",x\nshort\n'.encode())
    with pytest.raises(CorpusError, match="row 3.*missing labels"):
        read_corpus(tmp_path / "c.csv")  # a short row's missing cells are missing, as before
    (tmp_path / "c.csv").write_bytes('\ufefftext,labels\n"book a table, for two",book restaurant\n"two\nlines",x\n'.encode())
    assert [(r.text, r.true_labels) for r in read_corpus(tmp_path / "c.csv")] == [
        ("book a table, for two", ("book restaurant",)), ("two\nlines", ("x",))]


# -- 9. names read from files load local files only -----------------------------------------------


def test_manifest_embedder_names_load_local_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       embedder: Embedder) -> None:
    folder = _vector_index().save(tmp_path / "idx")
    _rewrite(folder, lambda m: m["embedder"].update(name="some-org/some-model"))
    seen = []

    def fake_load(location: str, device: str | None, local_files_only: bool) -> None:
        seen.append(local_files_only)
        raise ValueError(f"cannot load embedder {location!r}")

    monkeypatch.setattr(rac.embedding, "_load", fake_load)
    with pytest.raises(ValueError, match=r"manifest.json: the index's embedder 'some-org/some-model'.*allow_download=True"):
        ExampleIndex.load(folder).embedder
    with pytest.raises(ValueError, match="cannot load embedder 'some-org/some-model'"):
        ExampleIndex.load(folder, allow_download=True).embedder
    assert seen == [True, False]
    elsewhere = tmp_path / "elsewhere-model"
    elsewhere.mkdir()
    _rewrite(folder, lambda m: m["embedder"].update(name=str(elsewhere)))
    with pytest.raises(ValueError, match="embedder folder .*elsewhere-model.*not loaded implicitly"):
        ExampleIndex.load(folder, allow_download=True).embedder
    assert seen == [True, False]  # nothing was loaded from the folder
    with pytest.raises(ValueError, match="manifest.json: index was built with embedder .*elsewhere-model"):
        ExampleIndex.load(folder, embedder)  # a mismatch with the embedder passed names the manifest


def test_delta_base_encoder_loads_local_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from safetensors import safe_open
    from safetensors.torch import save_file

    from rac.model import DEFAULT_MODEL_DIR, DELTA_NAME, load_delta_model

    shutil.copytree(DEFAULT_MODEL_DIR, tmp_path / "model")
    with safe_open(DEFAULT_MODEL_DIR / DELTA_NAME, framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = {**handle.metadata(), "base_encoder": "some-org/some-encoder", "base_sha256": ""}
    save_file(tensors, tmp_path / "model" / DELTA_NAME, metadata=metadata)
    seen = []

    def fake_from_pretrained(name: str, **kwargs) -> None:
        seen.append(kwargs.get("local_files_only"))
        raise OSError(f"{name} not found")

    monkeypatch.setattr(rac.model.AutoModel, "from_pretrained", fake_from_pretrained)
    with pytest.raises(ValueError, match="base encoder 'some-org/some-encoder' is not in the local files.*allow_download"):
        load_delta_model(tmp_path / "model")
    with pytest.raises(OSError):
        load_delta_model(tmp_path / "model", allow_download=True)
    assert seen == [True, False]


# -- 10. and 11. dependency bounds ----------------------------------------------------------------


def _requirements() -> dict[str, str]:
    """pyproject.toml's runtime dependencies, name -> specifier (read by hand: tomllib needs Python 3.11)."""
    block = re.search(r"^dependencies = \[(.*?)^\]", (REPO / "pyproject.toml").read_text(), re.S | re.M).group(1)
    return {re.split(r"[<>=!~]", r, maxsplit=1)[0]: r for r in re.findall(r'"([^"]+)"', block)}


def test_dependency_floors_exclude_known_vulnerable_versions_and_majors_are_capped() -> None:
    requirements = _requirements()
    floor = {name: re.search(r">=([\d.]+)", spec).group(1) for name, spec in requirements.items()}
    version = lambda text: tuple(int(part) for part in text.split("."))  # noqa: E731
    assert version(floor["pyarrow"]) >= (14, 0, 1)  # CVE-2023-47248: code execution reading Parquet
    assert version(floor["torch"]) >= (2, 10)  # CVE-2025-32434, CVE-2026-24747: torch.load(weights_only=True) runs code
    for name in ("transformers", "sentence-transformers", "peft"):
        assert re.search(r",<\d+$", requirements[name]), f"{name} needs an upper bound on its major version"


def test_lower_bound_constraints_pin_exactly_the_declared_floors() -> None:
    pins = dict(line.split("==") for line in (REPO / ".ci" / "constraints-lower.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    assert pins.pop("torch") == "2.13.0"  # the one CPU wheel CI can install; the floor itself is a security floor
    for name, spec in _requirements().items():
        if name != "torch":
            assert pins.get(name) == re.search(r">=([\d.]+)", spec).group(1), name


# -- smaller ones ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, fragments",
    [(b'{"text": "ok", "labels": ["a"]}\n{"text": "caf\xe9", "labels": ["a"]}\n', ["line 2", "not UTF-8", "e9"]),
     (b'[\n  {"text": "ok", "labels": ["a"]}\n]\n', ["line 1", "JSON array", "one object per line"])],
)
def test_jsonl_decode_and_layout_errors_name_the_line(content: bytes, fragments: list[str], tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_bytes(content)
    with pytest.raises(CorpusError) as caught:
        read_corpus(tmp_path / "c.jsonl")
    for fragment in ["c.jsonl", *fragments]:
        assert fragment in str(caught.value)


def test_jsonl_bom_is_accepted_and_a_folder_is_not_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_bytes('\ufeff{"text": "ok", "labels": ["a"]}\n'.encode())
    assert read_corpus(tmp_path / "c.jsonl")[0].text == "ok"
    (tmp_path / "x.jsonl").mkdir()
    with pytest.raises(CorpusError, match="x.jsonl: is a folder, not a corpus file"):
        read_corpus(tmp_path / "x.jsonl")


@pytest.mark.parametrize(
    "name, content, fragments",
    [("in.txt", b"fine\nbad \xff byte\n", ["in.txt", "line 2", "not UTF-8"]),
     ("in.jsonl", b'{"text": "ok"}\n{"text": 42}\n', ["in.jsonl", "line 2", "'text' must be a string", "42"]),
     ("in.jsonl", b'{"text": "ok"}\n{"text": \n', ["in.jsonl", "line 2", "malformed JSON"])],
)
def test_predict_input_errors_name_file_and_line(name: str, content: bytes, fragments: list[str], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / name).write_bytes(content)
    monkeypatch.setattr("rac.classifier.RACClassifier.from_pretrained", lambda *a, **k: pytest.fail("read input first"))
    assert main(["predict", "--input", str(tmp_path / name), "--labels", "a,b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    for fragment in fragments:
        assert fragment in err


def test_rac_truncating_a_long_text_does_not_warn(capfd: pytest.CaptureFixture) -> None:
    from rac.formatting import truncate_to_tokens
    from rac.model import DEFAULT_MODEL_DIR, load_tokenizer, read_config

    tokenizer = load_tokenizer(DEFAULT_MODEL_DIR, read_config(DEFAULT_MODEL_DIR))
    capfd.readouterr()
    assert truncate_to_tokens("word " * 3000, 64, tokenizer).count("word") == 64
    assert "indexing errors" not in capfd.readouterr().err
