"""Where ``RACClassifier.predict`` spends its time on the CPU, at few and at many labels.

Splits one ``predict`` call into input building (tokenization, chunking, example formatting: Python) and
the model forward, and breaks the forward down by operator with ``torch.profiler``. Same texts and label
names as ``benchmarks/speed.py`` (its short texts, clinc150 intent names).

    python benchmarks/profile_predict.py --labels 2,25,50,100   # what benchmarks/results/profile_predict.md holds
    python benchmarks/profile_predict.py --labels 2,50 --texts 50 --out /tmp/profile
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import SHORT_TOKENS, label_sets, load_texts, token_lengths  # noqa: E402

from rac.classifier import RACClassifier  # noqa: E402
from rac.labels import parse_labels  # noqa: E402

#: Operator families the forward's time is reported in (exact aten names; attention by substring).
#: ``copy_`` belongs to the linear layers: CPU ``addmm`` first copies the bias into its output.
FAMILIES = {
    "linear layers (addmm, its bias copy)": {"addmm", "copy_", "mm", "bmm", "matmul", "linear"},
    "layer norm": {"native_layer_norm", "layer_norm"},
    "residual adds": {"add", "add_"},
    "gelu": {"gelu"},
}
ATTENTION = "attention (scaled_dot_product)"


def family(name: str) -> str:
    bare = name.removeprefix("aten::")
    if "scaled_dot_product" in bare or "softmax" in bare:
        return ATTENTION
    return next((label for label, names in FAMILIES.items() if bare in names), "other (pooling, head, masks)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labels", default="2,50", help="comma-separated label counts (default: %(default)s)")
    parser.add_argument("--texts", type=int, default=200, help="short texts profiled (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=64, help="predict batch size (default: %(default)s)")
    parser.add_argument("--dtype", default="auto", help="precision of the forward: auto | float32 | bfloat16 (default: %(default)s)")
    parser.add_argument("--out", default=None, help="markdown report (default: benchmarks/results/profile_predict.md)")
    args = parser.parse_args()
    out = Path(args.out or Path(__file__).resolve().parent / "results" / "profile_predict.md")
    counts = [int(n) for n in args.labels.split(",")]
    classifier = RACClassifier.from_pretrained(dtype=args.dtype)
    mixed = load_texts(504)
    lengths = token_lengths(mixed, classifier.model.tokenizer)
    texts = [t for t, n in zip(mixed, lengths) if n <= SHORT_TOKENS][: args.texts]
    names = label_sets()
    classifier.predict(texts[:8], names[counts[0]])  # warm-up
    lines = [
        "# Profile: where RACClassifier.predict spends its time",
        "",
        f"Command: `{' '.join(['python benchmarks/profile_predict.py', *sys.argv[1:]])}`",
        "",
        f"{len(texts)} short texts (<= {SHORT_TOKENS} tokens) of benchmarks/speed.py, zero-shot, shipped model in "
        f"{classifier.dtype_name}, every label scored (no shortlist: this is the cost of the labels); "
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
    ]
    for n in counts:
        label_set = classifier.processor.label_sets(parse_labels(names[n], len(texts))[1])
        built = time.perf_counter()
        _, _, items = classifier.processor.build(texts, label_set, [[] for _ in texts])
        built = time.perf_counter() - built
        forward = time.perf_counter()
        classifier._forward(items, args.batch_size)
        forward = time.perf_counter() - forward
        with profile(activities=[ProfilerActivity.CPU]) as prof:  # again, for the operator breakdown
            classifier._forward(items, args.batch_size)
        shares: dict[str, float] = {}
        for event in prof.key_averages():
            shares[family(event.key)] = shares.get(family(event.key), 0.0) + event.self_cpu_time_total
        total = sum(shares.values()) or 1.0
        tokens = sum(len(item.input_ids) for item in items)
        wall = built + forward
        lines += [
            f"## {n} labels: {len(items) / len(texts):.2f} passes per text, {tokens / len(texts):.0f} tokens per text",
            "",
            f"- input building (tokenize, chunk, assemble): {built:.2f} s ({built / wall:.0%} of the call)",
            f"- model forward: {forward:.2f} s ({forward / wall:.0%}), {tokens / forward:.0f} tokens/s",
            "- forward self CPU time by operator family (torch.profiler):",
            *(f"  - {label}: {value / total:.0%}" for label, value in sorted(shares.items(), key=lambda kv: -kv[1])),
            "",
        ]
    report = "\n".join(lines)
    print(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
