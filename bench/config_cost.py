"""Work per configuration, in image-passes, and the GPU-hours it implies.

Run by hand:

    python bench/config_cost.py config/paper_imagenet.yaml config/paper_sweeps.yaml --images-per-s 2500
    python bench/config_cost.py --all --images-per-s 2500     # every shipped paper config

Counts, from the merged config alone (nothing runs), the images passed through
the network by each stage, in units of one training image (forward + backward
= 3 forward passes):

* convergence: ``epochs x N`` when it trains (0 when it loads weights);
* burn-in and limiting run per cell: ``steps x S``; evaluations: every
  ``eval_every`` steps a forward pass over the held train subset and the test
  set (1/3 of a training image each);
* Hessian per cell: products x ``n_samples`` x 2.6 (a Hessian-vector product
  with the graph rebuilt cost 2.6 gradients in ``bench/hvp_cost.py``); products
  = ``max_iter`` (an upper bound for Lanczos, which is also the first SLQ
  probe) + ``(slq_vectors - 1) x slq_iterations`` + ``hutchinson_samples``;
* gradient noise per cell: ``n_batches x S`` gradients;
* landscape: ``grid^2`` forward passes over its train subset and the test set.

``--images-per-s``: measured training throughput (``bench/training_throughput.py``
on the GPU in question) turns image-passes into GPU-hours.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HVP_PER_GRADIENT = 2.6
PAPER = [
    ("paper_imagenet.yaml", "paper_sweeps.yaml"),
    ("paper_imagenet.yaml", "paper_grid.yaml"),
    ("paper_imagenet.yaml", "paper_phase_space.yaml"),
    ("cifar10.yaml",),
]


def merged(files) -> dict:
    """config/config.yaml with the overlays applied as ``--configfile`` does."""
    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for f in files:
        update_config(cfg, yaml.safe_load(Path(f if "/" in str(f) else REPO / "config" / f).read_text()))
    return cfg


def cost(cfg: dict, n_train: int, n_test: int) -> dict:
    from limiting_dynamics.config import all_cells, burn_in_start, burn_in_steps, probed

    cells = all_cells(cfg)
    probed_cells = [hp for hp in cells if probed(hp, cfg)]
    lim, h, nz, land = cfg["limiting"], cfg["hessian"], cfg["noise"], cfg["landscape"]
    held = min(cfg["data"].get("stream_subset") or n_train, n_train) + n_test
    out = {"cells": len(cells)}
    out["converge"] = 0 if cfg["converge"]["checkpoint"] else cfg["converge"]["epochs"] * (n_train + held / 3)
    out["burn_in"] = sum(
        burn_in_steps(hp, lim["burn_in"], chained=burn_in_start(hp, cfg) is not None) * hp.batch_size for hp in cells
    )
    out["limiting"] = sum(lim["steps"] * hp.batch_size for hp in cells)
    out["evaluation"] = len(cells) * (lim["steps"] // lim["eval_every"] + 1) * held / 3
    hvps = h["max_iter"] + (h["slq_vectors"] - 1) * h["slq_iterations"] + h["hutchinson_samples"]
    n_hessian = (n_train if h["n_samples"] == "all" else h["n_samples"]) * h["draws"]
    out["hessian"] = len(probed_cells) * hvps * n_hessian * HVP_PER_GRADIENT if h["enabled"] else 0
    out["noise"] = sum(nz["n_batches"] * hp.batch_size for hp in probed_cells) if nz["enabled"] else 0
    out["landscape"] = land["grid"] ** 2 * (land["n_samples"] + n_test) / 3 if land["enabled"] else 0
    out["total"] = sum(v for k, v in out.items() if k != "cells")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", help="config overlays, in --configfile order")
    ap.add_argument("--all", action="store_true", help="every shipped paper config")
    ap.add_argument("--images-per-s", type=float, default=None)
    ap.add_argument("--n-train", type=int, default=None, help="training-set size (default: ImageNet or CIFAR-10)")
    a = ap.parse_args()
    for files in PAPER if a.all else [a.files]:
        cfg = merged(files)
        imagenet = cfg["data"]["name"] == "imagenet"
        n_train = a.n_train or (1_281_167 if imagenet else 50_000)
        n_test = (1000 * (cfg["data"].get("max_test_per_class") or 50)) if imagenet else 10_000
        c = cost(cfg, n_train, n_test)
        line = (
            " + ".join(files)
            + f": {c['cells']} cells, {c['total'] / 1e6:.0f} M image-passes ("
            + ", ".join(f"{k} {v / 1e6:.0f} M" for k, v in c.items() if k not in ("cells", "total") and v)
            + ")"
        )
        if a.images_per_s:
            line += f"; {c['total'] / a.images_per_s / 3600:.0f} GPU-hours at {a.images_per_s:g} images/s"
        print(line)


if __name__ == "__main__":
    main()
