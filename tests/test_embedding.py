"""Embedder: offline default, unit-norm batched vectors, per-process model cache."""

from __future__ import annotations

import numpy as np
import pytest

from rac.embedding import DEFAULT_EMBEDDER, Embedder, resolve_model


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_default_is_packaged_minilm(embedder: Embedder, minilm_path: str) -> None:
    assert embedder.name == DEFAULT_EMBEDDER
    assert embedder.dimension == 384
    assert resolve_model(minilm_path)[0] == DEFAULT_EMBEDDER  # its folder is the same model, same manifest name
    assert Embedder(minilm_path).model is embedder.model  # cached per process


def test_encode_unit_norm_float32_and_batch_invariant(embedder: Embedder) -> None:
    texts = ["book a table for two tonight", "will it rain in oslo tomorrow", "play some jazz", "rate this novel 4 stars"]
    vectors = embedder.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == (4, 384)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    small_batches = Embedder(batch_size=1).encode(texts)
    np.testing.assert_allclose(vectors, small_batches, atol=1e-5)


def test_similar_texts_are_closer(embedder: Embedder) -> None:
    a, b, c = embedder.encode(["what's the weather in paris", "weather forecast for paris tomorrow", "add this song to my playlist"])
    assert a @ b > 0.6 > a @ c


def test_empty_and_bad_input(embedder: Embedder) -> None:
    assert embedder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.encode("a single string")
    with pytest.raises(ValueError, match="batch_size"):
        Embedder(batch_size=0)


def test_unavailable_hub_model_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="cannot load embedder 'no-such-org/no-such-model'"):
        Embedder("no-such-org/no-such-model")
