"""Cost of a Hessian-vector product (HVP) relative to one full gradient.

Run by hand (never from the tests):

    python bench/hvp_cost.py                       # ResNet-18 @ 3x32x32 and ResNet-8 @ 1x8x8, CPU
    python bench/hvp_cost.py --cases resnet8@8px --repeats 9

Over the same 512 training images (scikit-learn's digits, resized and normalised
by ``limiting_dynamics.data.datasets``: 3x32x32 for torchvision's ResNet-18, native 1x8x8
for ResNet-8), cut into two fixed batches of 256 like the ``hessian`` stage,
with BatchNorm in eval mode and random (seeded) initialisation, it times:

* ``gradient``: one full gradient of the mean loss (``HessianOperator.gradient``);
* ``hvp_rebuild``: double backward that rebuilds the graph for every product --
  forward, ``create_graph`` gradient, backward of ``<g, v>`` -- batch by batch
  (this is what ``HessianOperator.matvec`` does by default);
* ``hvp_reuse``: one ``create_graph`` gradient built once and kept
  (``retain_graph``); each product is only the backward of ``<g, v>``;
  the one-off cost of building the graph (forward + ``create_graph`` gradient of every batch) is timed
  separately as ``reuse_setup``; ``hvp_operator_reuse_graph`` is the same
  product through ``HessianOperator(..., reuse_graph=True)``;
* ``hvp_fwd_rev``: forward-over-reverse with ``torch.func``
  (``jvp(grad(loss), params, v)`` on ``functional_call``).

Each repeat times every method once, in turn (so drift of the machine hits all
of them alike); the report is the median over repeats, and each ratio is
median(method) / median(gradient) of wall-clock times. Two checks on the noise
of a shared machine are stored too: the ratio of the minima, and the ratio of
median process CPU times (``time.process_time``, all threads; robust to other
processes when run with ``--threads 1``). Each product is checked against
``hvp_rebuild`` (relative 2-norm error, float32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, jvp

from limiting_dynamics.data import datasets as D
from limiting_dynamics.hessian import HessianOperator
from limiting_dynamics.models import build_model, count_parameters

CASES = {  # model config, image size, channels
    "resnet18@32px": ({"arch": "resnet18"}, 32, 3),
    "resnet8@8px": ({"arch": "resnet", "blocks": [1, 1, 1], "width": 16, "stem": "cifar"}, 8, 1),
}


def digits(size: int, channels: int, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training digits, prepared and normalised as in the workflow."""
    cfg = {"name": "digits", "image_size": size, "channels": channels, "test_fraction": 0.2, "split_seed": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits.npz"
        D.save_prepared(D.prepare(cfg), path)
        d = D.load_prepared(path, device)
    return d.x_train[:n], d.y_train[:n]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class ReuseGraph:
    """The create_graph gradient of every batch, built once; products reuse it."""

    def __init__(self, op: HessianOperator):
        self.op = op
        self.grads = []
        for x, y in op.batches:
            loss = op.loss(op.model(x), y) * (x.shape[0] / op.n_samples)
            self.grads.append(torch.autograd.grad(loss, op.params, create_graph=True))

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        vs = self.op._split(v)
        total = torch.zeros_like(v)
        for grads in self.grads:
            dot = sum((g * u).sum() for g, u in zip(grads, vs))
            hv = torch.autograd.grad(dot, self.op.params, retain_graph=True)
            total += torch.cat([h.reshape(-1) for h in hv])
        return total


class ForwardOverReverse:
    """``H v = d/dt grad L(theta + t v)`` by torch.func (jvp of grad)."""

    def __init__(self, op: HessianOperator):
        self.op = op
        self.names = [n for n, p in op.model.named_parameters() if p.requires_grad]
        self.theta = tuple(p.detach() for p in op.params)
        self.buffers = {n: b for n, b in op.model.named_buffers()}

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        op = self.op
        total = torch.zeros_like(v)
        tangents = tuple(op._split(v))
        for x, y in op.batches:
            w = x.shape[0] / op.n_samples

            def loss(theta, x=x, y=y, w=w):
                out = functional_call(op.model, ({**dict(zip(self.names, theta)), **self.buffers}), (x,))
                return op.loss(out, y) * w

            _, hv = jvp(grad(loss), (self.theta,), (tangents,))
            total += torch.cat([h.reshape(-1) for h in hv])
        return total


def measure(case: str, n_samples: int, batch_size: int, repeats: int, device: torch.device) -> dict:
    cfg, size, channels = CASES[case]
    torch.manual_seed(0)
    model = build_model(cfg, 10, channels)
    x, y = digits(size, channels, n_samples, device)
    batches = [(x[s : s + batch_size], y[s : s + batch_size]) for s in range(0, n_samples, batch_size)]
    op = HessianOperator(
        model,
        batches,
        bn_mode="eval",
        reuse_graph=False,
        device=device,
        dtype=torch.float32,
        loss=F.cross_entropy,
        stack_examples=batch_size,
    )
    v = torch.randn(op.numel, generator=torch.Generator().manual_seed(1)).to(device)
    v /= v.norm()

    def timed(fn):
        sync(device)
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        sync(device)
        return time.perf_counter() - t, time.process_time() - c, out

    reuse = ReuseGraph(op)
    fwd_rev = ForwardOverReverse(op)
    op_reuse = HessianOperator(
        model,
        batches,
        bn_mode="eval",
        device=device,
        dtype=torch.float32,
        reuse_graph=True,
        loss=F.cross_entropy,
        stack_examples=batch_size,
    )
    methods = {
        "gradient": op.gradient,
        "hvp_rebuild": lambda: op.matvec(v),
        "reuse_setup": lambda: ReuseGraph(op),  # the one-off create_graph gradients
        "hvp_reuse": lambda: reuse.matvec(v),
        "hvp_operator_reuse_graph": lambda: op_reuse.matvec(v),  # the same, through HessianOperator
        "hvp_fwd_rev": lambda: fwd_rev.matvec(v),
    }
    times = {k: [] for k in methods}
    cpu = {k: [] for k in methods}
    results = {k: fn() for k, fn in methods.items()}  # warm-up, and the products to compare
    ref = results["hvp_rebuild"]
    rel_err = {k: float((r - ref).norm() / ref.norm()) for k, r in results.items() if k.startswith("hvp")}
    del results
    for _ in range(repeats):
        for k, fn in methods.items():
            wall, c, _ = timed(fn)
            times[k].append(wall)
            cpu[k].append(c)
    med = {k: statistics.median(t) for k, t in times.items()}
    low = {k: min(t) for k, t in times.items()}
    cmed = {k: statistics.median(t) for k, t in cpu.items()}
    return {
        "case": case,
        "n_params": count_parameters(model),
        "n_samples": n_samples,
        "batch_size": batch_size,
        "input": f"digits {channels}x{size}x{size}",
        "init": "random (seed 0)",
        "bn_mode": "eval",
        "repeats": repeats,
        "seconds_median": med,
        "seconds_all": times,
        "ratio_to_gradient": {k: med[k] / med["gradient"] for k in med},
        "ratio_to_gradient_of_minima": {k: low[k] / low["gradient"] for k in low},  # a check on noise
        "cpu_seconds_median": cmed,
        "cpu_seconds_all": cpu,
        "cpu_ratio_to_gradient": {k: cmed[k] / cmed["gradient"] for k in cmed},
        "rel_error_vs_rebuild": rel_err,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--n-samples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/hvp_cost.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    rows = []
    for c in a.cases:
        r = measure(c, a.n_samples, a.batch_size, a.repeats, device)
        rows.append(r)
        print(
            f"{c} ({r['n_params']} params, {r['input']}, {r['n_samples']} samples, median of {r['repeats']}): "
            f"gradient {r['seconds_median']['gradient']:.3f} s"
        )
        for k, ratio in r["ratio_to_gradient"].items():
            err = r["rel_error_vs_rebuild"].get(k)
            print(
                f"  {k:26s} {r['seconds_median'][k]:8.3f} s  {ratio:6.2f} x gradient "
                f"(minima: {r['ratio_to_gradient_of_minima'][k]:5.2f} x; "
                f"CPU time: {r['cpu_ratio_to_gradient'][k]:5.2f} x)"
                + (f"  rel. err. vs rebuild {err:.1e}" if err is not None else "")
            )
    with open(a.out, "w") as fh:
        json.dump(
            {
                "device": str(device),
                "machine": platform.processor() or platform.machine(),
                "cpu_count": os.cpu_count(),
                "load_average_after": os.getloadavg(),
                "threads": a.threads,
                "torch": torch.__version__,
                "rows": rows,
            },
            fh,
            indent=2,
        )


if __name__ == "__main__":
    main()
