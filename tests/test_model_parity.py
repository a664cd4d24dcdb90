"""rac.model against the reference ``gliclass==0.1.21``: same input ids, same logits (max abs diff <= 1e-5).

Reference checkpoints are built with gliclass's own GLiClassModelConfig/GLiClassModel on small random
backbones (2-layer BERT with the MiniLM tokenizer, tiny DeBERTa-v2 and ModernBERT) and on the real MiniLM
weights, every parameter jittered so that zero biases cannot hide a wrong key or a skipped layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

gliclass = pytest.importorskip("gliclass")

from gliclass import GLiClassModel as ReferenceModel  # noqa: E402
from gliclass import GLiClassModelConfig  # noqa: E402
from gliclass.pipeline import UniEncoderZeroShotClassificationPipeline  # noqa: E402
from gliclass.utils import retrieval_augmented_text  # noqa: E402
from transformers import AutoConfig, AutoTokenizer  # noqa: E402

from rac.formatting import (  # noqa: E402
    EXAMPLE_TOKEN,
    GLICLASS_TOKENS,
    LABEL_TOKEN,
    RAC_TOKENS,
    SEP_TOKEN,
    RACExample,
    append_examples,
    build_model_input,
)
from rac.model import PAD_LOGIT, GLiClassModel  # noqa: E402

TOL = 1e-5

TEXTS = [
    "The striker scored twice before half time.",
    "Markets fell sharply after the central bank raised interest rates again, and analysts now expect a "
    "long recession that will hit exporters and small businesses alike.",
    "Vote!",
    "A new vaccine trial reported strong results in older patients.",
]
LABELS = [
    ["sports", "finance", "politics"],
    ["economy", "finance", "health", "sports", "Weather"],
    ["politics", "elections"],
    ["Health", "science", "sports", "technology"],
]
PROMPTS = ["Classify the topic:", "", "What is this about?", ""]
# One false label per example: gliclass orders false labels by set() iteration, which is hash-seed dependent.
RAC = [
    [],
    [
        {"text": "Stocks slid on rate fears.", "true_labels": ["finance"], "all_labels": ["finance", "sports"]},
        {"text": "GDP shrank last quarter.", "true_labels": ["economy"], "all_labels": ["economy", "health"]},
    ],
    [{"text": "Polls open at nine.", "true_labels": ["elections"], "all_labels": ["elections", "sports"]}],
    [],
]

#: Option combinations published checkpoints can use, covering every value of every supported option.
COMBOS: list[dict[str, Any]] = [
    {},
    {"prompt_first": True},
    {"prompt_first": True, "pooling_strategy": "avg"},
    {"pooling_strategy": "max", "scorer_type": "mlp"},
    {"prompt_first": True, "class_token_pooling": "average", "scorer_type": "weighted-dot"},
    {"class_token_pooling": "average", "extract_text_features": True, "pooling_strategy": "avg"},
    {"prompt_first": True, "extract_text_features": True, "normalize_features": True},
    {"prompt_first": True, "embed_class_token": False, "scorer_type": "mlp", "normalize_features": True},
    {
        "embed_class_token": False,
        "class_token_pooling": "average",
        "pooling_strategy": "max",
        "extract_text_features": True,
    },
    {"prompt_first": True, "class_token_pooling": "average", "embed_class_token": False, "pooling_strategy": "avg"},
    {"prompt_first": True, "encoder_layer_id": 1, "layer_wise": True, "hidden_size": 32},
    {"encoder_layer_id": -2, "layer_wise": True, "scorer_type": "weighted-dot", "normalize_features": True},
]


def combo_id(options: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items()) or "gliclass-defaults"


# ------------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="session")
def gliclass_tokenizer(minilm_path: str) -> Any:
    """MiniLM tokenizer with the GLiClass and RAC tokens added, as a rac-trained checkpoint ships it."""
    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.add_tokens([*GLICLASS_TOKENS, *RAC_TOKENS], special_tokens=True)
    return tokenizer


def tiny_backbone_config(kind: str, minilm_path: str, vocab_size: int) -> dict[str, Any]:
    """A 2-layer, 64-wide random backbone config of the given family that reads MiniLM token ids."""
    small = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
    if kind == "bert":
        config = AutoConfig.from_pretrained(minilm_path)
        for key, value in small.items():
            setattr(config, key, value)
        return config.to_dict()
    if kind == "deberta-v2":
        options = {
            "relative_attention": True,
            "position_biased_input": False,
            "pos_att_type": ["p2c", "c2p"],
            "max_relative_positions": -1,
            "position_buckets": 32,
            "norm_rel_ebd": "layer_norm",
            "share_att_key": True,
            "pad_token_id": 0,
        }
    else:
        options = {"pad_token_id": 0, "bos_token_id": 101, "cls_token_id": 101, "eos_token_id": 102, "sep_token_id": 102}
    return AutoConfig.for_model(kind, vocab_size=vocab_size, **small, **options).to_dict()


def build_reference(
    folder: Path,
    tokenizer: Any,
    encoder_config: dict[str, Any],
    encoder_name: str,
    *,
    pretrained_encoder: bool = False,
    **options: Any,
) -> ReferenceModel:
    """Create, jitter and save a gliclass checkpoint with gliclass's own classes; returns it in eval mode."""
    ids = tokenizer.convert_tokens_to_ids([LABEL_TOKEN, SEP_TOKEN, EXAMPLE_TOKEN])
    config = GLiClassModelConfig(
        encoder_config=dict(encoder_config),
        encoder_model=encoder_name,
        class_token_index=ids[0],
        text_token_index=ids[1],
        example_token_index=ids[2],
        vocab_size=len(tokenizer),
        **options,
    )
    torch.manual_seed(1234)
    model = ReferenceModel(config, from_pretrained=pretrained_encoder)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not pretrained_encoder or "encoder_model" not in name:
                param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model.eval()


def reference_inputs(reference: ReferenceModel, tokenizer: Any, max_length: int, **kwargs: Any) -> dict:
    """The reference pipeline's tokenised batch (RAC text rewriting as ``__call__`` does it)."""
    pipe = UniEncoderZeroShotClassificationPipeline(
        reference, tokenizer, max_length=max_length, device="cpu", progress_bar=False
    )
    texts = [retrieval_augmented_text(t, ex) for t, ex in zip(kwargs.pop("texts", TEXTS), kwargs.pop("rac", RAC))]
    labels = kwargs.pop("labels", LABELS)
    same = isinstance(labels[0], str)
    return dict(pipe.prepare_inputs(texts, labels, same, prompt=kwargs.pop("prompts", PROMPTS)))


def rac_inputs(model: GLiClassModel, texts=TEXTS, labels=LABELS, prompts=PROMPTS, rac=RAC) -> dict:
    """The same batch built the rac way: rac.formatting strings + the model's tokenizer."""
    strings = []
    for i, text in enumerate(texts):
        labels_i = labels if isinstance(labels[0], str) else labels[i]
        examples = [RACExample.from_dict(e) for e in rac[i]]
        full_text = append_examples(text, examples, labels_i, max_example_tokens=None)
        strings.append(
            build_model_input(full_text, labels_i, prompt=prompts[i], prompt_first=model.config.prompt_first)
        )
    return dict(
        model.tokenizer(strings, truncation=True, max_length=model.max_length, padding="longest", return_tensors="pt")
    )


@torch.no_grad()
def reference_logits(reference: ReferenceModel, enc: dict, max_num_classes: int | None) -> torch.Tensor:
    return reference(**enc, max_num_classes=max_num_classes).logits


@torch.no_grad()
def rac_logits(model: GLiClassModel, enc: dict, num_labels: int | None = None, compat: bool = False) -> torch.Tensor:
    model.reference_compat = compat
    try:
        return model(enc["input_ids"], enc["attention_mask"], num_labels)
    finally:
        model.reference_compat = False


def assert_same_ids(ref_enc: dict, our_enc: dict) -> None:
    assert torch.equal(ref_enc["input_ids"], our_enc["input_ids"])
    assert torch.equal(ref_enc["attention_mask"], our_enc["attention_mask"])


@pytest.fixture(scope="module")
def bert_config(minilm_path: str, gliclass_tokenizer: Any) -> dict[str, Any]:
    return tiny_backbone_config("bert", minilm_path, len(gliclass_tokenizer))


# ----------------------------------------------------------------------------------------------- the tests
@pytest.mark.parametrize("options", COMBOS, ids=combo_id)
def test_option_parity(options, tmp_path, gliclass_tokenizer, bert_config, minilm_path):
    reference = build_reference(tmp_path, gliclass_tokenizer, bert_config, minilm_path, **options)
    model = GLiClassModel.from_pretrained(tmp_path)
    k = max(len(labels) for labels in LABELS)

    ref_enc = reference_inputs(reference, gliclass_tokenizer, model.max_length)
    enc = rac_inputs(model)
    assert_same_ids(ref_enc, enc)

    expected = reference_logits(reference, ref_enc, k)
    compat = rac_logits(model, enc, compat=True, num_labels=k)
    assert expected.shape == compat.shape == (len(TEXTS), k)
    assert (compat - expected).abs().max().item() <= TOL

    default = rac_logits(model, enc)  # K = most labels in the batch
    mask = model.label_mask(enc["input_ids"])
    assert mask.sum(-1).tolist() == [len(labels) for labels in LABELS]
    assert torch.all(default[~mask] == PAD_LOGIT)
    if options.get("pooling_strategy", "first") == "first":
        assert (default[mask] - expected[mask]).abs().max().item() <= TOL
        return
    # Masked pooling makes every row's logits independent of what it is batched with.
    for row in range(len(TEXTS)):
        single = rac_inputs(model, TEXTS[row : row + 1], LABELS[row : row + 1], PROMPTS[row : row + 1], RAC[row : row + 1])
        alone = rac_logits(model, single)[0]
        n = len(LABELS[row])
        assert (alone[:n] - default[row, :n]).abs().max().item() <= TOL


@pytest.mark.parametrize("strategy", ["avg", "max"])
def test_unmasked_pooling_bug_reproduced_only_in_compat(strategy, tmp_path, gliclass_tokenizer, bert_config, minilm_path):
    """gliclass pools avg/max over padding: its scores change with the batch; rac's default does not."""
    reference = build_reference(tmp_path, gliclass_tokenizer, bert_config, minilm_path, pooling_strategy=strategy)
    model = GLiClassModel.from_pretrained(tmp_path)
    labels = LABELS[0]
    batch = rac_inputs(model, TEXTS[:2], labels, PROMPTS[:2], [[], []])
    alone = rac_inputs(model, TEXTS[:1], labels, PROMPTS[:1], [[]])
    ref_batched = reference_logits(reference, batch, len(labels))[0]
    ref_alone = reference_logits(reference, alone, len(labels))[0]
    assert (ref_batched - ref_alone).abs().max().item() > 1e-4  # the documented bug
    assert (rac_logits(model, batch, compat=True)[0, :3] - ref_batched).abs().max().item() <= TOL
    # Without padding, masked and unmasked pooling agree: rac's batched row equals gliclass on the lone text.
    assert (rac_logits(model, batch)[0] - ref_alone).abs().max().item() <= TOL


def test_labels_past_max_num_classes(tmp_path, gliclass_tokenizer, bert_config, minilm_path):
    """With no label count, gliclass keeps 25 slots and drops the rest; rac keeps all unless compat."""
    reference = build_reference(tmp_path, gliclass_tokenizer, bert_config, minilm_path, prompt_first=True)
    model = GLiClassModel.from_pretrained(tmp_path)
    labels = [f"label {i}" for i in range(30)]
    enc = rac_inputs(model, TEXTS[:2], labels, ["", ""], [[], []])
    assert_same_ids(reference_inputs(reference, gliclass_tokenizer, model.max_length, texts=TEXTS[:2], labels=labels, prompts=["", ""], rac=[[], []]), enc)

    dropped = reference_logits(reference, enc, None)
    assert dropped.shape == (2, 25)
    compat = rac_logits(model, enc, compat=True)
    assert compat.shape == (2, 25) and (compat - dropped).abs().max().item() <= TOL

    full = reference_logits(reference, enc, 30)
    default = rac_logits(model, enc)
    assert default.shape == (2, 30) and (default - full).abs().max().item() <= TOL
    with pytest.raises(ValueError, match="num_labels=25"):
        rac_logits(model, enc, num_labels=25)


def test_truncated_labels(tmp_path, gliclass_tokenizer, bert_config, minilm_path):
    """prompt_first=False + truncation cuts labels off; gliclass scores them from the bias, rac marks them."""
    reference = build_reference(tmp_path, gliclass_tokenizer, bert_config, minilm_path, prompt_first=False)
    texts = [TEXTS[1], TEXTS[0]]
    labels = ["economy", "finance", "health", "sports", "weather"]
    # room for [CLS] + the long text + [SEP] + "<<LABEL>>economy<<LABEL>>finance<<LABEL>>": 3 of 5 labels survive
    max_length = len(gliclass_tokenizer(texts[0])["input_ids"]) + 5
    model = GLiClassModel.from_pretrained(tmp_path, max_length=max_length)
    kwargs = {"texts": texts, "labels": labels, "prompts": ["", ""], "rac": [[], []]}
    enc = rac_inputs(model, texts, labels, ["", ""], [[], []])
    assert_same_ids(reference_inputs(reference, gliclass_tokenizer, max_length, **kwargs), enc)

    mask = model.label_mask(enc["input_ids"], len(labels))
    assert mask[1].all() and mask[0].sum() == 3
    expected = reference_logits(reference, enc, len(labels))
    assert (rac_logits(model, enc, len(labels), compat=True) - expected).abs().max().item() <= TOL
    default = rac_logits(model, enc, len(labels))
    assert torch.all(default[~mask] == PAD_LOGIT)
    assert (default[mask] - expected[mask]).abs().max().item() <= TOL
    assert torch.all(expected[~mask] != PAD_LOGIT)  # the reference returns a bias-only "score"


def test_long_input_window(tmp_path, gliclass_tokenizer, bert_config, minilm_path):
    """gliclass's pipeline truncates at 1024, past BERT's 512 positions: it crashes where rac truncates at 512."""
    reference = build_reference(tmp_path, gliclass_tokenizer, bert_config, minilm_path, prompt_first=True)
    model = GLiClassModel.from_pretrained(tmp_path)
    texts, labels, no_extras = ["word " * 700, "short"], ["a", "b"], {"prompts": ["", ""], "rac": [[], []]}
    at_1024 = reference_inputs(reference, gliclass_tokenizer, 1024, texts=texts, labels=labels, **no_extras)
    assert at_1024["input_ids"].shape[1] > 512
    with pytest.raises(RuntimeError):
        reference_logits(reference, at_1024, 2)
    enc = rac_inputs(model, texts, labels, ["", ""], [[], []])
    assert enc["input_ids"].shape[1] == model.max_length == 512
    assert_same_ids(reference_inputs(reference, gliclass_tokenizer, 512, texts=texts, labels=labels, **no_extras), enc)
    assert (rac_logits(model, enc) - reference_logits(reference, enc, 2)).abs().max().item() <= TOL


@pytest.mark.parametrize("kind", ["deberta-v2", "modernbert"])
@pytest.mark.parametrize("options", [COMBOS[1], COMBOS[5]], ids=combo_id)
def test_other_backbones(kind, options, tmp_path, gliclass_tokenizer, minilm_path):
    config = tiny_backbone_config(kind, minilm_path, len(gliclass_tokenizer))
    reference = build_reference(tmp_path, gliclass_tokenizer, config, kind, **options)
    model = GLiClassModel.from_pretrained(tmp_path)
    assert type(model.encoder) is type(reference.model.encoder_model)
    enc = rac_inputs(model)
    assert_same_ids(reference_inputs(reference, gliclass_tokenizer, model.max_length), enc)
    k = max(len(labels) for labels in LABELS)
    expected = reference_logits(reference, enc, k)
    assert (rac_logits(model, enc, k, compat=True) - expected).abs().max().item() <= TOL


def test_real_minilm_checkpoint_and_pipeline_scores(tmp_path, gliclass_tokenizer, minilm_path):
    """A gliclass checkpoint on the real MiniLM weights: logits and the pipeline's sigmoid scores."""
    encoder_config = AutoConfig.from_pretrained(minilm_path).to_dict()
    reference = build_reference(
        tmp_path, gliclass_tokenizer, encoder_config, minilm_path, pretrained_encoder=True, prompt_first=True
    )
    model = GLiClassModel.from_pretrained(tmp_path)
    assert model.max_length == 512
    enc = rac_inputs(model)
    assert_same_ids(reference_inputs(reference, gliclass_tokenizer, model.max_length), enc)
    logits = rac_logits(model, enc)
    k = logits.shape[1]
    mask = model.label_mask(enc["input_ids"])
    assert (logits[mask] - reference_logits(reference, enc, k)[mask]).abs().max().item() <= TOL

    pipe = UniEncoderZeroShotClassificationPipeline(reference, gliclass_tokenizer, max_length=512, device="cpu", progress_bar=False)
    results = pipe(TEXTS, LABELS, threshold=0.0, rac_examples=RAC, prompt=PROMPTS)
    ours = torch.sigmoid(logits)
    for row, result in enumerate(results):
        assert [r["label"] for r in result] == LABELS[row]
        got = torch.tensor([r["score"] for r in result])
        assert (ours[row, : len(LABELS[row])] - got).abs().max().item() <= TOL


def test_rac_saved_model_loads_in_gliclass(tmp_path, minilm_path):
    """save_pretrained writes gliclass's layout: gliclass's own loader gives the same logits."""
    model = GLiClassModel.from_encoder(
        minilm_path, seed=3, pooling_strategy="avg", scorer_type="weighted-dot", normalize_features=True
    ).eval()
    with torch.no_grad():  # a trained-looking head: non-zero biases, non-default logit scale
        for name, param in model.named_parameters():
            if not name.startswith("encoder."):
                param.add_(torch.randn_like(param) * 0.05)
    model.save_pretrained(tmp_path / "ckpt")
    reference = ReferenceModel.from_pretrained(tmp_path / "ckpt").eval()
    assert reference.config.prompt_first is True and reference.config.scorer_type == "weighted-dot"
    enc = rac_inputs(model)
    k = max(len(labels) for labels in LABELS)
    expected = reference_logits(reference, enc, k)
    assert (rac_logits(model, enc, k, compat=True) - expected).abs().max().item() <= TOL
