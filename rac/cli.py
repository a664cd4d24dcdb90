"""The ``rac`` command line: ``build-index``, ``generate``, ``predict``, ``train``, ``eval``.

Each subcommand is a ``_add_<name>(subparsers)`` that registers its options and a ``_run_<name>(args)``
that does the work; heavy imports happen inside the runner so ``rac --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rac.index import ExampleIndex

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
    _dtype_option(p, "the embedder")


def _dtype_option(p: argparse.ArgumentParser, what: str) -> None:
    """``--dtype``: the precision ``what`` computes in (``rac.precision``; weights stay float32)."""
    p.add_argument("--dtype", default=None, help=f"precision of {what}: auto | float32 | bfloat16 | float16 (CUDA "
                   "only); weights stay float32 (default: auto, bfloat16 where the CPU or GPU runs it natively)")


def _refuse_output_over_input(outputs: list[Path], inputs: list[str | Path]) -> None:
    """An output that is an input (or a folder holding one) would destroy what the command reads."""
    for output in outputs:
        for given in inputs:
            source = Path(given).resolve()
            if output.resolve() == source or output.resolve() in source.parents:
                raise ValueError(f"{output}: is the input {given}{'' if output.resolve() == source else ' or holds it'}; "
                                 "write the output elsewhere")


def _no_shortlist_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-shortlist", action="store_true",
                   help="score every candidate label, in passes of at most the labels per pass (25), instead of "
                        "a one-pass shortlist of that many (rac.shortlist)")


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
    p.add_argument("--overwrite", action="store_true",
                   help="replace whatever --out holds; without it only an empty folder or a rac index is replaced")
    p.set_defaults(run=_run_build_index)


def _run_build_index(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rac import index as rac_index

    out = Path(args.out) if args.out else Path("index") / Path(args.corpus).stem
    _refuse_output_over_input([out], [args.corpus])
    hnsw = {k: v for k, v in (("M", args.M), ("ef_construction", args.ef_construction), ("ef_search", args.ef_search)) if v is not None}
    index = rac_index.build_index(
        args.corpus, out, text_col=args.text_col, labels_col=args.labels_col, label_sep=args.label_sep,
        all_labels_col=args.all_labels_col, id_col=args.id_col, embedder=args.embedder,
        show_progress=False if args.quiet else None, dtype=args.dtype, overwrite=args.overwrite, **hnsw,
    )
    print(f"indexed {len(index)} examples ({len(index.label_space())} labels, embedder {index.embedder_name}, "
          f"{index.embedder_dtype}) -> {out}")
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
    p.add_argument("--max-example-tokens", type=int, default=None, help="cut each example text to this many model tokens, as predict does (default: rac.formatting default)")
    p.add_argument("--summary", default=None, help="where to write the summary JSON (default: OUT with .summary.json)")
    p.set_defaults(run=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from rac.corpus import read_corpus
    from rac.embedding import Embedder
    from rac.formatting import DEFAULT_EXAMPLE_TOKENS
    from rac.generation import generate_rac_dataset, write_jsonl
    from rac.index import ExampleIndex

    summary_path = Path(args.summary) if args.summary else Path(args.out).with_suffix(".summary.json")
    _refuse_output_over_input([Path(args.out), summary_path], [args.corpus, *([args.index] if args.index else [])])
    rows = read_corpus(args.corpus, text_col=args.text_col, labels_col=args.labels_col, label_sep=args.label_sep,
                       all_labels_col=args.all_labels_col)
    index = ExampleIndex.load(args.index, args.embedder, dtype=args.dtype) if args.index else None
    embedder = Embedder(args.embedder, dtype=args.dtype) if index is None else None
    items, summary = generate_rac_dataset(
        rows, args.n_samples, seed=args.seed, index=index, embedder=embedder, max_examples=args.max_examples,
        min_similarity=args.min_similarity, noise_rate=args.noise_rate, drop_false_rate=args.drop_false_rate,
        num_negatives=args.num_negatives, show_progress=False if args.quiet else None,
        max_example_tokens=DEFAULT_EXAMPLE_TOKENS if args.max_example_tokens is None else args.max_example_tokens,
    )
    out = write_jsonl(items, args.out)
    write_jsonl([summary], summary_path)
    print(json.dumps(summary, indent=2))
    print(f"wrote {len(items)} items ({summary['augmented']} augmented) -> {out}; summary -> {summary_path}")
    return 0


# --- predict -------------------------------------------------------------------------------------


def _add_predict(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict", help="classify texts (zero-shot, or with retrieved examples from --index); JSON lines out",
        description="Texts come from the TEXT arguments, else --input (CSV, JSONL or Parquet read like "
        "build-index, else one text per line), else stdin. Prints one JSON object per text: its labels with scores "
        "(best first), the predicted labels and the RAC examples the model saw. With --output, writes the input "
        "rows plus the columns predicted, scores (JSON), example_ids and error instead (a row with an empty text "
        "gets an error, the others are still classified; exit status 1 then); --ray computes them on Ray.",
    )
    p.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify (default: read --input or stdin)")
    p.add_argument("-i", "--input", default=None,
                   help=".csv, .jsonl/.ndjson or .parquet/.pq with a --text-col column; any other file: one text per line")
    p.add_argument("--jsonl", action="store_true", help="read --input/stdin as JSONL even without a .jsonl name")
    p.add_argument("--text-col", "--text-field", dest="text_col", default="text",
                   help="column (JSONL field) holding the text (default: %(default)s)")
    p.add_argument("-o", "--output", default=None,
                   help="write rows to this .parquet/.pq or .jsonl/.ndjson file (written whole, then renamed) "
                        "instead of JSON lines to stdout")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="classify on Ray (needs rac[ray] and --output): alone, a local Ray instance; with an address "
                        "(ray://host:10001, auto), an existing cluster")
    p.add_argument("--num-workers", type=int, default=None,
                   help="Ray actors, each loading the model once (default: the cluster's CPUs / --cpus-per-worker)")
    p.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs each Ray actor reserves (default: %(default)s)")
    p.add_argument("--gpus-per-worker", type=float, default=0,
                   help="GPUs each Ray actor reserves; > 0 runs the model on CUDA (default: %(default)s)")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--labels", default=None, help="comma-separated candidate labels, e.g. 'sports,politics'")
    source.add_argument("--labels-file", default=None, help="file with one candidate label per line")
    source.add_argument("--labels-from-index", action="store_true", help="use every label of --index as a candidate")
    p.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: rac's shipped model)")
    p.add_argument("--index", default=None, help="example index folder (rac build-index) for retrieval")
    p.add_argument("--embedder", default=None,
                   help="the --index's embedder, when it is a local folder (rac does not load a folder an index "
                        "names by itself) or a hub model not in the local cache (default: the one the index names)")
    p.add_argument("--k", type=int, default=3, help="examples retrieved per text; 0 = zero-shot (default: %(default)s)")
    p.add_argument("--min-similarity", type=float, default=0.5, help="cosine threshold for examples (default: %(default)s)")
    p.add_argument("--threshold", type=float, default=0.5, help="multi-label decision threshold (default: %(default)s)")
    p.add_argument("--single-label", action="store_true", help="softmax over the labels and predict only the best one")
    p.add_argument("--knn-k", type=int, default=None,
                   help="neighbours the fusion's kNN share counts (default: the classifier's, 10)")
    p.add_argument("--no-fusion", action="store_true",
                   help="the model's own scores, without the evidence fusion (gliclass's scores)")
    _no_shortlist_option(p)
    p.add_argument("--prompt", default=None, help="task description placed after the labels")
    p.add_argument("--long-text", action="store_true", help="score long texts in overlapping windows instead of truncating")
    p.add_argument("--batch-size", type=int, default=64, help="most sequences per forward pass (default: %(default)s)")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    _dtype_option(p, "the model and the embedder")
    p.set_defaults(run=_run_predict)


def _read_lines(path: str | None) -> list[tuple[int, str]]:
    """``(line number, line)`` for the non-blank lines of ``path`` (``None``: stdin), without their endings;
    bytes that are not UTF-8 are an error naming the file and line."""
    from rac.corpus import text_lines

    if path is None:  # decode stdin's bytes here too, unless it is already text (a StringIO put in its place)
        buffer = getattr(sys.stdin, "buffer", None)
        lines = enumerate(sys.stdin, start=1) if buffer is None else text_lines("stdin", buffer)
    else:
        lines = text_lines(path)
    return [(number, line.rstrip("\r\n")) for number, line in lines if line.strip()]


def _predict_texts(args: argparse.Namespace) -> list[str]:
    import json

    if args.texts:
        if args.input:
            raise ValueError("give texts as arguments or with --input, not both")
        return args.texts
    if _is_table(args.input):
        from rac.corpus import read_frame

        return read_frame(args.input, [args.text_col])[args.text_col].tolist()
    lines = _read_lines(args.input)
    if not (args.jsonl or (args.input or "").endswith(".jsonl")):
        return [line for _, line in lines]
    texts = []
    for number, line in lines:
        where = f"{args.input or 'stdin'}: line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: malformed JSON: {err.msg} at char {err.pos}") from None
        if not isinstance(row, dict) or args.text_col not in row:
            raise KeyError(f"{where} has no {args.text_col!r} field")
        if not isinstance(row[args.text_col], str):
            raise ValueError(f"{where}: field {args.text_col!r} must be a string, got {row[args.text_col]!r}")
        texts.append(row[args.text_col])
    return texts


def _is_table(path: str | None, *, rows: bool = False) -> bool:
    """CSV and Parquet inputs are read as tables; JSONL too when ``rows`` are written (``--output``)."""
    from rac.corpus import FORMATS

    kinds = ("csv", "parquet", "jsonl") if rows else ("csv", "parquet")
    return path is not None and FORMATS.get(Path(path).suffix.lower()) in kinds


def _predict_labels(args: argparse.Namespace, index: ExampleIndex | None) -> list[str]:
    if args.labels_from_index:
        return index.label_space()
    if args.labels_file:
        return [line.strip() for _, line in _read_lines(args.labels_file)]
    return [label.strip() for label in args.labels.split(",")]


def _run_predict(args: argparse.Namespace) -> int:
    import json

    if args.labels_from_index and not args.index:
        raise ValueError("--labels-from-index needs --index")
    if args.ray is not None and not args.output:
        raise ValueError("--ray writes rows to a file: give --output OUT.parquet (or .jsonl)")
    options = {"threshold": args.threshold, "multi_label": not args.single_label, "k": args.k,
               "min_similarity": args.min_similarity, "prompt": args.prompt, "long_text": args.long_text}
    if args.output:
        return _predict_rows(args, options)
    texts = _predict_texts(args)
    classifier = _predict_classifier(args)
    results = classifier.predict(texts, _predict_labels(args, classifier.index), batch_size=args.batch_size, **options)
    for result in results:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    return 0


def _predict_classifier(args: argparse.Namespace) -> Any:
    """The classifier ``rac predict``'s options describe."""
    from rac.classifier import RACClassifier

    return RACClassifier.from_pretrained(args.model, args.index, device=args.device, **_classifier_options(args))


def _classifier_options(args: argparse.Namespace) -> dict[str, Any]:
    """``RACClassifier.from_pretrained`` options of ``rac predict`` besides model, index and device."""
    return {"dtype": args.dtype, "embedder": args.embedder, "fusion": None if args.no_fusion else "default", "knn_k": args.knn_k,
            "shortlist": False if args.no_shortlist else None}


#: Failed rows named on stderr; the rest are counted (every one is in the output's error column).
SHOWN_ROW_ERRORS = 10


def _predict_rows(args: argparse.Namespace, options: dict[str, Any]) -> int:
    """``rac predict --output``: every input row plus the prediction columns, in-process or on Ray."""
    import pandas as pd
    import pyarrow as pa

    from rac.batch import predict_batches, table_writer
    from rac.corpus import read_frame

    if not args.texts and _is_table(args.input, rows=True):
        frame = read_frame(args.input, [args.text_col])
    else:
        frame = pd.DataFrame({args.text_col: _predict_texts(args)})
    table = pa.Table.from_pandas(frame, preserve_index=False)
    if args.ray is None:
        classifier = _predict_classifier(args)
        batches = predict_batches(classifier, table, _predict_labels(args, classifier.index), text_column=args.text_col,
                                  batch_size=args.batch_size, **options)
    else:
        from rac.index import ExampleIndex

        labels = _predict_labels(args, ExampleIndex.load(args.index) if args.labels_from_index else None)
        batches = _ray_batches(args, table, labels, options)
    failed, rows = [], 0
    with table_writer(args.output) as write:
        for batch in batches:
            failed += [(rows + i + 1, e) for i, e in enumerate(batch.column("error").to_pylist()) if e is not None]
            rows += len(batch)
            write(batch)
    print(f"wrote {rows} rows ({rows - len(failed)} classified, {len(failed)} failed) -> {args.output}", file=sys.stderr)
    for number, error in failed[:SHOWN_ROW_ERRORS]:
        print(f"rac predict: {args.input or 'input'}: row {number}: {error}", file=sys.stderr)
    if len(failed) > SHOWN_ROW_ERRORS:
        print(f"rac predict: ... and {len(failed) - SHOWN_ROW_ERRORS} more rows (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def _ray_batches(args: argparse.Namespace, table: Any, labels: list[str], options: dict[str, Any]) -> Iterator[Any]:
    """Output batches of ``predict_dataset`` over ``table``, in input order, on the Ray instance ``--ray`` names."""
    try:
        import ray

        from rac.distributed import from_table, predict_dataset
    except ImportError as err:
        raise ValueError(f"--ray needs the ray extra: pip install -e \".[ray]\" ({err})") from None
    started = not ray.is_initialized()
    if started:
        ray.init(address=args.ray or None, **({} if args.ray else {"include_dashboard": False}))
    try:
        ray.data.DataContext.get_current().execution_options.preserve_order = True
        workers = args.num_workers or max(1, int(ray.cluster_resources().get("CPU", 1) // args.cpus_per_worker))
        dataset = predict_dataset(
            from_table(table, args.batch_size, workers), labels, model=args.model, index=args.index,
            text_column=args.text_col, batch_size=args.batch_size, num_workers=workers, num_cpus=args.cpus_per_worker,
            num_gpus=args.gpus_per_worker, classifier_options=_classifier_options(args), **options,
        )
        yield from dataset.iter_batches(batch_format="pyarrow", batch_size=None)
    finally:
        if started:
            ray.shutdown()


# --- serve ---------------------------------------------------------------------------------------


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    import os

    p = subparsers.add_parser(
        "serve", help="serve predictions over HTTP, with examples added and removed live (needs rac[serve])",
        description="POST /predict, POST /examples, DELETE /examples/{id}, GET /health, /info, /metrics. Added "
        "examples are fsynced to a write-ahead log before the answer and folded into the saved --index in the "
        "background and on SIGTERM. Without --index the server is zero-shot only.",
    )
    p.add_argument("--index", default=None, help="example index folder; one that does not exist starts empty")
    p.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: rac's shipped model)")
    p.add_argument("--embedder", default=None, help="embedder of a new (not yet existing) index (default: packaged MiniLM)")
    p.add_argument("--wal", default=None, help="write-ahead log file (default: INDEX.wal beside the index folder)")
    p.add_argument("--device", default=None, help="torch device (default: cpu)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--api-key", default=os.environ.get("RAC_API_KEY") or None,
                   help="require 'Authorization: Bearer KEY' on POST/DELETE /examples (default: $RAC_API_KEY; unset = no auth)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a request waits for others to share its forward pass (default: %(default)s)")
    p.add_argument("--max-batch", type=int, default=64, help="most texts in one shared predict call (default: %(default)s)")
    p.add_argument("--max-texts", type=int, default=256, help="most texts (or examples) in one request (default: %(default)s)")
    p.add_argument("--max-body-bytes", type=int, default=1 << 20, help="largest request body (default: %(default)s)")
    p.add_argument("--save-interval", type=float, default=60.0,
                   help="seconds between background saves of added examples into --index (default: %(default)s)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level (default: %(default)s)")
    _dtype_option(p, "the model and the embedder")
    p.set_defaults(run=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    try:
        from rac.service.app import ServeConfig, serve
    except ImportError as err:
        raise ValueError(f"rac serve needs the serve extra: pip install -e \".[serve]\" ({err})") from None
    options = {name: getattr(args, name) for name in ServeConfig.__dataclass_fields__}
    serve(ServeConfig(**options), log_level=args.log_level)
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
        ("--hard-negative-rate", float, "data", "share of items whose negatives start from the labels nearest their "
         "true ones (neighbours' labels, then label-name cosine) (default 0)"),
        ("--out", str, "train", "run folder: log, checkpoint, model (default runs/default_model)"),
        ("--encoder", str, "train", "HF encoder name or folder (default: the packaged all-MiniLM-L6-v2)"),
        ("--init", str, "train", "warm-start from a saved model folder (rac/default_model, a run's OUT/model): "
         "continue its LoRA factors (un-merged), head and added token rows; its recipe (mode, LoRA r/alpha/targets, "
         "head, pooling) must match this run's, and --resume refuses a changed --init"),
        ("--device", str, "train", "torch device, e.g. cuda (default cpu)"),
        ("--dtype", str, "train", "compute dtype: auto | float32 | bfloat16 | float16 (CUDA); weights stay fp32 "
         "(default auto: bf16 where the hardware runs it natively)"),
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
    p.add_argument("--exclude", default=None, help="comma-separated pool datasets left out of training (kept unseen "
                   "for fitting the evidence fusion: rac fit-fusion)")
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
    if args.exclude:
        chosen["data"]["exclude"] = [d for d in args.exclude.split(",") if d]
    if "seed" in chosen["train"]:
        chosen["data"]["seed"] = chosen["train"]["seed"]
    summary = train(TrainConfig(**chosen["train"], data=DataConfig(**chosen["data"])), resume=args.resume)
    print(f"steps {summary['step']}/{summary['total_steps']}, dev loss {summary['history'][-1]['dev_loss']:.4f}, "
          f"model in {summary['model_dir']}")
    if args.export:
        export_model(summary["model_dir"], args.export)
        print(f"exported to {args.export}")
    return 0


# --- fit-fusion ----------------------------------------------------------------------------------


def _add_fit_fusion(subparsers: argparse._SubParsersAction) -> None:
    from rac.fusion_fit import DEFAULT_CORPUS, DEFAULT_K, DEFAULT_QUERIES, DEFAULT_UNSEEN_RATE, DEFAULT_UNSEEN_WEIGHT

    p = subparsers.add_parser(
        "fit-fusion", help="refit the evidence fusion for a model on training-pool datasets it did not train on",
        description="Scores held-out rows of each --datasets pool set with the model (fusion off), half of them "
        "against an index with --unseen-rate of the labels removed, fits the logistic fusion on every "
        "(text, label) pair, writes it to --out (a fusion.json, or a folder that gets one) and, with --report, "
        "a leave-one-dataset-out ablation of its features. Run it whenever the model changes.",
    )
    p.add_argument("--datasets", required=True,
                   help="comma-separated pool datasets the model did not train on (rac train --exclude)")
    p.add_argument("--data-dir", default="/work/shared/data/train", help="training pool (default: %(default)s)")
    p.add_argument("--model", default=None, help="GLiClass checkpoint folder (default: rac's shipped model)")
    p.add_argument("--out", required=True, help="fusion file or folder to write (e.g. rac/default_model)")
    p.add_argument("--report", default=None, help="write REPORT.md and REPORT.json (ablation and weights)")
    p.add_argument("--cache", default=None, help="JSON file of the collected evidence: read if present, else written")
    p.add_argument("--max-queries", type=int, default=DEFAULT_QUERIES, help="queries per dataset (default: %(default)s)")
    p.add_argument("--max-corpus", type=int, default=DEFAULT_CORPUS, help="corpus rows per dataset (default: %(default)s)")
    p.add_argument("--unseen-rate", type=float, default=DEFAULT_UNSEEN_RATE,
                   help="share of labels removed from the index for half of the queries (default: %(default)s)")
    p.add_argument("--unseen-weight", type=float, default=DEFAULT_UNSEEN_WEIGHT,
                   help="weight of a query whose true label the index lacks (default: %(default)s)")
    p.add_argument("--k", type=int, default=DEFAULT_K, help="examples shown to the model (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples and the drift (default: %(default)s)")
    p.set_defaults(run=_run_fit_fusion)


def _run_fit_fusion(args: argparse.Namespace) -> int:
    import shlex

    from rac.classifier import RACClassifier
    from rac.fusion_fit import run

    datasets = [d for d in args.datasets.split(",") if d]
    classifier = RACClassifier.from_pretrained(args.model, fusion=None)
    command = shlex.join(["rac", *sys.argv[1:]]) if sys.argv and sys.argv[0].endswith("rac") else "rac fit-fusion"
    fusion, table = run(classifier, args.data_dir, datasets, args.out, report=args.report, cache=args.cache,
                        command=command, max_queries=args.max_queries, max_corpus=args.max_corpus,
                        unseen_rate=args.unseen_rate, unseen_weight=args.unseen_weight, k=args.k, seed=args.seed)
    for name, row in table.items():
        print(f"{name:32s} F1 {row['f1']:.3f}  hit unseen {row['hit_unseen']:.3f}  seen {row['hit_seen']:.3f}")
    print(f"wrote {args.out}: {fusion!r}", file=sys.stderr)
    return 0


# --- eval ----------------------------------------------------------------------------------------


def _add_eval(subparsers: argparse._SubParsersAction) -> None:
    from rac.evaluation import COLUMN_HELP, DEFAULT_MAX_CORPUS, DEFAULT_MAX_QUERIES, DEFAULT_VOTE_K
    from rac.evidence import KNN_DEPTH

    p = subparsers.add_parser(
        "eval", help="accuracy on labeled dataset folders: rac at each k vs logreg, kNN, centroid, zero-shot, vote",
        description="Each DATASET_DIR holds train.jsonl and test.jsonl ({\"text\", \"labels\"} lines); with no "
        "train.jsonl a seeded half of test is the corpus. The corpus is indexed, a seeded sample of test is "
        "scored against every label of the dataset, and a table is printed (--out also writes JSON, Markdown and "
        "a PNG chart). " + COLUMN_HELP.format(knn_k="--knn-k", vote_k="--vote-k").replace("`", "")
        + " --unseen-labels F removes every corpus row of a seeded share F of the labels (label drift) and adds "
        "the top-1 hit rate on queries with an unseen / a seen true label.",
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
    p.add_argument("--knn-k", type=int, default=KNN_DEPTH,
                   help="neighbours counted by the knn peer and the fusion's kNN share (default: %(default)s)")
    p.add_argument("--unseen-labels", type=float, default=0.0, metavar="FRACTION",
                   help="share of each dataset's labels whose corpus rows are removed before indexing, seeded "
                        "(label drift; default: %(default)s)")
    p.add_argument("--no-fusion", action="store_true",
                   help="k columns without the evidence fusion: the model's own scores")
    _no_shortlist_option(p)
    p.add_argument("--out", default=None, help="write OUT.json (all numbers + config) and OUT.md (tables)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    _dtype_option(p, "the model and the embedder")
    p.set_defaults(run=_run_eval)


def _eval_command(args: argparse.Namespace) -> str:
    """The ``rac eval`` command line that reproduces ``args``, every setting spelled out."""
    import shlex

    parts = ["rac", "eval", *args.datasets, "--k", args.k, "--max-queries", str(args.max_queries), "--max-corpus",
             str(args.max_corpus), "--seed", str(args.seed), "--min-similarity", str(args.min_similarity),
             "--threshold", str(args.threshold), "--vote-k", str(args.vote_k)]
    parts += ["--knn-k", str(args.knn_k), "--unseen-labels", str(args.unseen_labels)]
    for option in ("model", "embedder", "max_labels_per_pass", "dtype", "out"):
        if getattr(args, option) is not None:
            parts += [f"--{option.replace('_', '-')}", str(getattr(args, option))]
    parts += [flag for flag, on in (("--no-fusion", args.no_fusion), ("--no-shortlist", args.no_shortlist)) if on]
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
        max_labels_per_pass=args.max_labels_per_pass, knn_k=args.knn_k, unseen_labels=args.unseen_labels,
        fusion=None if args.no_fusion else "default", dtype=args.dtype, shortlist=not args.no_shortlist,
        progress=not args.no_progress,
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
