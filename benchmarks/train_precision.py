"""bf16 autocast training against float32: the same 300 steps (same data, seed and batches) in each precision,
their loss curves side by side and steps per second.

Weights, optimizer state and the loss stay float32 in both runs (``rac.precision``); only the matrix products
of forward and backward run in bf16. Writes ``benchmarks/results/train_precision.json`` and ``.md``.

    python benchmarks/train_precision.py                 # 300 steps of batch 8 on 4,000 pool items
    python benchmarks/train_precision.py --steps 20      # a dry run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rac.training import DataConfig, TrainConfig, train  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default: %(default)s)")
    parser.add_argument("--items", type=int, default=4000, help="prepared pool items (default: %(default)s)")
    parser.add_argument("--every", type=int, default=25, help="steps between loss records (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "train_precision")
    args = parser.parse_args()
    command = "python " + shlex.join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in ("float32", "bfloat16"):
            cfg = TrainConfig(out_dir=f"{tmp}/{dtype}", dtype=dtype, batch_size=8, max_length=192, steps=args.steps,
                              eval_every=args.every, save_every_minutes=1e9, seed=0,
                              data=DataConfig(n_items=args.items, rac_rate=0.75, seed=0))
            start = time.perf_counter()
            summary = train(cfg, show_progress=False)
            history = [h for h in summary["history"] if "train_loss" in h]
            runs[dtype] = {"history": summary["history"], "train_seconds": summary["train_seconds"],
                           "steps_per_second": summary["step"] / summary["train_seconds"],
                           "wall_seconds": time.perf_counter() - start}
            print(f"{dtype}: {summary['step'] / summary['train_seconds']:.2f} steps/s, "
                  f"final train loss {history[-1]['train_loss']:.4f}, dev loss {history[-1]['dev_loss']:.4f}")

    fp32, bf16 = (runs[d]["history"] for d in ("float32", "bfloat16"))
    lines = ["# Training precision: bf16 autocast against float32", "", f"Command: `{command}`; {platform.machine()}, "
             f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end. Same prepared items, seed and "
             f"batch order; loss = mean focal loss of the steps since the previous row.", "",
             "| step | train loss fp32 | train loss bf16 | dev loss fp32 | dev loss bf16 |", "|---|---|---|---|---|"]
    for a, b in zip(fp32, bf16):
        train_a, train_b = a.get("train_loss"), b.get("train_loss")
        cells = [str(a["step"]), *(f"{v:.4f}" if v is not None else "-" for v in (train_a, train_b)),
                 f"{a['dev_loss']:.4f}", f"{b['dev_loss']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    speed = runs["bfloat16"]["steps_per_second"] / runs["float32"]["steps_per_second"]
    lines += ["", f"Steps per second: fp32 {runs['float32']['steps_per_second']:.2f}, bf16 "
              f"{runs['bfloat16']['steps_per_second']:.2f} ({speed:.2f}x).", ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines), encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "runs": runs}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
