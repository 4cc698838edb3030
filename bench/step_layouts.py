"""One SGD step of the default model in the default and the channels-last layout.

Run by hand (never from the tests):

    python bench/step_layouts.py [--steps 200] [--repeats 5] [--threads 1]

The default model (the small ResNet of ``config/config.yaml``, at its
initialisation) takes SGD steps (forward, backward, heavy-ball update, as
``training`` runs them: ``training.Numerics`` and ``heavy_ball.HeavyBall``) on
one fixed batch of digits-sized random images, for the batch sizes of the
default sweeps, with ``compute.channels_last`` off and on. Each repeat times
``--steps`` steps of every variant in turn (so drift of the machine hits all
alike); the report is the median milliseconds per step and the ratio
channels-last / default.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import yaml

from limiting_dynamics import heavy_ball, models, training

ROOT = Path(__file__).resolve().parents[1]


def stepper(cfg: dict, batch_size: int, channels_last: bool):
    torch.manual_seed(0)
    model = models.build_model(cfg["model"], 10, cfg["data"]["channels"]).train()
    size = cfg["data"]["image_size"]
    numerics = training.Numerics(channels_last, "none", False)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    forward = numerics.prepare(model)
    opt = heavy_ball.HeavyBall(model.parameters(), lr=0.02, momentum=0.9, weight_decay=5e-3)
    x = torch.randn(batch_size, cfg["data"]["channels"], size, size)
    y = torch.randint(0, 10, (batch_size,))

    def step():
        loss = numerics.loss(forward, x, y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    variants = {(s, cl): stepper(cfg, s, cl) for s in a.batch_sizes for cl in (False, True)}
    for step in variants.values():  # warm-up
        for _ in range(20):
            step()
    times = {k: [] for k in variants}
    for _ in range(a.repeats):
        for k, step in variants.items():
            t = time.perf_counter()
            for _ in range(a.steps):
                step()
            times[k].append((time.perf_counter() - t) / a.steps * 1e3)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {a.threads} thread(s)")
    print("batch size | ms per step, default layout | channels-last | ratio")
    for s in a.batch_sizes:
        d, c = statistics.median(times[(s, False)]), statistics.median(times[(s, True)])
        print(f"{s:10d} | {d:.2f} | {c:.2f} | {c / d:.2f}")


if __name__ == "__main__":
    main()
