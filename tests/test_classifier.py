"""RACClassifier on a real MiniLM GLiClass model (random head): mechanics, provenance, chunking, gliclass parity."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from rac.classifier import ClassificationResult, RACClassifier
from rac.formatting import RACExample
from rac.labels import parse_labels
from rac.model import GLiClassModel

TEXTS = [
    "The new phone has a great camera but the battery dies by noon.",
    "Our flight to Denver was delayed four hours and nobody told us why.",
    "Who was the first president of the United States?",
]
LABELS = ["Positive", "negative", "travel", "technology", "question"]
LONG = " ".join(f"Sentence number {i} talks about markets, elections and football." for i in range(150))


@pytest.fixture(scope="module")
def model(minilm_path: str) -> GLiClassModel:
    return GLiClassModel.from_encoder(minilm_path, seed=0).eval()


@pytest.fixture(scope="module")
def clf(model: GLiClassModel) -> RACClassifier:
    return RACClassifier(model)


@pytest.fixture(scope="module")
def checkpoint(model: GLiClassModel, tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(model.save_pretrained(tmp_path_factory.mktemp("ckpt") / "model"))


def build(clf: RACClassifier, texts: list[str], labels, examples, long_text: bool = False):
    """The classifier's model inputs for ``texts``: (pieces, piece_text, inputs), as ``predict`` builds them."""
    label_sets = clf.processor.label_sets(parse_labels(labels, len(texts))[1])
    return clf.processor.build(texts, label_sets, examples, "", long_text)


def scores(results: list[ClassificationResult]) -> list[dict[str, float]]:
    return [r.scores for r in results]


def assert_close(a: list[dict[str, float]], b: list[dict[str, float]], tol: float = 1e-5) -> None:
    assert [sorted(x) for x in a] == [sorted(y) for y in b]
    worst = max(abs(x[label] - y[label]) for x, y in zip(a, b) for label in x)
    assert worst <= tol, worst


# ------------------------------------------------------------------------------------------- basics
def test_result_holds_every_label_sorted_with_threshold_and_provenance(clf: RACClassifier) -> None:
    results = clf.predict(TEXTS, LABELS, threshold=0.5)
    assert len(results) == len(TEXTS)
    for text, result in zip(TEXTS, results):
        assert result.text == text
        assert sorted(name for name, _ in result.labels) == sorted(LABELS)
        values = [score for _, score in result.labels]
        assert values == sorted(values, reverse=True)
        assert all(0.0 < v < 1.0 for v in values)
        assert result.predicted == [name for name, score in result.labels if score >= 0.5]
        assert result.examples == []
        json.dumps(result.to_dict())
    everything = clf.predict(TEXTS[0], LABELS, threshold=0.0)[0]
    assert everything.predicted == [name for name, _ in everything.labels]
    assert clf.predict(TEXTS[0], LABELS, threshold=1.0)[0].predicted == []


def test_single_label_is_softmax_argmax(clf: RACClassifier) -> None:
    multi = clf.predict(TEXTS, LABELS)
    single = clf.predict(TEXTS, LABELS, multi_label=False)
    for m, s in zip(multi, single):
        assert sum(s.scores.values()) == pytest.approx(1.0, abs=1e-5)
        assert s.predicted == [s.labels[0][0]]
        # softmax and sigmoid are both monotone in the logit: same ranking
        assert [name for name, _ in s.labels] == [name for name, _ in m.labels]


def test_batching_and_order_do_not_change_scores(clf: RACClassifier) -> None:
    texts = TEXTS + [LONG, "short"]
    one_by_one = scores(clf.predict(texts, LABELS, batch_size=1))
    batched = scores(clf.predict(texts, LABELS, batch_size=64))
    assert_close(one_by_one, batched)
    assert_close(scores(clf.predict(texts[::-1], LABELS))[::-1], batched)


def test_checkpoint_round_trip(clf: RACClassifier, checkpoint: str) -> None:
    loaded = RACClassifier.from_pretrained(checkpoint)
    assert_close(scores(loaded.predict(TEXTS, LABELS)), scores(clf.predict(TEXTS, LABELS)), tol=1e-6)


def test_model_training_mode_is_restored(model: GLiClassModel, clf: RACClassifier) -> None:
    model.train()
    try:
        first = scores(clf.predict(TEXTS, LABELS))
        assert model.training
        assert_close(first, scores(clf.predict(TEXTS, LABELS)), tol=0.0)  # dropout was off while predicting
    finally:
        model.eval()


def test_default_model() -> None:
    from rac.model import DEFAULT_MODEL_DIR, DELTA_NAME

    if (DEFAULT_MODEL_DIR / DELTA_NAME).is_file():
        assert RACClassifier.from_pretrained().predict("hello there", ["greeting", "farewell"])[0].labels
    else:  # until the trained model is shipped
        with pytest.raises(FileNotFoundError, match="no shipped model"):
            RACClassifier.from_pretrained()


# ------------------------------------------------------------------------------------ gliclass parity
def gliclass_scores(path: str, texts: list[str], labels: list[str], max_length: int, **kwargs) -> list[dict[str, float]]:
    from gliclass import GLiClassModel as ReferenceModel
    from gliclass import ZeroShotClassificationPipeline
    from transformers import AutoTokenizer

    pipe = ZeroShotClassificationPipeline(
        ReferenceModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
        max_length=max_length, device="cpu", progress_bar=False,
    )
    out = pipe(texts, labels, threshold=0.0, **kwargs)
    return [{item["label"]: item["score"] for item in row} for row in out]


@pytest.mark.parametrize("prompt_first", [True, False])
def test_matches_gliclass_pipeline_on_rac_checkpoint(minilm_path: str, tmp_path, prompt_first: bool) -> None:
    path = str(GLiClassModel.from_encoder(minilm_path, seed=1, prompt_first=prompt_first).save_pretrained(tmp_path / "m"))
    clf = RACClassifier.from_pretrained(path)
    texts = TEXTS + ["  leading and trailing spaces  ", "Ünïcödé text, with punctuation!?"]
    if prompt_first:  # gliclass truncates the text end when labels come first: same as rac
        texts.append(LONG)
    for prompt in (None, "Classify this message:"):
        ref = gliclass_scores(path, texts, LABELS, clf.model.max_length, prompt=prompt)
        assert_close(scores(clf.predict(texts, LABELS, prompt=prompt, threshold=0.0)), ref, tol=1e-4)
    ref = gliclass_scores(path, texts, LABELS, clf.model.max_length, classification_type="single-label")
    mine = clf.predict(texts, LABELS, multi_label=False)
    for r, m in zip(ref, mine):
        (best, score), = r.items()
        assert m.predicted == [best] and m.scores[best] == pytest.approx(score, abs=1e-4)


def test_matches_gliclass_pipeline_on_gliclass_checkpoint(minilm_path: str, tmp_path) -> None:
    from gliclass import GLiClassModel as ReferenceModel
    from gliclass.config import GLiClassModelConfig
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    first = len(tokenizer)
    tokenizer.add_tokens(["<<LABEL>>", "<<SEP>>", "<<EXAMPLE>>"], special_tokens=True)
    config = GLiClassModelConfig(
        encoder_config=AutoConfig.from_pretrained(minilm_path), encoder_model=minilm_path, prompt_first=True,
        class_token_index=first, text_token_index=first + 1, example_token_index=first + 2,
    )
    torch.manual_seed(0)
    reference = ReferenceModel(config, from_pretrained=True)
    reference.resize_token_embeddings(len(tokenizer))
    reference.save_pretrained(tmp_path / "g")
    tokenizer.save_pretrained(tmp_path / "g")
    path = str(tmp_path / "g")

    clf = RACClassifier.from_pretrained(path, reference_compat=True)
    ref = gliclass_scores(path, TEXTS, LABELS, clf.model.max_length)
    assert_close(scores(clf.predict(TEXTS, LABELS, threshold=0.0)), ref, tol=1e-4)


# ---------------------------------------------------------------------------------- label chunking
def test_200_labels_are_chunked_never_dropped(model: GLiClassModel) -> None:
    clf = RACClassifier(model, shortlist=False)  # every label scored, in chunks (rac.shortlist picks 25 instead)
    labels = [f"topic number {i} about subject {i * 7}" for i in range(200)]  # ~2,000 tokens of labels
    texts = [TEXTS[0], LONG]
    pieces, piece_text, items = build(clf, texts, labels, [[], []])
    assert len(items) > 2 * 2  # several chunks per text
    assert all(len(item.input_ids) <= clf.model.max_length for item in items)
    label_id = clf.model.tokenizer.convert_tokens_to_ids("<<LABEL>>")
    assert sum(item.input_ids.count(label_id) for item in items) == 2 * 200  # every <<LABEL>> kept

    results = clf.predict(texts, labels, threshold=0.0)
    for result in results:
        assert sorted(name for name, _ in result.labels) == sorted(labels)
        assert min(result.scores.values()) > 0.01  # a dropped label would score sigmoid(PAD_LOGIT) = 0
    # each chunk is scored exactly as if its labels were asked alone
    first = [item for item in items if item.piece == 0]
    for item in first[:2]:
        alone = clf.predict(TEXTS[0], labels[item.start : item.end])[0].scores
        assert_close([alone], [{name: results[0].scores[name] for name in alone}])


def test_label_sets_beyond_max_num_classes_are_scored_in_even_passes(model: GLiClassModel) -> None:
    labels = [f"label {i}" for i in range(30)]  # short: one window would hold them all
    capped = RACClassifier(model, shortlist=False)
    assert capped.max_labels_per_pass == model.config.max_num_classes == 25
    _, _, items = build(capped, [TEXTS[0]], labels, [[]])
    assert [(item.start, item.end) for item in items] == [(0, 15), (15, 30)]  # 15 + 15, not 25 + 5
    [result] = capped.predict(TEXTS[0], labels, threshold=0.0)
    assert result.passes == 2
    alone = capped.predict(TEXTS[0], labels[15:])[0].scores
    assert_close([alone], [{name: result.scores[name] for name in alone}])
    [one_pass] = RACClassifier(model, max_labels_per_pass=30).predict(TEXTS[0], labels)
    assert one_pass.passes == 1
    with pytest.raises(ValueError, match="max_labels_per_pass"):
        RACClassifier(model, max_labels_per_pass=0)


def test_label_too_long_for_a_chunk_is_an_error(clf: RACClassifier) -> None:
    with pytest.raises(ValueError, match="longer than"):
        clf.predict("text", ["word " * 600, "b"])


# ------------------------------------------------------------------------------------- long texts
def test_long_text_scores_are_max_over_windows(clf: RACClassifier) -> None:
    short = clf.predict(TEXTS, LABELS)
    assert_close(scores(clf.predict(TEXTS, LABELS, long_text=True)), scores(short), tol=0.0)

    text = LONG + " Finally, the weather today is sunny and the airport reopened for travel."
    truncated = clf.predict(text, LABELS)[0].scores
    windowed = clf.predict(text, LABELS, long_text=True)[0].scores
    assert all(windowed[name] >= truncated[name] - 1e-5 for name in LABELS)
    assert any(windowed[name] > truncated[name] + 1e-4 for name in LABELS)

    pieces, piece_text, _ = build(clf, [text], LABELS, [[]], long_text=True)
    assert len(pieces) > 1
    per_window = clf.predict(pieces, LABELS)
    expected = {name: max(r.scores[name] for r in per_window) for name in LABELS}
    assert_close([windowed], [expected])

    single = clf.predict(text, LABELS, long_text=True, multi_label=False)[0]
    assert sum(single.scores.values()) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------------- RAC examples
EXAMPLES = [
    {"text": "The camera is amazing and the screen is bright.", "true_labels": ["Positive", "technology"],
     "all_labels": LABELS},
    {"text": "Lost my luggage on the connecting flight.", "true_labels": ["negative", "travel"]},
]


def test_explicit_examples_change_scores_and_are_reported(clf: RACClassifier) -> None:
    plain = clf.predict(TEXTS, LABELS)
    shared = clf.predict(TEXTS, LABELS, examples=EXAMPLES)
    for result in shared:
        assert result.examples == [RACExample.from_dict(e) for e in EXAMPLES]
        assert result.to_dict()["examples"][0]["true_labels"] == ["Positive", "technology"]
    assert any(abs(p.scores[n] - s.scores[n]) > 1e-4 for p, s in zip(plain, shared) for n in LABELS)

    per_text = clf.predict(TEXTS, LABELS, examples=[EXAMPLES[:1], None, [RACExample("Is it far?", ("question",))]])
    assert [len(r.examples) for r in per_text] == [1, 0, 1]
    assert_close([per_text[1].scores], [plain[1].scores], tol=1e-6)


def toy_fusion():
    """A real fitted fusion: on synthetic evidence where the examples' share is the truth."""
    from rac.evidence import Evidence
    from rac.fusion import ALL_FEATURES, EvidenceFusion, features

    rng = np.random.default_rng(0)
    rows, targets = [], []
    for _ in range(200):
        truth = rng.integers(5)
        share = rng.uniform(0, 0.2, 5)
        share[truth] = rng.uniform(0.5, 1.0)
        ev = Evidence(rng.uniform(0.05, 0.95, 5), share, share, rng.uniform(0.1, 0.5, 5), np.ones(5), 0.7, 0.8)
        rows.append(features(ev))
        targets.append((np.arange(5) == truth).astype(int))
    return EvidenceFusion.fit(np.concatenate(rows), np.concatenate(targets), feature_names=ALL_FEATURES)


def test_fusion_scores_given_examples_and_says_what_moved_them(model: GLiClassModel) -> None:
    from rac.evidence import Evidence

    plain = RACClassifier(model, fusion=None)
    fusion = toy_fusion()
    fused = RACClassifier(model, fusion=fusion)
    alone = plain.predict(TEXTS, LABELS, examples=EXAMPLES)
    mixed = fused.predict(TEXTS, LABELS, examples=EXAMPLES)
    for a, m in zip(alone, mixed):
        # fusion off: the model's own scores, and the evidence still reports them
        assert a.contributions is None and a.evidence is not None
        assert all(a.evidence[label]["model"] == pytest.approx(a.scores[label], abs=1e-7) for label in LABELS)
        evidence = Evidence.from_dicts(LABELS, m.evidence)
        assert [m.scores[label] for label in LABELS] == pytest.approx(fusion.score(evidence).tolist(), abs=1e-9)
        assert m.evidence["travel"]["shown"] == pytest.approx(0.5) and m.evidence["question"]["shown"] == 0.0
        assert set(m.contributions["travel"]) == {"model", "examples", "neighbours", "prototype", "probe", "name",
                                                  "index"}
        assert "name" not in a.evidence["travel"]  # fusion off and no index: the texts are not embedded for it
        vectors = fused.label_embedder.encode([m.text, *LABELS])
        assert [m.evidence[label]["name"] for label in LABELS] == pytest.approx((vectors[1:] @ vectors[0]).tolist(),
                                                                                abs=1e-5)
        assert m.predicted == [name for name, score in m.labels if score >= 0.5]
        json.dumps(m.to_dict())
    # single-label: the fused scores are renormalised into a distribution
    single = fused.predict(TEXTS, LABELS, examples=EXAMPLES, multi_label=False)
    assert all(sum(r.scores.values()) == pytest.approx(1.0, abs=1e-6) for r in single)
    # no corpus at all: the fusion has nothing to add, the scores are the model's
    assert_close(scores(fused.predict(TEXTS, LABELS)), scores(plain.predict(TEXTS, LABELS)), tol=0.0)
    assert fused.predict(TEXTS, LABELS)[0].evidence is None
    with pytest.raises(TypeError, match="fusion must be an EvidenceFusion"):
        RACClassifier(model, fusion="yes")


def test_examples_cut_off_by_a_long_text_still_count_as_evidence(clf: RACClassifier) -> None:
    [result] = RACClassifier(clf.model, fusion=toy_fusion()).predict(LONG, LABELS, examples=EXAMPLES)
    assert result.examples == [RACExample.from_dict(e) for e in EXAMPLES]  # none fitted, all reported
    assert result.evidence["travel"]["shown"] == pytest.approx(0.5)
    [alone] = RACClassifier(clf.model, fusion=None).predict(LONG, LABELS, examples=EXAMPLES)
    assert alone.examples == []  # without the fusion, only what the model saw
    assert_close([alone.scores], [clf.predict(LONG, LABELS)[0].scores], tol=1e-6)


def test_save_pretrained_round_trip(model: GLiClassModel, index, tmp_path) -> None:
    fused = RACClassifier(model, index, fusion=toy_fusion(), max_labels_per_pass=3, knn_k=4)
    folder = fused.save_pretrained(tmp_path / "clf")
    loaded = RACClassifier.from_pretrained(folder, index)
    assert (loaded.max_labels_per_pass, loaded.knn_k) == (3, 4)
    assert loaded.fusion.to_dict() == fused.fusion.to_dict()
    assert_close(scores(loaded.predict(TEXTS, LABELS, k=2, min_similarity=0.1)),
                 scores(fused.predict(TEXTS, LABELS, k=2, min_similarity=0.1)), tol=1e-6)
    assert RACClassifier.from_pretrained(folder, index, fusion=None).fusion is None
    (folder / "rac_classifier.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a rac classifier settings file"):
        RACClassifier.from_pretrained(folder)


@pytest.fixture(scope="module")
def index():
    from rac.index import ExampleIndex

    corpus = [
        RACExample("The battery of this laptop lasts all day, love it.", ("Positive", "technology")),
        RACExample("My train was cancelled and I missed the meeting.", ("negative", "travel")),
        RACExample("Where is the Eiffel Tower?", ("question",)),
        RACExample("Stock markets fell sharply on Monday.", ()),
    ]
    return ExampleIndex.build(corpus)


def test_retrieval_adds_similar_examples(model: GLiClassModel, clf: RACClassifier, index, tmp_path) -> None:
    rac = RACClassifier(model, index)
    results = rac.predict(TEXTS, LABELS, k=2, min_similarity=0.1)
    for result in results:
        assert 1 <= len(result.examples) <= 2
        sims = [e.similarity for e in result.examples]
        assert all(s >= 0.1 for s in sims) and sims == sorted(sims, reverse=True)
    assert results[1].examples[0].text.startswith("My train")
    # the raw evidence holds the text's cosine to each label name, from the query vector retrieval made
    vectors = index.embedder.encode([TEXTS[1], *LABELS])
    assert [results[1].evidence[label]["name"] for label in LABELS] == pytest.approx(
        (vectors[1:] @ vectors[0]).tolist(), abs=1e-5)
    assert scores(results) != scores(clf.predict(TEXTS, LABELS))
    # k=0 and an unreachable similarity both give plain zero-shot
    assert_close(scores(rac.predict(TEXTS, LABELS, k=0)), scores(clf.predict(TEXTS, LABELS)), tol=0.0)
    assert all(r.examples == [] for r in rac.predict(TEXTS, LABELS, min_similarity=1.0))
    # explicit examples replace retrieval
    assert rac.predict(TEXTS[0], LABELS, examples=EXAMPLES[:1])[0].examples == [RACExample.from_dict(EXAMPLES[0])]

    index.save(tmp_path / "index")
    model_path = model.save_pretrained(tmp_path / "model")
    loaded = RACClassifier.from_pretrained(model_path, tmp_path / "index")
    assert_close(scores(loaded.predict(TEXTS, LABELS, k=2, min_similarity=0.1)), scores(results), tol=1e-5)


# ---------------------------------------------------------------------------- label structures
def test_hierarchical_labels(clf: RACClassifier) -> None:
    groups = {"sentiment": ["positive", "negative"], "topic": {"tech": ["phones"], "trips": ["flights"]}}
    flat = ["sentiment.positive", "sentiment.negative", "topic.tech.phones", "topic.trips.flights"]
    result = clf.predict(TEXTS[0], groups, return_hierarchical=True)[0]
    assert sorted(result.scores) == sorted(flat)
    assert_close([result.scores], [clf.predict(TEXTS[0], flat)[0].scores], tol=0.0)
    nested = result.hierarchical
    assert nested["sentiment"]["negative"] == result.scores["sentiment.negative"]
    assert nested["topic"]["trips"]["flights"] == result.scores["topic.trips.flights"]
    assert result.to_dict()["hierarchical"] == nested
    assert clf.predict(TEXTS[0], LABELS)[0].hierarchical is None


def test_per_text_labels(clf: RACClassifier) -> None:
    per_text = [["a", "b"], ["travel", "food", "music"], {"kind": ["question", "statement"]}]
    results = clf.predict(TEXTS, per_text)
    for text, labels, result in zip(TEXTS, per_text, results):
        assert_close([result.scores], [clf.predict(text, labels)[0].scores])
    with pytest.raises(ValueError, match="3 texts"):
        clf.predict(TEXTS, [["a"], ["b"]])


# ------------------------------------------------------------------------------------- bad input
def test_empty_list_gives_empty_list(clf: RACClassifier) -> None:
    assert clf.predict([], LABELS) == []


@pytest.mark.parametrize(
    ("texts", "labels", "kwargs", "error", "match"),
    [
        ("", LABELS, {}, ValueError, "empty"),
        (["ok", "   "], LABELS, {}, ValueError, "text 1 is empty"),
        ([1], LABELS, {}, TypeError, "not a string"),
        ("text", [], {}, ValueError, "no labels"),
        ("text", [[]], {}, ValueError, "no labels"),
        ("text", "a,b", {}, TypeError, "list or a dict"),
        ("text", ["a", 2], {}, TypeError, "must be strings"),
        ("text", ["a", None], {}, TypeError, "must be strings"),
        ("text", ["a", " "], {}, ValueError, "empty"),
        ("text", ["a<<SEP>>b"], {}, ValueError, "marker"),
        ("text", LABELS, {"threshold": 1.5}, ValueError, r"threshold must be in \[0, 1\]"),
        ("text", LABELS, {"threshold": -0.1}, ValueError, "threshold"),
        ("text", LABELS, {"k": -1}, ValueError, "k must be"),
        ("text", LABELS, {"batch_size": 0}, ValueError, "batch_size"),
        (["a", "b"], LABELS, {"examples": [[], [], []]}, ValueError, "example lists"),
        ("text", LABELS, {"examples": [{"true_labels": ["a"]}]}, ValueError, "string 'text'"),
    ],
)
def test_bad_input_is_a_clear_error(clf: RACClassifier, texts, labels, kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        clf.predict(texts, labels, **kwargs)


def test_duplicate_labels_are_scored_once_with_one_warning(clf: RACClassifier) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = clf.predict(TEXTS, ["travel", "music", "travel", "music", "food"])
    assert len([w for w in caught if "duplicate labels" in str(w.message)]) == 1
    assert "['music', 'travel']" in str(caught[0].message)
    assert all([name for name, _ in r.labels].count("travel") == 1 for r in results)
    assert_close(scores(results), scores(clf.predict(TEXTS, ["travel", "music", "food"])), tol=0.0)


def test_from_pretrained_rejects_bad_arguments(model: GLiClassModel, index) -> None:
    with pytest.raises(TypeError, match="checkpoint path"):
        RACClassifier.from_pretrained(42)
    with pytest.raises(FileNotFoundError):
        RACClassifier.from_pretrained("/nonexistent/checkpoint")
    with pytest.raises(ValueError, match="reference_compat"):
        RACClassifier.from_pretrained(model, reference_compat=True)
    with pytest.raises(ValueError, match="embedder"):
        RACClassifier.from_pretrained(model, index, embedder="other")
