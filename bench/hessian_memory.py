"""Memory of the paper-scale Hessian stage, measured on the CPU and extrapolated.

Run by hand (never from the tests):

    python bench/hessian_memory.py                  # ResNet-18 at 224 px, batches of 2, 4, 8
    python bench/hessian_memory.py --sizes 4 8 16 --threads 2

For each batch size ``b`` it measures the peak resident memory added by one
Hessian-vector product (``HessianOperator.matvec``, graph rebuilt, BatchNorm in
train mode, as the paper-scale config runs it) over one batch of ``b`` random
224 x 224 images, resetting the kernel's peak counter (``/proc/self/clear_refs``)
before each, and fits ``bytes = fixed + per_image * b``. The autograd graph of a
double backward holds the same saved tensors on a GPU (cuDNN workspaces come on
top), so ``per_image`` carries over; the GPU estimate adds the parts whose size
is known exactly:

* the evaluation images held by the stage, uint8 (``--subset`` + ``--test``;
  ``data.Images`` normalises each batch to float32 when it is cut);
* the Lanczos basis: one float32 vector per iteration (``--max-iter`` at most);
* the eigenvector block ``top_k x P`` and a few work vectors;
* the graph of one batch of ``--batch`` images (the ``hessian.batch_size``).

It prints a JSON report and writes it next to this file (``hessian_memory.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _peak_rss_reset() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # resets VmHWM (peak resident set) to the current resident set


def _rss(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256, help="hessian.batch_size to extrapolate to")
    ap.add_argument("--subset", type=int, default=40960, help="data.stream_subset (hessian.n_samples)")
    ap.add_argument("--test", type=int, default=10000, help="validation images held in memory")
    ap.add_argument("--max-iter", type=int, default=300, help="hessian.max_iter (Lanczos basis size bound)")
    ap.add_argument("--top-k", type=int, default=30)
    ap.add_argument("--out", default=str(Path(__file__).with_name("hessian_memory.json")))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from limiting_dynamics.hessian import HessianOperator
    from limiting_dynamics.models import build_model

    torch.manual_seed(0)
    model = build_model({"arch": "resnet18"}, 1000, 3)
    n_params = sum(p.numel() for p in model.parameters())
    px = 3 * args.image_size**2
    peaks = {}
    for b in [args.sizes[0]] + list(args.sizes):  # the first size twice: warm-up (allocator, kernels)
        x = torch.randn(b, 3, args.image_size, args.image_size)
        y = torch.randint(0, 1000, (b,))
        op = HessianOperator(
            model,
            [(x, y)],
            bn_mode="train",
            reuse_graph=False,
            device="cpu",
            dtype=torch.float32,
            loss=F.cross_entropy,
            stack_examples=x.shape[0],
        )
        v = torch.randn(op.numel)
        base = _rss("VmRSS")
        _peak_rss_reset()
        op.matvec(v)
        peaks[b] = _rss("VmHWM") - base
        del op, x, y, v
    sizes = np.asarray(args.sizes, float)
    added = np.asarray([peaks[b] for b in args.sizes], float)
    per_image, fixed = np.polyfit(sizes, added, 1)
    gb = 1e9
    parts = {
        "evaluation_images_uint8": (args.subset + args.test) * px / gb,
        "lanczos_basis_max_iter": args.max_iter * n_params * 4 / gb,
        "eigenvectors_and_work_vectors": (args.top_k + 6) * n_params * 4 / gb,
        "model_copy_and_gradients": 3 * n_params * 4 / gb,
        "hvp_graph_one_batch": (fixed + per_image * args.batch) / gb,
    }
    report = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": args.threads,
        "torch": torch.__version__,
        "image_size": args.image_size,
        "n_params": n_params,
        "peak_added_bytes_by_batch": {str(b): int(peaks[b]) for b in args.sizes},
        "fit_per_image_MB": per_image / 1e6,
        "fit_fixed_MB": fixed / 1e6,
        "paper_estimate_GB": {k: round(v, 2) for k, v in parts.items()},
        "paper_total_GB": round(sum(parts.values()), 1),
    }
    print(json.dumps(report, indent=2))
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
