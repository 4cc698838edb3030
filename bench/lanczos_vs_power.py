"""Hessian-vector products needed for the top-10 eigenvalues: Lanczos with full
reorthogonalisation (``hessian.lanczos``) against block power iteration with QR
(``hessian.block_power_iteration``, the paper's code) and ARPACK
(``scipy.sparse.linalg.eigsh`` on a ``LinearOperator``).

Run by hand (never from the tests):

    python bench/lanczos_vs_power.py                    # both problems
    python bench/lanczos_vs_power.py --problems synthetic

Problems:

* ``synthetic``: a dense symmetric matrix ``Q diag(lambda) Q^T`` (n = 3000,
  random orthogonal Q) with a spectrum shaped like the ResNet-8 Hessian below:
  six outliers (8, 4.2, 3.6, 2.5, 2.2, 1.4), a power-law bulk
  ``0.95 j^-0.6`` and 10 % small negative eigenvalues in ``[-0.05, 0)``. The
  reference is the exact spectrum (a long Lanczos run agrees, see the output).
* ``resnet8``: the training-loss Hessian of ResNet-8 on digits at the converged
  checkpoint ``results/converge/converged.pt`` (random initialisation when it is
  missing), as the ``hessian`` stage takes it: a seeded subset of 512 training
  images in batches of 256, BatchNorm in eval mode, float32
  (``HessianOperator(..., reuse_graph=True)``: the same products, cheaper).
  The reference is a long Lanczos run (k = 12, tol 1e-6, another start vector).

Accuracy of an estimate = max over the top 10 of ``|theta_i - lambda_i| / |lambda_i|``.
For each method it reports the products at its own stopping rule (tol 1e-3 for
Lanczos and block power; tol 1e-2 and the default tol 0 for eigsh) with the
accuracy reached there, and, for Lanczos and block power, the products after
which the accuracy first reaches 1e-3 (an oracle stopping rule).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as sla
import torch
import torch.nn.functional as F

from limiting_dynamics import hessian as Hs

K = 10
TARGET = 1e-3


def accuracy(est, ref) -> float:
    est = np.sort(np.asarray(est, float))[::-1][:K]
    ref = np.asarray(ref, float)[:K]
    return float(np.max(np.abs(est - ref) / np.abs(ref)))


class Counted:
    def __init__(self, mv):
        self.mv, self.n = mv, 0

    def __call__(self, v):
        self.n += 1
        return self.mv(v)


class _Reached(Exception):
    pass


def lanczos_trace(mv, n, ref, dtype, max_iter, seed=0) -> int | None:
    """Products after which the top-10 Ritz values of the Lanczos iteration (the
    one ``hessian.lanczos`` runs, same start vector) first reach ``TARGET``."""
    q = Hs._random_unit(n, torch.Generator().manual_seed(seed), dtype, "cpu")
    hit = []

    def record(alphas, betas, beta):
        if len(alphas) >= K and accuracy(Hs._ritz(alphas, betas)[0], ref) <= TARGET:
            hit.append(len(alphas))
            return True
        return False

    Hs._lanczos_iteration(mv, q, max_iter, "cpu", dtype, stop=record)
    return hit[0] if hit else None


def power_trace(mv, n, ref, dtype, max_iter, seed=0) -> int | None:
    """Products after which the Rayleigh-Ritz values of
    ``hessian.block_power_iteration`` (observed through its matvec, k products
    per iteration) first reach ``TARGET``."""
    cols, hcols = [], []
    count = [0]

    def observed(v):
        hv = mv(v)
        count[0] += 1
        cols.append(v)
        hcols.append(hv)
        if len(cols) == K:
            V, HV = torch.stack(cols, 1), torch.stack(hcols, 1)
            small = (V.T @ HV).double().numpy()
            cols.clear(), hcols.clear()
            if accuracy(np.linalg.eigvalsh(0.5 * (small + small.T)), ref) <= TARGET:
                raise _Reached
        return hv

    try:
        Hs.block_power_iteration(observed, n, K, tol=0.0, max_iter=max_iter, seed=seed, device="cpu", dtype=dtype)
    except _Reached:
        return count[0]
    return None


def compare(mv, n, ref, dtype, lanczos_max_iter, power_max_iter) -> dict:
    rows = {}

    def run(name, fn):
        c = Counted(mv)
        t = time.perf_counter()
        out = fn(c)
        rows[name] = {**out, "hvps": c.n, "seconds": time.perf_counter() - t}
        print(
            f"  {name:26s} {c.n:6d} HVPs  accuracy {rows[name].get('accuracy', float('nan')):.2e}  "
            f"{rows[name]['seconds']:.1f} s",
            flush=True,
        )

    def lz(c):
        r = Hs.lanczos(c, n, K, tol=TARGET, max_iter=lanczos_max_iter, seed=0, device="cpu", dtype=dtype, vectors=False)
        return {"accuracy": accuracy(r.eigenvalues, ref), "converged": bool(r.converged)}

    def bp(c):
        r = Hs.block_power_iteration(c, n, K, tol=TARGET, max_iter=power_max_iter, seed=0, device="cpu", dtype=dtype)
        return {"accuracy": accuracy(r.eigenvalues, ref), "converged": bool(r.converged)}

    def arpack(tol):
        def f(c):
            op = sla.LinearOperator(
                (n, n),
                dtype=np.float64,
                matvec=lambda x: c(torch.from_numpy(np.ascontiguousarray(x).ravel()).to(dtype)).double().numpy(),
            )
            v0 = np.random.default_rng(0).standard_normal(n)
            vals = sla.eigsh(op, k=K, which="LA", tol=tol, v0=v0, return_eigenvectors=False)
            return {"accuracy": accuracy(vals, ref), "converged": True}

        return f

    run("lanczos_tol1e-3", lz)
    run("block_power_tol1e-3", bp)
    run("eigsh_tol1e-2", arpack(1e-2))
    run("eigsh_tol0", arpack(0))
    for name, fn, cap in (("lanczos", lanczos_trace, lanczos_max_iter), ("block_power", power_trace, power_max_iter)):
        t = time.perf_counter()
        hv = fn(mv, n, ref, dtype, cap)
        rows[f"{name}_to_1e-3"] = {
            "hvps": hv,
            "seconds": time.perf_counter() - t,
            "note": None if hv is not None else f"not reached within max_iter={cap}",
        }
        print(f"  {name + '_to_1e-3 (oracle)':26s} {hv if hv is not None else 'n/a':>6} HVPs", flush=True)
    lo, bo = rows["lanczos_to_1e-3"]["hvps"], rows["block_power_to_1e-3"]["hvps"]
    own = rows["block_power_tol1e-3"]["hvps"] / rows["lanczos_tol1e-3"]["hvps"]
    oracle = (bo / lo) if lo and bo else None
    summary = {"ratio_block_power_over_lanczos_own_stop": own, "ratio_block_power_over_lanczos_to_1e-3": oracle}
    print(
        f"  block power / Lanczos HVPs: own stopping rules {own:.1f}x, to 1e-3 (oracle) "
        + (f"{oracle:.1f}x" if oracle else "n/a")
    )
    return {"methods": rows, **summary}


def synthetic(n: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    outliers = np.array([8.0, 4.2, 3.6, 2.5, 2.2, 1.4])
    n_neg = n // 10
    bulk = 0.95 * np.arange(1, n - len(outliers) - n_neg + 1) ** -0.6
    neg = -0.05 * rng.uniform(0, 1, n_neg)
    eig = np.sort(np.concatenate([outliers, bulk, neg]))[::-1]
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    mat = torch.tensor((q * eig) @ q.T)
    mat = 0.5 * (mat + mat.T)
    return (lambda v: mat @ v), eig


def resnet8(checkpoint: str, data_path: str, n_samples: int, batch_size: int):
    from limiting_dynamics import checkpoints, models
    from limiting_dynamics.data import datasets as data

    if Path(data_path).is_file():
        d = data.load_prepared(data_path, "cpu")
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            cfg = {"name": "digits", "image_size": 8, "channels": 1, "test_fraction": 0.2, "split_seed": 0}
            data.save_prepared(data.prepare(cfg), Path(tmp) / "digits.npz")
            d = data.load_prepared(Path(tmp) / "digits.npz", "cpu")
    cfg = {"arch": "resnet", "blocks": [1, 1, 1], "width": 16, "stem": "cifar"}
    if Path(checkpoint).is_file():
        ck = checkpoints.load_checkpoint(checkpoint)
        cfg = ck.get("model_config", cfg)
        model = models.build_model(cfg, d.num_classes, d.in_channels)
        checkpoints.load_weights(model, ck["model"], checkpoint)
        weights = f"converged checkpoint {checkpoint}"
    else:
        torch.manual_seed(0)
        model = models.build_model(cfg, d.num_classes, d.in_channels)
        weights = "random initialisation (seed 0): no checkpoint"
    batches = Hs.fixed_batches(d.x_train, d.y_train, n_samples, batch_size, seed=0)
    op = Hs.HessianOperator(
        model,
        batches,
        bn_mode="eval",
        device="cpu",
        dtype=torch.float32,
        reuse_graph=True,
        loss=F.cross_entropy,
        stack_examples=batch_size,
    )
    return op, weights, cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="+", default=["synthetic", "resnet8"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", default="results/converge/converged.pt")
    ap.add_argument("--data", default="results/data/digits.npz")
    ap.add_argument("--n-samples", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--power-max-iter", type=int, default=300, help="block power iterations at most (x10 HVPs)")
    ap.add_argument("--out", default="bench/lanczos_vs_power.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = {"k": K, "target_relative_accuracy": TARGET, "threads": a.threads, "torch": torch.__version__, "problems": {}}
    if "synthetic" in a.problems:
        mv, eig = synthetic()
        n = len(eig)
        long = Hs.lanczos(
            mv, n, 12, tol=1e-10, max_iter=400, seed=12345, device="cpu", dtype=torch.float64, vectors=False
        )
        print(
            f"synthetic n={n}: top-12 {np.round(eig[:12], 4).tolist()}; long Lanczos ({long.n_products} HVPs) "
            f"vs exact: {accuracy(long.eigenvalues, eig):.1e}"
        )
        res = compare(mv, n, eig, torch.float64, 400, a.power_max_iter)
        out["problems"]["synthetic"] = {
            "n": n,
            "spectrum": "outliers 8, 4.2, 3.6, 2.5, 2.2, 1.4; bulk 0.95 j^-0.6; 10% in [-0.05, 0)",
            "reference": "exact eigenvalues",
            "reference_top12": eig[:12].tolist(),
            "long_lanczos_vs_exact": accuracy(long.eigenvalues, eig),
            "long_lanczos_hvps": long.n_products,
            "gap_ratio_11_over_10": float(eig[10] / eig[9]),
            **res,
        }
    if "resnet8" in a.problems:
        op, weights, cfg = resnet8(a.checkpoint, a.data, a.n_samples, a.batch_size)
        n = op.numel
        t = time.perf_counter()
        ref = Hs.lanczos(
            op.matvec, n, 12, tol=1e-6, max_iter=300, seed=12345, device="cpu", dtype=torch.float32, vectors=False
        )
        print(
            f"resnet8 ({weights}, n={n}): reference top-12 {np.round(ref.eigenvalues, 4).tolist()} from "
            f"{ref.n_products} HVPs (converged {ref.converged}, {time.perf_counter() - t:.0f} s)",
            flush=True,
        )
        res = compare(op.matvec, n, ref.eigenvalues, torch.float32, 300, a.power_max_iter)
        out["problems"]["resnet8"] = {
            "n": n,
            "weights": weights,
            "model": cfg,
            "n_samples": a.n_samples,
            "batch_size": a.batch_size,
            "bn_mode": "eval",
            "precision": "float32",
            "reference": "Lanczos k=12 tol 1e-6 seed 12345",
            "reference_hvps": ref.n_products,
            "reference_converged": bool(ref.converged),
            "reference_top12": ref.eigenvalues.tolist(),
            "gap_ratio_11_over_10": float(ref.eigenvalues[10] / ref.eigenvalues[9]),
            **res,
        }
    if Path(a.out).exists():  # keep the other problem's result when only one is rerun
        old = json.loads(Path(a.out).read_text())
        out["problems"] = {**old.get("problems", {}), **out["problems"]}
    Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
