"""The ``rac`` command line: ``build-index``, ``generate``, ``predict``, ``train``, ``eval``.

Each subcommand is a ``_add_<name>(subparsers)`` that registers its options and a ``_run_<name>(args)``
that does the work; heavy imports happen inside the runner so ``rac --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

# --- build-index ---------------------------------------------------------------------------------


def _corpus_options(p: argparse.ArgumentParser) -> None:
    """Corpus-reading options shared by build-index and generate."""
    p.add_argument("corpus", help="labeled corpus: .csv, .jsonl/.ndjson or .parquet/.pq (format from the suffix)")
    p.add_argument("--text-col", default="text", help="column holding the text (default: %(default)s)")
    p.add_argument(
        "--labels-col", default="labels",
        help="column holding the true labels: a list, a JSON list string or a --label-sep string (default: %(default)s)",
    )
    p.add_argument("--label-sep", default=None, help="split string labels on this separator, e.g. ';' (default: one label per cell)")
    p.add_argument("--all-labels-col", default=None, help="optional column with the label set each row was annotated against")
    p.add_argument(
        "--embedder", default=None,
        help="sentence-transformers name or local folder (default: the packaged all-MiniLM-L6-v2, offline); "
        "the GLiClass seeds used sentence-transformers/paraphrase-MiniLM-L6-v2 (needs hub access once)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_build_index(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "build-index", help="embed a labeled corpus and save an HNSW example index",
        description="Embed every row of CORPUS and save a cosine HNSW index plus the example store. "
        "The corpus is fully validated first; an existing index at --out is replaced atomically, or left untouched on error.",
    )
    _corpus_options(p)
    p.add_argument("--out", default=None, help="index folder (default: index/<corpus file stem>)")
    p.add_argument("--id-col", default=None, help="optional column with a row id kept in the store")
    p.add_argument("--M", type=int, default=None, help="HNSW graph degree; higher = better recall, bigger index")
    p.add_argument("--ef-construction", type=int, default=None, help="HNSW build beam width; higher = better graph, slower build")
    p.add_argument("--ef-search", type=int, default=None, help="HNSW query beam width stored in the index; higher = better recall, slower")
    p.set_defaults(run=_run_build_index)


def _run_build_index(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rac import index as rac_index

    out = Path(args.out) if args.out else Path("index") / Path(args.corpus).stem
    hnsw = {k: v for k, v in (("M", args.M), ("ef_construction", args.ef_construction), ("ef_search", args.ef_search)) if v is not None}
    index = rac_index.build_index(
        args.corpus, out, text_col=args.text_col, labels_col=args.labels_col, label_sep=args.label_sep,
        all_labels_col=args.all_labels_col, id_col=args.id_col, embedder=args.embedder,
        show_progress=False if args.quiet else None, **hnsw,
    )
    print(f"indexed {len(index)} examples ({len(index.label_space())} labels, embedder {index.embedder_name}) -> {out}")
    return 0


# --- generate ------------------------------------------------------------------------------------


def _add_generate(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "generate", help="write a RAC training set (gliclass JSONL) with the GLiClass seeds' recipe",
        description="Pick N random rows, append up to --max-examples retrieved neighbours (cosine >= --min-similarity, "
        "never the row itself), swap each for a random unrelated example with probability --noise-rate, drop an "
        "example's false labels with probability --drop-false-rate. Every corpus row is written; a summary JSON "
        "goes next to the output.",
    )
    _corpus_options(p)
    p.add_argument("--out", required=True, help="output .jsonl of {text, all_labels, true_labels} (written atomically)")
    p.add_argument("-n", "--n-samples", type=int, default=None, help="rows to augment (default: all rows)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed, same output (default: %(default)s)")
    p.add_argument("--index", default=None, help="reuse a saved index folder instead of indexing the corpus")
    p.add_argument("--max-examples", type=int, default=3, help="most neighbours per sample (default: %(default)s)")
    p.add_argument("--min-similarity", type=float, default=0.5, help="cosine threshold for neighbours (default: %(default)s)")
    p.add_argument("--noise-rate", type=float, default=0.3, help="chance each example is swapped for a random unrelated one (default: %(default)s)")
    p.add_argument("--drop-false-rate", type=float, default=0.5, help="chance an example with true labels loses its false labels (default: %(default)s)")
    p.add_argument("--num-negatives", type=int, default=5, help="negatives sampled from the corpus label space for rows without all_labels (default: %(default)s)")
    p.add_argument("--max-example-tokens", type=int, default=None, help="truncate each example text to this many words (default: rac.formatting default)")
    p.add_argument("--summary", default=None, help="where to write the summary JSON (default: OUT with .summary.json)")
    p.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rac.corpus import read_corpus
    from rac.formatting import DEFAULT_EXAMPLE_TOKENS
    from rac.generation import generate_rac_dataset, write_jsonl
    from rac.index import ExampleIndex

    rows = read_corpus(args.corpus, text_col=args.text_col, labels_col=args.labels_col, label_sep=args.label_sep,
                       all_labels_col=args.all_labels_col)
    index = ExampleIndex.load(args.index, args.embedder) if args.index else None
    items, summary = generate_rac_dataset(
        rows, args.n_samples, seed=args.seed, index=index, embedder=args.embedder, max_examples=args.max_examples,
        min_similarity=args.min_similarity, noise_rate=args.noise_rate, drop_false_rate=args.drop_false_rate,
        num_negatives=args.num_negatives, show_progress=False if args.quiet else None,
        max_example_tokens=DEFAULT_EXAMPLE_TOKENS if args.max_example_tokens is None else args.max_example_tokens,
    )
    out = write_jsonl(items, args.out)
    summary_path = Path(args.summary) if args.summary else out.with_suffix(".summary.json")
    write_jsonl([summary], summary_path)
    print(json.dumps(summary, indent=2))
    print(f"wrote {len(items)} items ({summary['augmented']} augmented) -> {out}; summary -> {summary_path}")
    return 0


# --- predict -------------------------------------------------------------------------------------


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="classify texts (zero-shot, or with retrieved examples from --index); JSON lines out",
        description="Texts come from the TEXT arguments, else --input (one text per line, or JSONL with a text "
        "field), else stdin. Prints one JSON object per text: its labels with scores (best first), the predicted "
        "labels and the RAC examples the model saw.",
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (default: read --input or stdin)")
    p.add_argument("-i", "--input", default=None, help="file with one text per line, or .jsonl with a text field")
    p.add_argument("--jsonl", action="store_true", help="read --input/stdin as JSONL even without a .jsonl name")
    p.add_argument("--text-field", default="text", help="JSONL field holding the text (default: %(default)s)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", default=None, help="comma-separated candidate labels, e.g. 'sports,politics'")
    source.add_argument("--labels-file", default=None, help="file with one candidate label per line")
    source.add_argument("--labels-from-index", action="store_true", help="use every label of --index as a candidate")
    p.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: rac's shipped model)")
    p.add_argument("--index", default=None, help="example index folder (rac build-index) for retrieval")
    p.add_argument("--k", type=int, default=3, help="examples retrieved per text; 0 = zero-shot (default: %(default)s)")
    p.add_argument("--min-similarity", type=float, default=0.5, help="cosine threshold for examples (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="multi-label decision threshold (default: %(default)s)")
    p.add_argument("--single-label", action="store_true", help="softmax over the labels and predict only the best one")
    p.add_argument("--vote-weight", type=float, default=None,
                   help="weight of the retrieved examples' labels mixed into the model's scores; 0 = the model alone "
                        "(default: RACClassifier's)")
    p.add_argument("--prompt", default=None, help="task description placed after the labels")
    p.add_argument("--long-text", action="store_true", help="score long texts in overlapping windows instead of truncating")
    p.add_argument("--batch-size", type=int, default=64, help="most sequences per forward pass (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.set_defaults(run=_run_predict)


def _read_lines(path: str | None) -> list[str]:
    """Non-blank lines of ``path`` (``None``: stdin), without their line endings."""
    if path is None:
        return [line.rstrip("\r\n") for line in sys.stdin if line.strip()]
    with open(path, encoding="utf-8") as handle:
        return [line.rstrip("\r\n") for line in handle if line.strip()]


def _predict_texts(args: argparse.Namespace) -> list[str]:
    import json

    if args.texts:
        if args.input:
            raise ValueError("give texts as arguments or with --input, not both")
        return args.texts
    lines = _read_lines(args.input)
    if not (args.jsonl or (args.input or "").endswith(".jsonl")):
        return lines
    texts = []
    for number, line in enumerate(lines, 1):
        row = json.loads(line)
        if not isinstance(row, dict) or args.text_field not in row:
            raise KeyError(f"{args.input or 'stdin'} line {number} has no {args.text_field!r} field")
        texts.append(row[args.text_field])
    return texts


def _run_predict(args: argparse.Namespace) -> int:
    import json

    from rac.classifier import RACClassifier

    if args.labels_from_index and not args.index:
        raise ValueError("--labels-from-index needs --index")
    texts = _predict_texts(args)
    classifier = RACClassifier.from_pretrained(args.model, args.index, device=args.device)
    if args.labels_from_index:
        labels = classifier.index.label_space()
    elif args.labels_file:
        labels = [line.strip() for line in _read_lines(args.labels_file)]
    else:
        labels = [label.strip() for label in args.labels.split(",")]
    results = classifier.predict(
        texts, labels, threshold=args.threshold, multi_label=not args.single_label, k=args.k,
        min_similarity=args.min_similarity, prompt=args.prompt, batch_size=args.batch_size, long_text=args.long_text,
        vote_weight=args.vote_weight,
    )
    for result in results:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    return 0


# --- train ---------------------------------------------------------------------------------------


def _add_train(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train the RAC-aware GLiClass model on the training pool (reproduces rac/default_model)",
        description="Prepare a balanced, half-RAC training set from every dataset under --data-dir (cached under "
        "the run folder's parent), then fine-tune a GLiClass uni-encoder with focal loss. The model (config, "
        "tokenizer, delta on the base encoder) ends in OUT/model; --export copies it to e.g. rac/default_model. "
        "Unset options take the defaults of rac.training.TrainConfig / DataConfig.",
    )
    # (flag, type, help) -> TrainConfig field (or DataConfig field when marked "data").
    options = [
        ("--data-dir", str, "data", "training pool, one folder per dataset (default: /work/shared/data/train)"),
        ("--items", int, "data", "training items prepared from the pool (default 8000)"),
        ("--index-rows", int, "data", "rows per dataset indexed for RAC (default 500)"),
        ("--dev-per-dataset", int, "data", "held-out rows per dataset for the dev loss (default 10)"),
        ("--rac-rate", float, "data", "share of items RAC-augmented (default 0.5)"),
        ("--drop-true-rate", float, "data", "share of items shown none of their true labels (default 0.05)"),
        ("--noise-rate", float, "data", "chance a RAC example is swapped for a random unrelated one (default 0.3)"),
        ("--out", str, "train", "run folder: log, checkpoint, model (default runs/default_model)"),
        ("--encoder", str, "train", "HF encoder name or folder (default: the packaged all-MiniLM-L6-v2)"),
        ("--device", str, "train", "torch device, e.g. cuda (default cpu)"),
        ("--mode", str, "train", "lora | top | full: what trains besides the head (default lora)"),
        ("--lora-r", int, "train", "LoRA rank (default 16)"),
        ("--lora-alpha", int, "train", "LoRA alpha (default 32)"),
        ("--top-layers", int, "train", "layers trained with --mode top (default 2)"),
        ("--pooling-strategy", str, "train", "text vector: avg | first | max (default avg)"),
        ("--class-token-pooling", str, "train", "label vector: average | first (default average)"),
        ("--head", str, "train", "cosine | dot: scorer and projector start (default cosine, see rac.training.HEADS)"),
        ("--logit-scale", float, "train", "starting scale of the cosine head's logits (default 10)"),
        ("--max-length", int, "train", "training sequence length in tokens (default 192)"),
        ("--batch-size", int, "train", "items per step (default 16)"),
        ("--steps", int, "train", "optimizer steps (default: one pass over the items)"),
        ("--encoder-lr", float, "train", "backbone LR (default 5e-4 for LoRA, 5e-5 otherwise)"),
        ("--head-lr", float, "train", "LR of the head and the added token rows (default 1e-3)"),
        ("--warmup-ratio", float, "train", "share of steps with linear warm-up (default 0.06)"),
        ("--focal-alpha", float, "train", "focal loss alpha, <0 disables (default 0.75)"),
        ("--focal-gamma", float, "train", "focal loss gamma, 0 gives BCE (default 2)"),
        ("--max-grad-norm", float, "train", "gradient clipping norm (default 1)"),
        ("--label-code-rate", float, "train", "share of RAC items whose label names are swapped for made-up codes, "
         "so only the examples tell the answer (default 0)"),
        ("--eval-every", int, "train", "steps between dev-loss evaluations (default 50)"),
        ("--save-every-minutes", float, "train", "minutes between checkpoints (default 5)"),
        ("--max-minutes", float, "train", "stop, with a checkpoint and a model, after this much training time"),
        ("--stop-after", int, "train", "stop at this step of the --steps schedule (reproduces a time-limited run)"),
        ("--seed", int, "train", "seeds data preparation, initialisation and batch order (default 0)"),
    ]
    for flag, kind, _group, text in options:
        p.add_argument(flag, type=kind, default=None, help=text)
    p.add_argument("--datasets", default=None, help="comma-separated subset of the pool (default: all)")
    p.add_argument("--resume", action="store_true", help="continue OUT/checkpoint")
    p.add_argument("--export", default=None, metavar="DIR", help="copy the model files to DIR (e.g. rac/default_model)")
    p.set_defaults(run=_run_train, train_options=[(f[2:].replace("-", "_"), g) for f, _, g, _ in options])


def _run_train(args: argparse.Namespace) -> int:
    from rac.training import DataConfig, TrainConfig, export_model, train

    renames = {"items": "n_items", "out": "out_dir"}
    chosen = {g: {} for g in ("data", "train")}
    for name, group in args.train_options:
        if getattr(args, name) is not None:
            chosen[group][renames.get(name, name)] = getattr(args, name)
    if args.datasets:
        chosen["data"]["datasets"] = [d for d in args.datasets.split(",") if d]
    if "seed" in chosen["train"]:
        chosen["data"]["seed"] = chosen["train"]["seed"]
    summary = train(TrainConfig(**chosen["train"], data=DataConfig(**chosen["data"])), resume=args.resume)
    print(f"steps {summary['step']}/{summary['total_steps']}, dev loss {summary['history'][-1]['dev_loss']:.4f}, "
          f"model in {summary['model_dir']}")
    if args.export:
        export_model(summary["model_dir"], args.export)
        print(f"exported to {args.export}")
    return 0


# --- eval ----------------------------------------------------------------------------------------


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    from rac.evaluation import DEFAULT_MAX_CORPUS, DEFAULT_MAX_QUERIES, DEFAULT_VOTE_K

    p = subparsers.add_parser(
        "eval", help="accuracy on labeled dataset folders: the model at each k vs embedding zero-shot and retrieval vote",
        description="Each DATASET_DIR holds train.jsonl and test.jsonl ({\"text\", \"labels\"} lines); with no "
        "train.jsonl a seeded half of test is the corpus. The corpus is indexed, a seeded sample of test is "
        "scored against every label of the dataset, and a table is printed (--out also writes JSON + Markdown).",
    )
    p.add_argument("datasets", nargs="+", metavar="DATASET_DIR", help="dataset folders")
    p.add_argument("--k", default="0,1,2,3", help="comma-separated numbers of RAC examples (default: %(default)s)")
    p.add_argument("--max-queries", type=int, default=DEFAULT_MAX_QUERIES,
                   help="test rows scored per dataset, seeded sample; 0 = all (default: %(default)s)")
    p.add_argument("--max-corpus", type=int, default=DEFAULT_MAX_CORPUS,
                   help="corpus rows indexed per dataset, seeded sample; 0 = all (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the query sample and corpus split (default: %(default)s)")
    p.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: rac's shipped model)")
    p.add_argument("--embedder", default=None, help="sentence-transformers model for retrieval (default: packaged MiniLM)")
    p.add_argument("--min-similarity", type=float, default=0.5, help="cosine threshold for examples (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="multi-label decision threshold (default: %(default)s)")
    p.add_argument("--vote-k", type=int, default=DEFAULT_VOTE_K,
                   help="neighbours counted by the retrieval-vote baseline (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default: %(default)s)")
    p.add_argument("--max-labels-per-pass", type=int, default=None,
                   help="labels scored together in one sequence; larger sets take more passes "
                        "(default: the model's max_num_classes)")
    p.add_argument("--vote-weight", type=float, default=None,
                   help="weight of the retrieved examples' labels mixed into the model's scores; 0 = the model alone "
                        "(default: RACClassifier's)")
    p.add_argument("--out", default=None, help="write OUT.json (all numbers + config) and OUT.md (tables)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(run=_run_eval)


def _eval_command(args: argparse.Namespace) -> str:
    """The ``rac eval`` command line that reproduces ``args``, every setting spelled out."""
    import shlex

    parts = ["rac", "eval", *args.datasets, "--k", args.k, "--max-queries", str(args.max_queries), "--max-corpus",
             str(args.max_corpus), "--seed", str(args.seed), "--min-similarity", str(args.min_similarity),
             "--threshold", str(args.threshold), "--vote-k", str(args.vote_k)]
    for option in ("model", "embedder", "max_labels_per_pass", "vote_weight", "out"):
        if getattr(args, option) is not None:
            parts += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    return shlex.join(parts)


def _run_eval(args: argparse.Namespace) -> int:
    from rac.evaluation import evaluate

    try:
        ks = [int(k) for k in args.k.split(",") if k.strip()]
    except ValueError:
        raise ValueError(f"--k must be comma-separated integers, got {args.k!r}") from None
    report = evaluate(
        args.datasets, model=args.model, embedder=args.embedder, ks=ks, vote_k=args.vote_k,
        max_queries=args.max_queries or None, max_corpus=args.max_corpus or None, seed=args.seed,
        threshold=args.threshold, min_similarity=args.min_similarity, batch_size=args.batch_size,
        max_labels_per_pass=args.max_labels_per_pass, vote_weight=args.vote_weight, progress=not args.no_progress,
        command=_eval_command(args),
    )
    print(report.table())
    if args.out:
        for path in report.write(args.out):
            print(f"wrote {path}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rac",
        description="Retrieval-augmented zero-shot text classification (GLiClass uni-encoder + HNSW index).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, value in sorted(globals().items()):
        if name.startswith("_add_") and callable(value):
            value(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        print(f"rac {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
