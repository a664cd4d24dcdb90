"""The shipped model (``rac/default_model``): small, loads on the packaged base weights, behaves, and its
merged form is an ordinary gliclass checkpoint."""

from __future__ import annotations

import json

import pytest
import torch

from rac.formatting import RAC_TOKENS, RACExample, append_examples, build_model_input
from rac.model import DEFAULT_MODEL_DIR, DELTA_NAME, GLiClassModel, load_default_model

MAX_BYTES = 20 * 1024 * 1024


@pytest.fixture(scope="module")
def model() -> GLiClassModel:
    return load_default_model()


def logits_for(model: GLiClassModel, texts: list[str], labels: list[str]) -> torch.Tensor:
    strings = [build_model_input(t, labels, prompt_first=model.config.prompt_first) for t in texts]
    enc = model.tokenizer(strings, truncation=True, max_length=model.max_length, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(enc["input_ids"], enc["attention_mask"], len(labels))


def test_shipped_folder_is_small_and_documented():
    files = [p for p in DEFAULT_MODEL_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= MAX_BYTES
    assert {"config.json", DELTA_NAME, "tokenizer.json", "README.md"} <= {p.name for p in files}
    readme = (DEFAULT_MODEL_DIR / "README.md").read_text()
    assert "rac train" in readme and "--seed" in readme
    config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert config["architecture_type"] == "uni-encoder" and config["prompt_first"] is True


def test_default_model_knows_the_rac_tokens(model):
    assert model.has_rac_tokens
    vocab = model.tokenizer.get_vocab()
    assert all(token in vocab for token in RAC_TOKENS)


def test_default_model_classifies_obvious_cases(model):
    sentiment = logits_for(model, ["I absolutely loved it, wonderful and delightful!", "Terrible, awful, I hated it."],
                           ["positive", "negative"])
    assert sentiment[0, 0] > sentiment[0, 1] and sentiment[1, 1] > sentiment[1, 0]
    topic = logits_for(model, ["The striker scored twice and the team won the league match."],
                       ["finance", "sports", "cooking", "medicine"])
    assert topic[0].argmax().item() == 1


def test_default_model_uses_retrieved_examples(model):
    """An example that says which made-up label fits moves the score toward it."""
    labels = ["zorp", "blick"]
    text = "please book me a table for two tonight"
    example = RACExample("reserve a table for dinner", ("blick",))
    with_example = append_examples(text, [example], labels)
    plain, augmented = logits_for(model, [text], labels)[0], logits_for(model, [with_example], labels)[0]
    assert (augmented[1] - augmented[0]) > (plain[1] - plain[0])


def test_merged_default_model_loads_in_gliclass(model, tmp_path):
    """The merged model is an ordinary gliclass checkpoint.

    gliclass averages the text window over its zero-filled tail (anchor notes §1.5), which rac fixes by
    default, so gliclass's logits are those of rac's ``reference_compat`` mode; the ranking is the same.
    """
    gliclass = pytest.importorskip("gliclass")
    model.save_pretrained(tmp_path / "merged")
    reference = gliclass.GLiClassModel.from_pretrained(tmp_path / "merged").eval()
    labels = ["sports", "politics", "weather"]
    string = build_model_input("Heavy rain is expected tomorrow.", labels, prompt_first=True)
    enc = model.tokenizer([string], return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    compat = GLiClassModel.from_pretrained(tmp_path / "merged", reference_compat=True)
    reloaded = GLiClassModel.from_pretrained(tmp_path / "merged")
    with torch.no_grad():
        ours = model(ids, mask, len(labels))
        theirs = reference(input_ids=ids, attention_mask=mask, max_num_classes=len(labels)).logits
        assert (compat(ids, mask, len(labels)) - theirs).abs().max().item() < 1e-4
        assert torch.allclose(reloaded(ids, mask, len(labels)), ours, atol=1e-5)
    assert torch.equal(ours.argsort(-1), theirs.argsort(-1))


def test_a_new_label_with_no_example_wins_when_the_model_is_sure_of_it(model):
    """The case the product exists for: 'book restaurant' was added this week and the index holds none of
    its rows, while every neighbour of the query carries an old label. The shipped fusion lets the model's
    confident answer through; the model alone agrees, and a fixed mix with the neighbours' vote did not."""
    from rac.classifier import RACClassifier
    from rac.corpus import read_corpus
    from rac.fusion import FILE_NAME
    from rac.index import ExampleIndex

    corpus = [row for row in read_corpus("data/sample.jsonl") if "book restaurant" not in row.true_labels]
    index = ExampleIndex.build(corpus)
    labels = sorted({label for row in read_corpus("data/sample.jsonl") for label in row.true_labels})
    clf = RACClassifier.from_pretrained(model, index)
    assert clf.fusion is not None and (DEFAULT_MODEL_DIR / FILE_NAME).is_file()
    text = "book a table for two at an italian restaurant tonight"
    [fused] = clf.predict(text, labels, min_similarity=0.0)
    [alone] = RACClassifier.from_pretrained(model, index, fusion=None).predict(text, labels, min_similarity=0.0)
    assert alone.labels[0][0] == "book restaurant"
    assert fused.labels[0][0] == "book restaurant"
    assert fused.evidence["book restaurant"]["indexed"] == 0.0
    assert all(example.true_labels != ("book restaurant",) for example in fused.examples)
