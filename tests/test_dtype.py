"""Reduced precision (``rac.precision``): how ``auto`` chooses, that forced float32 is today's numbers
bit for bit, that bf16 stays close, and that the choice is visible (repr, manifest, CLI errors)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rac import precision
from rac.classifier import RACClassifier
from rac.cli import main
from rac.embedding import Embedder
from rac.formatting import RACExample, build_model_input
from rac.index import MANIFEST, ExampleIndex, _manifest_checksum
from rac.model import GLiClassModel
from rac.precision import cpu_has_native_bf16  # the real detection (conftest patches the module's)

TEXTS = ["The striker scored twice before half time.", "Markets fell after the central bank raised rates again."]
LABELS = ["sports", "finance", "politics", "weather"]


@pytest.fixture(scope="module")
def model(minilm_path: str) -> GLiClassModel:
    return GLiClassModel.from_encoder(minilm_path, seed=0).eval()


# ------------------------------------------------------------------------------------------- selection
@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cpu_follows_native_bf16(monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    assert precision.resolve_dtype("auto", "cpu") == expected
    assert precision.resolve_dtype(None, "cpu") == expected


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, torch.float32)])
def test_auto_on_cuda_follows_compute_capability(monkeypatch: pytest.MonkeyPatch, native: bool, expected: torch.dtype) -> None:
    monkeypatch.setattr(precision, "cuda_has_native_bf16", lambda device: native)
    assert precision.resolve_dtype("auto", "cuda") == expected


def test_cpu_detection_reads_torch_capabilities(monkeypatch: pytest.MonkeyPatch) -> None:
    for flags, expected in (({"avx512_bf16": True}, True), ({"amx_bf16": True}, True), ({"avx512_f": True}, False)):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda flags=flags: flags, raising=False)
        cpu_has_native_bf16.cache_clear()
        assert cpu_has_native_bf16() is expected
    cpu_has_native_bf16.cache_clear()


def test_explicit_choices_and_errors() -> None:
    assert precision.resolve_dtype("float32", "cpu") == torch.float32
    assert precision.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    assert precision.resolve_dtype(torch.float32, "cpu") == torch.float32
    with pytest.raises(ValueError, match="float16 needs a CUDA device"):
        precision.resolve_dtype("float16", "cpu")
    with pytest.raises(ValueError, match="dtype must be one of .*'fp8'"):
        precision.resolve_dtype("fp8", "cpu")


# ------------------------------------------------------------------------------------------- classifier
def test_forced_float32_is_the_plain_forward_exactly(model: GLiClassModel) -> None:
    """One text per call, no examples, no fusion: predict's score is the sigmoid of the model's own logit."""
    clf = RACClassifier(model, dtype="float32")
    assert clf.dtype == torch.float32 and clf.dtype_name == "float32"
    for text in TEXTS:
        encoded = model.tokenizer(build_model_input(text, LABELS), return_tensors="pt")
        with torch.inference_mode():
            expected = torch.sigmoid(model(encoded["input_ids"], encoded["attention_mask"]))[0].tolist()
        [result] = clf.predict(text, LABELS)
        assert [result.scores[label] for label in LABELS] == expected


def test_bfloat16_is_close_to_float32_and_actually_lower_precision(model: GLiClassModel) -> None:
    full = RACClassifier(model, dtype="float32").predict(TEXTS, LABELS)
    half = RACClassifier(model, dtype="bfloat16").predict(TEXTS, LABELS)
    diffs = [abs(a.scores[x] - b.scores[x]) for a, b in zip(full, half) for x in LABELS]
    assert 0 < max(diffs) < 0.02
    assert not any(p.requires_grad and p.dtype != torch.float32 for p in model.parameters())  # weights untouched


def test_dtype_is_visible_and_float16_on_cpu_is_refused(model: GLiClassModel) -> None:
    assert "dtype='bfloat16'" in repr(RACClassifier(model, dtype="bfloat16"))
    with pytest.raises(ValueError, match="float16"):
        RACClassifier(model, dtype="float16")


# ------------------------------------------------------------------------------------------- embedder, index
def test_embedder_bf16_vectors_stay_unit_norm_and_close() -> None:
    full, half = Embedder(dtype="float32"), Embedder(dtype="bfloat16")
    assert full.model is half.model  # one loaded model serves both
    assert "dtype='bfloat16'" in repr(half)
    a, b = full.encode(TEXTS), half.encode(TEXTS)
    assert b.dtype == np.float32 and np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(a, b) and (a * b).sum(1).min() > 0.999


def test_manifest_records_the_embedder_dtype(tmp_path) -> None:
    examples = [RACExample(text=t, true_labels=(label,)) for t, label in zip(TEXTS, ("sports", "finance"))]
    index = ExampleIndex.build(examples, dtype="float32")
    assert index.embedder_dtype == "float32" and "dtype='float32'" in repr(index)
    index.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / MANIFEST).read_text())
    assert manifest["embedder"]["dtype"] == "float32"
    loaded = ExampleIndex.load(tmp_path / "idx", dtype="bfloat16")
    assert loaded.embedder_dtype == "float32" and loaded.embedder.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="differs from the given"):
        ExampleIndex.build(examples, Embedder(dtype="float32"), dtype="bfloat16")


def test_manifest_without_dtype_reads_as_float32(tmp_path) -> None:
    """Indexes written before the field existed were all embedded in float32."""
    ExampleIndex.build([RACExample(text=TEXTS[0], true_labels=("sports",))]).save(tmp_path / "idx")
    path = tmp_path / "idx" / MANIFEST
    manifest = json.loads(path.read_text())
    del manifest["embedder"]["dtype"]
    manifest["checksum"] = _manifest_checksum(manifest)
    path.write_text(json.dumps(manifest))
    assert ExampleIndex.load(tmp_path / "idx").embedder_dtype == "float32"


# ------------------------------------------------------------------------------------------- command line
def test_cli_dtype(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(json.dumps({"text": t, "labels": [x]}) + "\n" for t, x in zip(TEXTS, LABELS)))
    assert main(["build-index", str(corpus), "--out", str(tmp_path / "idx"), "--quiet", "--dtype", "float32"]) == 0
    assert json.loads((tmp_path / "idx" / MANIFEST).read_text())["embedder"]["dtype"] == "float32"
    capsys.readouterr()
    assert main(["predict", "hello", "--labels", "a,b", "--dtype", "float16"]) == 2
    assert "float16 needs a CUDA device" in capsys.readouterr().err
