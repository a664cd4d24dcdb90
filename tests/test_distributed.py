"""``rac predict --output`` in-process and on a local Ray instance (2 CPUs): the same rows, bad rows reported."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rac.cli import main
from rac.index import build_index

ray = pytest.importorskip("ray")

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl"
LABELS = "book restaurant,get weather,play music,add to playlist"
TEXTS = ["book a table for two in paris tonight", "will it rain in oslo tomorrow", "", "put on some jazz",
         None, "add this song to my workout playlist", "is it sunny in rome", "reserve a sushi place for 8 pm",
         "   ", "play the latest album by adele"]


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray") / "index"
    build_index(SAMPLE, path, show_progress=False)
    return path


@pytest.fixture(scope="module")
def table_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rows") / "in.parquet"
    pq.write_table(pa.table({"row_id": list(range(100, 100 + len(TEXTS))), "text": TEXTS,
                             "weight": [0.5 * i for i in range(len(TEXTS))]}), path)
    return path


def predict(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str]:
    code = main(["predict", "--labels", LABELS, "--batch-size", "3", "--dtype", "float32", *argv])
    return code, capsys.readouterr().err


def test_ray_writes_the_in_process_rows(capsys, local_ray, index_dir: Path, table_file: Path, tmp_path: Path) -> None:
    args = ("--input", str(table_file), "--index", str(index_dir))
    code, err = predict(capsys, *args, "--output", str(tmp_path / "local.parquet"))
    assert code == 1  # some rows failed; every row is still written
    assert "row 3: empty text" in err and "row 5: missing text" in err and "row 9: empty text" in err
    local = pq.read_table(tmp_path / "local.parquet")

    code, err = predict(capsys, *args, "--output", str(tmp_path / "ray.parquet"), "--ray", "--num-workers", "2")
    assert code == 1 and "row 3: empty text" in err
    on_ray = pq.read_table(tmp_path / "ray.parquet")

    assert on_ray.column_names == local.column_names == ["row_id", "text", "weight", "predicted", "scores",
                                                         "example_ids", "error"]
    assert on_ray.schema.equals(local.schema)
    assert on_ray.drop(["scores"]).to_pylist() == local.drop(["scores"]).to_pylist()
    for mine, theirs in zip(on_ray.column("scores").to_pylist(), local.column("scores").to_pylist()):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            mine, theirs = json.loads(mine), json.loads(theirs)
            assert list(mine) == list(theirs) and max(abs(mine[k] - theirs[k]) for k in mine) < 1e-5

    rows = local.to_pylist()
    assert [r["error"] is None for r in rows] == [bool(t and t.strip()) for t in TEXTS]
    assert rows[0]["predicted"] == ["book restaurant"] and rows[1]["predicted"] == ["get weather"]
    assert all(r["example_ids"] == [None] * len(r["example_ids"]) for r in rows if r["error"] is None)  # no --id-col
    assert any(r["example_ids"] for r in rows if r["error"] is None)


def test_jsonl_output_from_csv_input(capsys, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text("id,body\n007,will it snow in oslo\n008,\n", encoding="utf-8")
    code, err = predict(capsys, "--input", str(source), "--text-col", "body", "--output", str(tmp_path / "out.jsonl"))
    assert code == 1 and "row 2: missing text" in err
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["007", "008"]  # CSV cells stay strings, as build-index reads them
    assert rows[0]["predicted"] == ["get weather"] and rows[1]["predicted"] is None


def test_predict_dataset_refuses_bad_columns(local_ray) -> None:
    from rac.distributed import predict_dataset

    with pytest.raises(KeyError, match="no text column 'body'"):
        predict_dataset(ray.data.from_items([{"text": "x"}]), ["a"], text_column="body")
    with pytest.raises(ValueError, match=r"output column\(s\) \['scores'\]"):
        predict_dataset(ray.data.from_items([{"text": "x", "scores": 1}]), ["a"])
