"""rac.model on its own: creation, config checks, loading/saving, forward semantics, training."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from rac.formatting import EXAMPLE_TOKEN, GLICLASS_TOKENS, LABEL_TOKEN, RAC_TOKENS, build_model_input
from rac.model import (
    BIN_NAME,
    PAD_LOGIT,
    WEIGHTS_NAME,
    GLiClassConfig,
    GLiClassModel,
    label_scores,
    usable_length,
)

TEXTS = ["The striker scored twice.", "Rates rose again and markets fell hard across the region today."]
LABELS = [["sports", "finance"], ["finance", "economy", "sports", "weather"]]


def save_tiny_encoder(folder: Path, minilm_path: str, model_type: str = "bert", **overrides: Any) -> Path:
    """A 2-layer random encoder of ``model_type`` saved as a pretrained folder with the MiniLM tokenizer."""
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    base = AutoConfig.from_pretrained(minilm_path).to_dict() if model_type == "bert" else {"vocab_size": 30522}
    base = {k: v for k, v in base.items() if k not in ("model_type", "architectures")}
    config = AutoConfig.for_model(model_type, **{**base, **small, "pad_token_id": 0, **overrides})
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(minilm_path).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, minilm_path) -> Path:
    return save_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"), minilm_path)


@pytest.fixture(scope="module")
def model(tiny_bert) -> GLiClassModel:
    return GLiClassModel.from_encoder(tiny_bert, seed=0).eval()


@pytest.fixture(scope="module")
def saved(model, tmp_path_factory) -> Path:
    return model.save_pretrained(tmp_path_factory.mktemp("saved") / "ckpt")


def encode(model: GLiClassModel, texts=TEXTS, labels=LABELS) -> dict:
    strings = [
        build_model_input(t, ls, prompt_first=model.config.prompt_first, lowercase_labels=model.config.lowercase_labels)
        for t, ls in zip(texts, labels)
    ]
    return dict(model.tokenizer(strings, truncation=True, max_length=model.max_length, padding="longest", return_tensors="pt"))


@torch.no_grad()
def logits_of(model: GLiClassModel, enc: dict, num_labels: int | None = None) -> torch.Tensor:
    return model(enc["input_ids"], enc["attention_mask"], num_labels)


def edit_config(folder: Path, **changes: Any) -> None:
    path = folder / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.fixture
def checkpoint_copy(saved, tmp_path) -> Path:
    """A scratch copy of the saved checkpoint that a test may corrupt."""
    import shutil

    return Path(shutil.copytree(saved, tmp_path / "copy"))


# ------------------------------------------------------------------------------------------------ creation
def test_from_encoder_adds_tokens_and_defaults(model):
    vocab = model.tokenizer.get_vocab()
    ids = [vocab[t] for t in (*GLICLASS_TOKENS, *RAC_TOKENS)]
    assert ids == list(range(30522, 30528))
    assert (model.config.class_token_index, model.config.text_token_index, model.config.example_token_index) == tuple(ids[:3])
    assert model.encoder.get_input_embeddings().num_embeddings == len(model.tokenizer) == model.config.vocab_size
    assert model.has_rac_tokens
    cfg = model.config
    assert (cfg.prompt_first, cfg.pooling_strategy, cfg.class_token_pooling, cfg.scorer_type) == (True, "first", "first", "simple")
    assert cfg.problem_type == "multi_label_classification" and not cfg.normalize_features
    assert model.max_length == 512 and not model.reference_compat
    # RAC markers stay single tokens, so examples cost a fixed, small number of tokens.
    pieces = model.tokenizer.tokenize(f"x {RAC_TOKENS[0]} y {RAC_TOKENS[1]} z {RAC_TOKENS[2]}")
    assert all(token in pieces for token in RAC_TOKENS)


def test_from_encoder_without_rac_tokens(tiny_bert):
    model = GLiClassModel.from_encoder(tiny_bert, add_rac_tokens=False, seed=0)
    assert not model.has_rac_tokens and len(model.tokenizer) == 30525


def test_seed_reproducible_and_global_rng_untouched(tiny_bert, model):
    torch.manual_seed(7)
    expected_next = torch.rand(3)
    torch.manual_seed(7)
    again = GLiClassModel.from_encoder(tiny_bert, seed=0)
    assert torch.equal(torch.rand(3), expected_next)
    for (name, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), name
    other = GLiClassModel.from_encoder(tiny_bert, seed=1)
    assert not torch.equal(other.encoder.get_input_embeddings().weight[-1], again.encoder.get_input_embeddings().weight[-1])
    assert not torch.equal(other.text_projector.linear_1.weight, again.text_projector.linear_1.weight)


def test_from_encoder_overrides_and_unknown_option(tiny_bert):
    model = GLiClassModel.from_encoder(tiny_bert, seed=0, scorer_type="mlp", pooling_strategy="avg", lowercase_labels=True)
    assert model.config.scorer_type == "mlp" and model.config.lowercase_labels
    with pytest.raises(TypeError, match="no_such_option"):
        GLiClassModel.from_encoder(tiny_bert, no_such_option=1)
    with pytest.raises(NotImplementedError, match="hopfield"):
        GLiClassModel.from_encoder(tiny_bert, scorer_type="hopfield")


# ------------------------------------------------------------------------------------------- config checks
def minimal_config(**changes: Any) -> dict[str, Any]:
    encoder = {"model_type": "bert", "hidden_size": 32, "vocab_size": 100, "num_hidden_layers": 2}
    return {"encoder_config": encoder, "class_token_index": 97, "text_token_index": 98, **changes}


@pytest.mark.parametrize(
    "changes, named",
    [
        ({"use_lstm": True}, "use_lstm"),
        ({"squeeze_layers": True}, "squeeze_layers"),
        ({"use_segment_embeddings": True}, "use_segment_embeddings"),
        ({"use_calibrator": True}, "use_calibrator"),
        ({"multimodal": True}, "multimodal"),
        ({"scorer_type": "cross-attn"}, "scorer_type"),
        ({"scorer_type": "hopfield"}, "scorer_type"),
        ({"pooling_strategy": "last"}, "pooling_strategy"),
        ({"pooling_strategy": "pass"}, "pooling_strategy"),
        ({"class_token_pooling": "mean"}, "class_token_pooling"),
        ({"architecture_type": "bi-encoder"}, "architecture_type"),
        ({"architecture_type": "decoder-kv"}, "architecture_type"),
        ({"projector_hidden_act": "nope"}, "projector_hidden_act"),
        ({"encoder_config": {"model_type": "t5", "hidden_size": 32, "vocab_size": 100}}, "t5"),
    ],
)
def test_unsupported_options_are_refused_by_name(changes, named):
    with pytest.raises(NotImplementedError, match=named):
        GLiClassConfig.from_dict(minimal_config(**changes))


def test_config_defaults_and_round_trip():
    config = GLiClassConfig.from_dict(minimal_config(focal_loss_alpha=0.7, transformers_version="4.0"))
    # gliclass defaults for absent keys (anchor §1.4)
    assert (config.prompt_first, config.max_num_classes, config.example_token_index, config.hidden_size) == (False, 25, 102, 32)
    out = config.to_dict()
    assert out["focal_loss_alpha"] == 0.7 and out["model_type"] == "GLiClass" and out["architecture_type"] == "uni-encoder"
    assert isinstance(out["encoder_model_name"], str)
    assert GLiClassConfig.from_dict(out).to_dict() == out
    with pytest.raises(ValueError, match="hidden_size"):
        GLiClassConfig.from_dict(minimal_config(scorer_type="mlp", hidden_size=16))
    with pytest.raises(ValueError, match="encoder_layer_id"):
        GLiClassConfig.from_dict(minimal_config(encoder_layer_id=3))
    with pytest.raises(ValueError, match="encoder_config"):
        GLiClassConfig.from_dict({"class_token_index": 1})


# ----------------------------------------------------------------------------------------- load and save
def test_save_load_round_trip(model, saved):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    keys = load_file(saved / WEIGHTS_NAME).keys()
    assert all(k.startswith("model.") for k in keys) and "model.encoder_model.embeddings.word_embeddings.weight" in keys
    loaded = GLiClassModel.from_pretrained(saved)
    assert not loaded.training
    enc = encode(model)
    assert torch.equal(logits_of(model, enc), logits_of(loaded, enc))
    assert loaded.config.to_dict() == json.loads((saved / "config.json").read_text())


def test_loading_does_not_warn_about_the_gliclass_model_type(saved):
    """The tokenizer used to be loaded as if config.json were a backbone config: a warning on every load."""
    import logging

    from transformers.utils import logging as hf_logging

    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())
    hf_logging.get_logger("transformers").addHandler(handler)
    try:
        GLiClassModel.from_pretrained(saved)
    finally:
        hf_logging.get_logger("transformers").removeHandler(handler)
    assert not [m for m in messages if "GLiClass" in m], messages


def test_save_is_atomic_and_overwrites(model, tmp_path, monkeypatch):
    target = tmp_path / "ckpt"
    model.save_pretrained(target)
    model.save_pretrained(target)  # overwrite in place
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging or retired folders left behind
    before = (target / WEIGHTS_NAME).read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("rac.model.save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(target)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    assert (target / WEIGHTS_NAME).read_bytes() == before


def test_bin_checkpoint_loads_with_weights_only(checkpoint_copy, model):
    state = load_file(checkpoint_copy / WEIGHTS_NAME)
    torch.save(state, checkpoint_copy / BIN_NAME)
    (checkpoint_copy / WEIGHTS_NAME).unlink()
    loaded = GLiClassModel.from_pretrained(checkpoint_copy)
    enc = encode(model)
    assert torch.equal(logits_of(model, enc), logits_of(loaded, enc))
    (checkpoint_copy / BIN_NAME).unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        GLiClassModel.from_pretrained(checkpoint_copy)


def test_pickled_objects_in_bin_are_refused(checkpoint_copy):
    state = load_file(checkpoint_copy / WEIGHTS_NAME)
    torch.save({**state, "payload": Path("x")}, checkpoint_copy / BIN_NAME)  # an arbitrary pickled object
    (checkpoint_copy / WEIGHTS_NAME).unlink()
    with pytest.raises(Exception, match="[Ww]eights only"):
        GLiClassModel.from_pretrained(checkpoint_copy)


@pytest.mark.parametrize(
    "changes, error, named",
    [
        ({"use_lstm": True}, NotImplementedError, "use_lstm"),
        ({"class_token_index": 5}, ValueError, "class_token_index=5"),
        ({"text_token_index": 30522}, ValueError, "text_token_index"),
        ({"example_token_index": 7}, ValueError, "example_token_index=7"),
    ],
)
def test_bad_checkpoint_config_is_refused(checkpoint_copy, changes, error, named):
    edit_config(checkpoint_copy, **changes)
    with pytest.raises(error, match=named):
        GLiClassModel.from_pretrained(checkpoint_copy)


def test_missing_example_token_is_allowed_but_missing_label_token_is_not(checkpoint_copy, model):
    """Old checkpoints have no <<EXAMPLE>>: fine. A tokenizer without <<LABEL>> would miss every label."""
    tokenizer_file = checkpoint_copy / "tokenizer.json"
    spec = json.loads(tokenizer_file.read_text())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in (EXAMPLE_TOKEN, *RAC_TOKENS)]
    tokenizer_file.write_text(json.dumps(spec))
    loaded = GLiClassModel.from_pretrained(checkpoint_copy)
    assert EXAMPLE_TOKEN not in loaded.tokenizer.get_vocab() and not loaded.has_rac_tokens
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != LABEL_TOKEN]
    tokenizer_file.write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="<<LABEL>>"):
        GLiClassModel.from_pretrained(checkpoint_copy)


@pytest.mark.parametrize(
    "extra_key, named",
    [
        ("model.lstm.lstm.weight_ih_l0", "lstm"),
        ("calibrator.mlp.0.weight", "calibrator"),
        ("model.encoder_model.encoder.layer.0.attention.self.query.lora_A.weight", "LoRA"),
    ],
)
def test_unexpected_weights_are_refused(checkpoint_copy, extra_key, named):
    from safetensors.torch import save_file

    state = load_file(checkpoint_copy / WEIGHTS_NAME)
    save_file({**state, extra_key: torch.zeros(2)}, checkpoint_copy / WEIGHTS_NAME)
    with pytest.raises((ValueError, NotImplementedError), match=named):
        GLiClassModel.from_pretrained(checkpoint_copy)


def test_missing_weights_are_refused_but_legacy_buffers_tolerated(checkpoint_copy, model):
    from safetensors.torch import save_file

    state = load_file(checkpoint_copy / WEIGHTS_NAME)
    legacy = {"model.encoder_model.embeddings.position_ids": torch.arange(512)[None]}
    save_file({**state, **legacy}, checkpoint_copy / WEIGHTS_NAME)
    enc = encode(model)
    assert torch.equal(logits_of(GLiClassModel.from_pretrained(checkpoint_copy), enc), logits_of(model, enc))
    del state["model.classes_projector.linear_2.bias"]
    save_file(state, checkpoint_copy / WEIGHTS_NAME)
    with pytest.raises(ValueError, match="classes_projector.linear_2.bias"):
        GLiClassModel.from_pretrained(checkpoint_copy)


def test_lowercase_labels_is_stored_and_overridable(tiny_bert, tmp_path):
    saved = GLiClassModel.from_encoder(tiny_bert, seed=0, lowercase_labels=True).save_pretrained(tmp_path / "lc")
    assert json.loads((saved / "config.json").read_text())["lowercase_labels"] is True
    assert GLiClassModel.from_pretrained(saved).config.lowercase_labels
    assert not GLiClassModel.from_pretrained(saved, lowercase_labels=False).config.lowercase_labels


# ----------------------------------------------------------------------------------------------- forward
def test_label_slots_and_mask(model):
    enc = encode(model)
    logits = logits_of(model, enc)
    assert logits.shape == (2, 4)  # K = most labels in the batch
    mask = model.label_mask(enc["input_ids"])
    assert mask.tolist() == [[True, True, False, False], [True, True, True, True]]
    assert torch.all(logits[~mask] == PAD_LOGIT) and torch.all(logits[mask] != PAD_LOGIT)
    wider = logits_of(model, enc, num_labels=6)
    assert wider.shape == (2, 6) and torch.allclose(wider[:, :4], logits, atol=1e-6)
    assert model.label_mask(enc["input_ids"], 6).sum().item() == 6
    with pytest.raises(ValueError, match="num_labels=3"):
        logits_of(model, enc, num_labels=3)


def test_reference_compat_slots(model):
    enc = encode(model)
    model.reference_compat = True
    try:
        compat = logits_of(model, enc)
        assert compat.shape == (2, model.config.max_num_classes)
        assert torch.all(compat[0, 2:] != PAD_LOGIT)  # padded slots scored from the projector bias
    finally:
        model.reference_compat = False
    assert torch.allclose(compat[:, :4][model.label_mask(enc["input_ids"])], logits_of(model, enc)[model.label_mask(enc["input_ids"])], atol=1e-6)


def test_label_scores():
    logits = torch.tensor([[2.0, -1.0, PAD_LOGIT], [0.5, 0.1, 3.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    multi = label_scores(logits, mask, multi_label=True)
    assert torch.allclose(multi[0, :2], torch.sigmoid(logits[0, :2])) and multi[0, 2] == 0
    single = label_scores(logits, mask, multi_label=False)
    assert torch.allclose(single.sum(-1), torch.ones(2)) and single[0, 2] == 0
    assert torch.allclose(single[0, :2], torch.softmax(logits[0, :2], -1))


def test_training_step_reaches_every_part(tiny_bert):
    model = GLiClassModel.from_encoder(tiny_bert, seed=0, scorer_type="weighted-dot", pooling_strategy="avg").train()
    enc = encode(model)
    logits = model(enc["input_ids"], enc["attention_mask"])
    mask = model.label_mask(enc["input_ids"])
    targets = torch.zeros_like(logits)
    targets[0, 0] = targets[1, 1] = 1.0
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")[mask].mean()
    loss.backward()
    assert torch.isfinite(loss)
    for name in ("encoder.embeddings.word_embeddings.weight", "text_projector.linear_1.weight",
                 "classes_projector.linear_2.bias", "scorer.out_mlp.3.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name
    # the new <<LABEL>> row learns
    assert model.encoder.get_input_embeddings().weight.grad[model.config.class_token_index].abs().sum() > 0


def test_encoder_layer_id_reads_an_earlier_layer(tiny_bert):
    last = GLiClassModel.from_encoder(tiny_bert, seed=0).eval()
    early = GLiClassModel.from_encoder(tiny_bert, seed=0, encoder_layer_id=1).eval()
    enc = encode(last)
    assert not torch.allclose(logits_of(last, enc), logits_of(early, enc))
    with torch.no_grad():
        states = last.encoder(**{k: enc[k] for k in ("input_ids", "attention_mask")}, output_hidden_states=True).hidden_states
        assert torch.equal(early.encode(enc["input_ids"], enc["attention_mask"]), states[1])


# ------------------------------------------------------------------------------------------------ backbones
@pytest.mark.parametrize(
    "model_type, overrides",
    [
        ("modernbert", {"bos_token_id": 101, "cls_token_id": 101, "eos_token_id": 102, "sep_token_id": 102}),
        ("deberta-v2", {"relative_attention": True, "position_biased_input": False, "pos_att_type": ["p2c", "c2p"]}),
        ("roberta", {"max_position_embeddings": 130, "pad_token_id": 1}),
    ],
)
def test_other_backbones_create_save_load(model_type, overrides, tmp_path, minilm_path):
    folder = save_tiny_encoder(tmp_path / model_type, minilm_path, model_type, **overrides)
    model = GLiClassModel.from_encoder(folder, seed=0).eval()
    enc = encode(model)
    logits = logits_of(model, enc)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    loaded = GLiClassModel.from_pretrained(model.save_pretrained(tmp_path / "ckpt"))
    assert type(loaded.encoder) is type(model.encoder)
    assert torch.allclose(logits_of(loaded, enc), logits, atol=1e-6)
    # RoBERTa's learned table reserves padding_idx + 1 rows; relative/rotary models follow the tokenizer.
    assert model.max_length == (128 if model_type == "roberta" else 512)


def test_usable_length_without_tokenizer_limit(model):
    class NoLimit:
        model_max_length = int(1e30)

    assert usable_length(model.encoder, NoLimit()) == 512  # BERT's learned position table
    assert usable_length(torch.nn.Linear(1, 1), NoLimit()) == 1024  # gliclass's pipeline default
