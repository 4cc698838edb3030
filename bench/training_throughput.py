"""ResNet-18 training throughput at 224 x 224: compute ceiling, real loader, recording.

Run by hand (never from the tests). On a GPU node:

    python bench/training_throughput.py --device cuda --batch-size 256 --steps 50 --workers 15 \
        --channels-last [--autocast bfloat16] [--compile]

and the CPU variant (what this repository's development machine can run):

    python bench/training_throughput.py --device cpu --batch-size 16 --steps 4 --workers 1

Three ways of running the same SGD step (the package's ``training.Numerics``
loss, fused ``torch.optim.SGD``, parameters in one flat buffer), each for
``--steps`` timed steps after warm-up, repeated ``--repeats`` times in turn so
that drift of the machine hits all alike; medians are reported:

* ``synthetic``: one batch of random images resident on the device, reused:
  the compute ceiling;
* ``loader``: batches streamed by ``limiting_dynamics.data.streaming`` from a
  generated ImageFolder of JPEG files (``--images`` of about ImageNet's mean
  size, 400 x 350), decoded, randomly cropped to 224 and flipped on
  ``--workers`` DataLoader processes, pinned and copied without blocking;
* ``recorded``: ``synthetic`` plus the full per-step record of the paper
  config (the norms, projections on 30 directions and a 128-number sketch).

Ratios: ``loader_efficiency = loader / synthetic`` images/s (goal >= 0.8) and
``recording_overhead = synthetic / recorded - 1`` (goal < 2% on a GPU).
Achieved FLOP/s take a training step as 3x the forward pass of 1.82 GFLOP per
224-px image; the peak is the device's dense peak for the arithmetic used
(``--peak-tflops``, or a table for H100/H200), and on the CPU the measured rate
of a large float32 matrix product (so the fraction is "of what this CPU's GEMM
reaches", not of a datasheet number).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

FORWARD_GFLOP = 1.82  # ResNet-18, one 224 x 224 image (torchvision's model card)
PEAK_TFLOPS = {  # dense, per GPU, from NVIDIA's datasheets: (float32 without tensor cores, tf32, bf16)
    "H100": (67.0, 494.5, 989.4),  # H100 SXM
    "H200": (67.0, 494.5, 989.4),
}


def write_jpeg_folder(root: Path, n: int, classes: int = 10, seed: int = 0) -> Path:
    """``train/`` and ``val/`` ImageFolder trees of smooth random 400 x 350 JPEGs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:350, 0:400] / 400.0
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            d = root / split / f"n{i % classes:02d}"
            d.mkdir(parents=True, exist_ok=True)
            a, b, c = rng.uniform(-4, 4, 3)
            base = np.sin(a * xx + b * yy + c)[..., None] * rng.uniform(40, 120, 3) + 128
            img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"img_{i:05d}.JPEG", quality=90)
    return root


def gemm_tflops(device: torch.device, n: int = 2048, repeats: int = 5) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e12


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the main process")
    ap.add_argument("--images", type=int, default=0, help="JPEGs to generate (default: enough for the run)")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--autocast", default="none", choices=["none", "bfloat16"])
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--out", default=None, help="JSON report (default bench/training_throughput_<device>.json)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)

    from limiting_dynamics.data import datasets as data
    from limiting_dynamics.data.drawing import BatchDrawing
    from limiting_dynamics.models import build_model
    from limiting_dynamics.recording import FlatParameters, StepRecorder
    from limiting_dynamics.training import Numerics, sgd

    numerics = Numerics(a.channels_last, a.autocast, a.compile)
    torch.manual_seed(0)
    model = build_model({"arch": "resnet18"}, 1000, 3).to(device).train()
    flat = FlatParameters(model, channels_last=a.channels_last)
    forward = numerics.prepare(model)
    opt = sgd(model, lr=1e-4, momentum=0.9, weight_decay=1e-4)
    flat_v = flat.install_momentum_buffers(opt)
    total_steps = (a.repeats + 1) * a.steps
    dirs = torch.linalg.qr(torch.randn(flat.numel, 30, generator=torch.Generator().manual_seed(1)))[0].T
    rec = StepRecorder(
        flat,
        flat_v,
        steps=total_steps + 1,
        tensor_every=10,
        compile="auto",
        directions=dirs.contiguous().to(device),
        sketch_dim=128,
    )

    n_images = a.images or min(total_steps * a.batch_size, 20000)
    tmp = Path(tempfile.mkdtemp(prefix="ld-throughput-"))
    t0 = time.perf_counter()
    root = write_jpeg_folder(tmp / "imagenet", n_images)
    gen_s = time.perf_counter() - t0
    prepared = data.prepare(
        {
            "name": "imagenet",
            "path": str(root),
            "image_size": 224,
            "channels": 3,
            "loader": "stream",
            "stream_subset": 10,
            "split_seed": 0,
        },
        workers=max(1, a.workers),
    )
    data.save_prepared(prepared, tmp / "imagenet.npz")
    stream = data.load_prepared(tmp / "imagenet.npz", device, workers=a.workers)
    batches = stream.train_batches(a.batch_size, BatchDrawing("reshuffle", 0, 0.0), 0)
    x_syn = torch.randn(a.batch_size, 3, 224, 224, device=device)
    y_syn = torch.randint(0, 1000, (a.batch_size,), device=device)

    def step(x, y):
        loss = numerics.loss(forward, x, y)
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss

    def run(mode: str) -> float:
        sync(device)
        t = time.perf_counter()
        for _ in range(a.steps):
            if mode == "loader":
                step(*batches.next())
            else:
                loss = step(x_syn, y_syn)
                if mode == "recorded":
                    rec.record(loss)
        sync(device)
        return a.steps * a.batch_size / (time.perf_counter() - t)

    modes = ("synthetic", "loader", "recorded")
    for m in modes:  # warm-up: kernels, allocator, compile, worker start-up and read-ahead
        run(m)
    rates = {m: [] for m in modes}
    for _ in range(a.repeats):
        for m in modes:
            rates[m].append(run(m))
    med = {m: statistics.median(v) for m, v in rates.items()}
    batches.close()

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        key = next((k for k in PEAK_TFLOPS if k in name), None)
        column = (
            2
            if a.autocast == "bfloat16"
            else (1 if torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32 else 0)
        )
        peak = a.peak_tflops or (PEAK_TFLOPS[key][column] if key else None)
        peak_source = "--peak-tflops" if a.peak_tflops else (f"datasheet {key}" if key else "unknown")
    else:
        name = platform.processor() or platform.machine()
        peak = a.peak_tflops or gemm_tflops(device)
        peak_source = "--peak-tflops" if a.peak_tflops else "measured float32 GEMM (2048^3)"
    achieved = med["synthetic"] * 3 * FORWARD_GFLOP / 1e3  # TFLOP/s
    report = {
        "device": name,
        "torch": torch.__version__,
        "batch_size": a.batch_size,
        "steps": a.steps,
        "repeats": a.repeats,
        "workers": a.workers,
        "threads": a.threads,
        "numerics": numerics.describe(),
        "jpeg_images": n_images,
        "jpeg_generation_s": round(gen_s, 1),
        "images_per_s": {m: round(v, 2) for m, v in med.items()},
        "images_per_s_all": {m: [round(x, 2) for x in v] for m, v in rates.items()},
        "loader_efficiency": med["loader"] / med["synthetic"],
        "recording_overhead": med["synthetic"] / med["recorded"] - 1,
        "achieved_tflops": achieved,
        "peak_tflops": peak,
        "peak_source": peak_source,
        "fraction_of_peak": achieved / peak if peak else None,
    }
    print(json.dumps(report, indent=2))
    out = Path(a.out or Path(__file__).with_name(f"training_throughput_{device.type}.json"))
    out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
