"""Which default regime is stationary? (by hand; the numbers behind config/README.md)

Trains the default model (``config/config.yaml``: ResNet-8 on the digits,
its pretraining and its default cell) and runs one limiting cell per variant:
the previous default (1-pixel shifts, no label noise), fresh label
noise at several rates with and without shifts, fresh Gaussian input noise,
and a four times larger weight decay. For each it reports the 200-step rolling
mean's max/min of the step (the stationarity ratio), the minibatch loss SGD
sees, the clean eval-mode train loss, test accuracy, the norm of the
scale-invariant weights and the step of those weights over the norm-equilibrium
identity ``2 lr wd ||theta_SI||^2 / (1 + beta)``.

    snakemake --cores 1 results/data/digits.npz     # the prepared data it reads
    python bench/stationarity_regimes.py --jobs 2 --seeds 0 1 > regimes.jsonl
    python bench/stationarity_regimes.py --markdown regimes.jsonl   # the table in config/README.md
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

VARIANTS = {
    "previous default (shift 1)": {"shift": 1},
    "label noise 0.1, shift 1": {"shift": 1, "label_noise": 0.1},
    "label noise 0.2, shift 1": {"shift": 1, "label_noise": 0.2},
    "label noise 0.2, no shift": {"shift": 0, "label_noise": 0.2},
    "input noise 0.5 sd, shift 1": {"shift": 1, "input_noise": 0.5},
    "weight decay 0.02, shift 1": {"shift": 1, "wd": 0.02, "burn": 1500},
}


def run(name: str, v: dict, steps: int, seed: int) -> dict:
    import torch
    import yaml

    from limiting_dynamics import models, training
    from limiting_dynamics.data import datasets as data
    from limiting_dynamics.data.drawing import BatchDrawing

    torch.set_num_threads(1)
    cfg = yaml.safe_load(open("config/config.yaml"))  # the default's model, pretraining and cell
    d = data.load_prepared("results/data/digits.npz", "cpu")
    cell = cfg["cells"]["default"]
    lr, wd, beta = cell["lr"], v.get("wd", cell["weight_decay"]), cell["momentum"]
    noise = v.get("label_noise", 0.0)
    torch.manual_seed(0)
    model = models.build_model(cfg["model"], 10, 1)
    training.pretrain(
        model,
        d,
        {**cfg["converge"], "weight_decay": wd, "augment_shift": v["shift"], "label_noise": noise},
        torch.device("cpu"),
        log=lambda s: None,
        numerics=training.Numerics(),
    )
    si = set(models.scale_invariant_tensors(model))
    hp = training.Hyperparameters(lr, cell["batch_size"], beta, wd, seed)
    drawing = BatchDrawing(cfg["limiting"]["sampling"], v["shift"], noise)
    run = training._Run(model, d, hp, drawing, torch.device("cpu"), training.Numerics())
    if v.get("input_noise"):
        gen, draw = torch.Generator().manual_seed(seed + 10), run.batches.next
        run.batches.next = lambda: (lambda x, y: (x + v["input_noise"] * torch.randn(x.shape, generator=gen), y))(
            *draw()
        )
    is_si = torch.tensor([n in si for n in run.flat.names])
    vv, ww = run.flat.views(run.flat_v), run.flat.views(run.flat.flat)
    burn = v.get("burn", 3000)
    rec = np.zeros((burn + steps, 4))
    start = time.perf_counter()
    for k in range(burn + steps):
        loss = run.step().detach()
        with torch.no_grad():
            v2 = torch.stack([(x * x).sum() for x in vv])
            w2 = torch.stack([(x * x).sum() for x in ww])
        rec[k] = [float(loss), lr**2 * float(v2.sum()), lr**2 * float(v2[is_si].sum()), float(w2[is_si].sum())]
    seconds = time.perf_counter() - start
    r = rec[burn:]
    roll = np.convolve(r[:, 1], np.ones(200) / 200, mode="valid")
    ev = training.evaluate_all(model, d)
    return {
        "variant": name,
        "seed": seed,
        "stationarity_ratio": float(roll.max() / roll.min()),
        "minibatch_loss": float(r[:, 0].mean()),
        "eval_train_loss": ev["train_loss"],
        "test_accuracy": ev["test_accuracy"],
        "sq_norm_si_start": float(r[0, 3]),
        "sq_norm_si_end": float(r[-1, 3]),
        "si_step_over_identity": float(r[:, 2].mean() / (2 * lr * wd * r[:, 3].mean() / (1 + beta))),
        "ms_per_step": 1000 * seconds / (burn + steps),
    }


def markdown(path: str) -> str:
    """The results (JSON lines) as a table: per variant, the range over seeds."""
    rows: dict[str, list[dict]] = {}
    for line in open(path):
        r = json.loads(line)
        rows.setdefault(r["variant"], []).append(r)

    def span(rs, key, fmt="{:.2f}"):
        v = [r[key] for r in rs]
        return fmt.format(min(v)) if len(v) == 1 else f"{fmt.format(min(v))}-{fmt.format(max(v))}"

    out = [
        "| variant | seeds | stationarity ratio | minibatch loss | clean train loss (eval) | test accuracy | "
        "scale-invariant step / identity | ms per step |",
        "|" + "---|" * 8,
    ]
    for name, rs in rows.items():
        out.append(
            f"| {name} | {len(rs)} | {span(rs, 'stationarity_ratio')} | {span(rs, 'minibatch_loss', '{:.3f}')} | "
            f"{span(rs, 'eval_train_loss', '{:.3f}')} | {span(rs, 'test_accuracy', '{:.3f}')} | "
            f"{span(rs, 'si_step_over_identity')} | {span(rs, 'ms_per_step', '{:.1f}')} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4000, help="recorded steps after the burn-in")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--markdown", metavar="JSONL", help="print the table of an earlier run's output instead")
    a = ap.parse_args()
    if a.markdown:
        print(markdown(a.markdown))
        return
    with ProcessPoolExecutor(a.jobs) as pool:
        futures = [pool.submit(run, name, v, a.steps, s) for name, v in VARIANTS.items() for s in a.seeds]
        for f in futures:
            print(json.dumps(f.result()), flush=True)


if __name__ == "__main__":
    main()
