"""Train-mode Hessian-vector products with batches stacked into one forward pass.

Run by hand (never from the tests):

    python bench/stacked_batch_norm.py [--repeats 5] [--threads 1]

The Hessian stages take the loss over fixed batches of the cell's batch size
``S``, each normalised by BatchNorm on its own statistics. ``HessianOperator``
runs consecutive batches as one forward pass of at most ``stack_examples``
examples (``hessian.batch_size``), BatchNorm still normalising per batch. This
script times one product (``reuse_graph``: the backward of the kept graphs, as
the stages run it) of the default model (the small ResNet of
``config/config.yaml``, at its initialisation) over the 22 batches of 64
digits the default Hessian takes, for stacks of 1, 2, 4, 8 and 16 batches, each
repeat timing every stack size once in turn (so drift of the machine hits all
alike), and reports the median and the relative 2-norm difference of each
product from the unstacked one (rounding order only).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from limiting_dynamics import hessian, models
from limiting_dynamics.data import datasets

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=64, help="the cell's S")
    ap.add_argument(
        "--stacks", type=int, nargs="+", default=[2, 4, 8, 16], help="batches per forward pass (1 is always run)"
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        datasets.save_prepared(datasets.prepare(cfg["data"]), Path(tmp) / "digits.npz")
        d = datasets.load_prepared(Path(tmp) / "digits.npz", "cpu")
    torch.manual_seed(0)
    model = models.build_model(cfg["model"], d.num_classes, d.in_channels)
    s = a.batch_size
    n = d.n_train // s * s
    batches = hessian.fixed_batches(d.x_train, d.y_train, n, s, seed=0)
    ops = {
        k: hessian.HessianOperator(
            model,
            batches,
            bn_mode="train",
            reuse_graph=True,
            device="cpu",
            dtype=torch.float32,
            loss=F.cross_entropy,
            stack_examples=k * s,
        )
        for k in sorted({1, *a.stacks})
    }
    v = torch.randn(ops[1].numel, generator=torch.Generator().manual_seed(1))
    ref = ops[1].matvec(v)
    rel = {k: float((op.matvec(v) - ref).norm() / ref.norm()) for k, op in ops.items()}
    times = {k: [] for k in ops}
    for _ in range(a.repeats):
        for k, op in ops.items():
            t = time.perf_counter()
            op.matvec(v)
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(t) for k, t in times.items()}
    print(f"{len(batches)} batches of {s} digits, {ops[1].numel} parameters, {a.threads} thread(s)")
    print("batches per pass | seconds per product (median) | ratio to 1 | relative difference from 1")
    for k in ops:
        print(f"{k:16d} | {med[k]:.3f} | {med[k] / med[1]:.2f} | {rel[k]:.1e}")
    out = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": a.threads,
        "batch_size": s,
        "n_batches": len(batches),
        "seconds": times,
        "median": med,
        "relative_difference": rel,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
