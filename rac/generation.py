"""Build a RAC training set with the GLiClass seeds' recipe (anchor notes §2.1, "Training-side RAC").

For ``n_samples`` corpus rows picked at random: retrieve up to ``max_examples`` neighbours with cosine >=
``min_similarity`` (never the row itself), keep the top ``m`` with ``m`` uniform in ``1..len(neighbours)``,
swap each kept one for a random label-disjoint example with probability ``noise_rate`` (so the model learns
to distrust irrelevant examples), and when an example has true labels drop its false labels with probability
``drop_false_rate``. One seeded generator drives every draw, so a seed fixes the output.

``sample_rac_items`` returns the draws as structured items (the query and its examples apart), which
training encodes with ``rac.inputs.GLiClassProcessor``, the builder ``predict`` uses. ``generate_rac_dataset``
(``rac generate``) writes every corpus row (the unpicked ones untouched) in the gliclass format
``{"text", "all_labels", "true_labels"}``, the examples appended to the text by that same processor: cut to
model tokens as ``predict`` cuts them, markers spelled out in the data escaped.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rac.embedding import Embedder
from rac.formatting import DEFAULT_EXAMPLE_TOKENS, RACExample
from rac.index import ExampleIndex
from rac.inputs import GLiClassProcessor
from rac.retrieval import Retriever

#: Tries at drawing a label-disjoint random example before settling for any other row.
_UNRELATED_TRIES = 50


def _unrelated(rng: np.random.Generator, corpus: list[RACExample], sample: RACExample) -> tuple[RACExample, bool]:
    """A random corpus row sharing no true label (and no text) with ``sample``; ``(row, disjoint_found)``."""
    labels = set(sample.true_labels)
    candidate = sample
    for _ in range(_UNRELATED_TRIES):
        candidate = corpus[int(rng.integers(len(corpus)))]
        if candidate.text != sample.text and not labels.intersection(candidate.true_labels):
            return candidate, True
    others = [row for row in corpus if row.text != sample.text]
    return (others[int(rng.integers(len(others)))] if others else candidate), False


def _candidate_labels(rng: np.random.Generator, row: RACExample, label_space: list[str], num_negatives: int) -> list[str]:
    """The row's ``all_labels``, else its true labels plus ``num_negatives`` random others, shuffled."""
    if row.all_labels is not None:
        return list(row.all_labels)
    true = set(row.true_labels)
    pool = [label for label in label_space if label not in true]
    picked = rng.choice(len(pool), size=min(num_negatives, len(pool)), replace=False) if pool else []
    labels = list(row.true_labels) + [pool[int(i)] for i in picked]
    return [labels[int(i)] for i in rng.permutation(len(labels))]


def generate_rac_dataset(
    corpus: str | Path | list[RACExample],
    n_samples: int | None = None,
    *,
    tokenizer: Any = None,
    max_example_tokens: int | None = DEFAULT_EXAMPLE_TOKENS,
    **recipe: Any,
) -> tuple[list[dict], dict]:
    """``(items, summary)``: one gliclass item per corpus row, ``n_samples`` of them (default: all) RAC-augmented.

    Example texts are cut to ``max_example_tokens`` tokens of ``tokenizer`` (default: the shipped model's),
    as ``RACClassifier.predict`` cuts them; ``recipe`` is ``sample_rac_items``'s keywords.
    """
    items, summary = sample_rac_items(corpus, n_samples, **recipe)
    summary["params"]["max_example_tokens"] = max_example_tokens
    summary["params"]["tokenizer"] = "rac default model" if tokenizer is None else tokenizer.name_or_path
    if tokenizer is None:
        from rac.model import DEFAULT_MODEL_DIR, load_tokenizer, read_config

        tokenizer = load_tokenizer(DEFAULT_MODEL_DIR, read_config(DEFAULT_MODEL_DIR))
    processor = GLiClassProcessor(tokenizer, max_example_tokens=max_example_tokens)
    for item in items:
        shown = [RACExample.from_dict(example) for example in item.pop("examples")]
        item["text"] = processor.rac_text(item["text"], shown, item["all_labels"])
    return items, summary


def sample_rac_items(
    corpus: str | Path | list[RACExample],
    n_samples: int | None = None,
    *,
    seed: int = 0,
    index: ExampleIndex | None = None,
    embedder: str | Embedder | None = None,
    max_examples: int = 3,
    min_similarity: float = 0.5,
    noise_rate: float = 0.3,
    drop_false_rate: float = 0.5,
    num_negatives: int = 5,
    show_progress: bool | None = None,
) -> tuple[list[dict], dict]:
    """``(items, summary)``: per corpus row ``{"text", "all_labels", "true_labels", "examples"}``, the
    examples (gliclass dicts) drawn for ``n_samples`` rows (default: all), empty for the rest.

    ``index`` reuses a prebuilt index (its stored vectors are reused for corpus rows it contains); otherwise
    the corpus is embedded with ``embedder`` and indexed here.
    """
    from rac.corpus import read_corpus

    for name, rate in (("noise_rate", noise_rate), ("drop_false_rate", drop_false_rate)):
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1], got {rate}")
    if max_examples < 1 or num_negatives < 0:
        raise ValueError(f"need max_examples >= 1 and num_negatives >= 0, got {max_examples}, {num_negatives}")
    rows = read_corpus(corpus) if not isinstance(corpus, list) else list(corpus)
    if not rows:
        raise ValueError("corpus is empty")
    n_samples = len(rows) if n_samples is None else n_samples
    if not 0 <= n_samples <= len(rows):
        raise ValueError(f"n_samples must be between 0 and the corpus size {len(rows)}, got {n_samples}")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(rows), size=n_samples, replace=False))

    if index is None:
        embedder = embedder if isinstance(embedder, Embedder) else Embedder(embedder)
        vectors = embedder.encode([row.text for row in rows], show_progress=show_progress)
        index = ExampleIndex.build(rows, embedder, vectors=vectors)
        query_vectors = vectors[picked]
    else:
        stored = [index.ids_for_text(rows[i].text) for i in picked]
        if all(stored):
            query_vectors = index.vectors([ids[0] for ids in stored])
        else:
            query_vectors = index.embedder.encode([rows[i].text for i in picked], show_progress=show_progress)
    neighbours = Retriever(index, k=max_examples, min_similarity=min_similarity).retrieve(
        [rows[i].text for i in picked], vectors=query_vectors
    )
    retrieved = dict(zip(picked.tolist(), neighbours))
    label_space = sorted({label for r in rows for label in (*r.true_labels, *(r.all_labels or ()))})

    counts: Counter = Counter()
    per_sample: Counter = Counter()
    items = []
    for position, row in enumerate(tqdm(rows, desc="RAC samples", disable=not (show_progress or len(rows) > 20000))):
        candidates = _candidate_labels(rng, row, label_space, num_negatives)
        counts["negatives_sampled_rows"] += row.all_labels is None
        chosen = []
        hits = retrieved.get(position)
        if hits is not None and not hits:
            counts["no_neighbours"] += 1
        if hits:
            for example in hits[: int(rng.integers(1, len(hits) + 1))]:
                if rng.random() < noise_rate:
                    example, disjoint = _unrelated(rng, rows, row)
                    counts["replaced_with_random"] += 1
                    counts["replacement_not_disjoint"] += not disjoint
                if example.true_labels:
                    counts["false_labels_eligible"] += 1
                    if rng.random() < drop_false_rate:
                        example = replace(example, all_labels=example.true_labels)  # no false labels left
                        counts["false_labels_dropped"] += 1
                chosen.append(RACExample(example.text, example.true_labels, example.all_labels).to_dict())
            per_sample[len(chosen)] += 1
        items.append({"text": row.text, "all_labels": candidates, "true_labels": list(row.true_labels),
                      "examples": chosen})

    total = sum(k * v for k, v in per_sample.items())
    summary = {
        "seed": seed,
        "corpus_rows": len(rows),
        "selected": n_samples,
        "augmented": sum(per_sample.values()),
        "untouched": len(rows) - sum(per_sample.values()),
        "selected_without_neighbours": counts["no_neighbours"],
        "examples_per_sample": {str(k): per_sample[k] for k in sorted(per_sample)},
        "examples_total": total,
        "replaced_with_random": counts["replaced_with_random"],
        "replacement_not_disjoint": counts["replacement_not_disjoint"],
        "noise_rate_realized": counts["replaced_with_random"] / total if total else 0.0,
        "false_labels_eligible": counts["false_labels_eligible"],
        "false_labels_dropped": counts["false_labels_dropped"],
        "drop_false_rate_realized": (
            counts["false_labels_dropped"] / counts["false_labels_eligible"] if counts["false_labels_eligible"] else 0.0
        ),
        "rows_with_sampled_negatives": counts["negatives_sampled_rows"],
        "params": {
            "max_examples": max_examples, "min_similarity": min_similarity, "noise_rate": noise_rate,
            "drop_false_rate": drop_false_rate, "num_negatives": num_negatives, "embedder": index.embedder_name,
        },
    }
    return items, summary


def write_jsonl(items: list[dict], path: str | Path) -> Path:
    """Write one JSON object per line atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for item in items:
                handle.write(json.dumps(item, ensure_ascii=False) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
