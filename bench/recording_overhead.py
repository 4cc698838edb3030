"""Cost of the per-step recording, measured against the same loop without it.

Run by hand (never from the tests):

    python bench/recording_overhead.py                 # default: ResNet-8 @ 8px and ResNet-18 @ 32px
    python bench/recording_overhead.py --device cuda   # on a GPU

Both loops run in the same process on the same model and batches, interleaved
in alternating blocks (A B A B ...) so that drift of a noisy machine hits both
equally; the ratio of median block times is reported. Both loops use flat
parameters and momentum buffers and the same SGD (``training.sgd``: fused where
the device has the kernel) as ``training.limiting_run`` does; the
recorded one adds ``StepRecorder.record`` with the workflow's defaults: the
loss, ||theta - theta_0||^2, ||v||^2 and ||theta||^2 every step (fused with
torch.compile for models of 1M+ parameters) and per-tensor norms at steps
1..10 and every 10th step, all into a preallocated device tensor. A third
loop ("phase") records in addition the phase space as the workflow's default
does: projections of theta - theta_0 and v on 10 orthonormal directions and a
128-number block-sign sketch of theta - theta_0, every step.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from limiting_dynamics.models import build_model, count_parameters
from limiting_dynamics.recording import FlatParameters, StepRecorder
from limiting_dynamics.training import sgd

CASES = {
    "resnet8@8px": ({"arch": "resnet", "blocks": [1, 1, 1], "width": 16, "stem": "cifar"}, 8, 1),
    "resnet18@32px": ({"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 64, "stem": "imagenet"}, 32, 3),
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    case: str,
    batch_size: int,
    device: torch.device,
    blocks: int,
    steps_per_block: int,
    modes: int = 10,
    sketch_dim: int = 128,
) -> dict:
    cfg, size, channels = CASES[case]
    torch.manual_seed(0)
    model = build_model(cfg, 10, channels).to(device).train()
    flat = FlatParameters(model)
    opt = sgd(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    flat_v = flat.install_momentum_buffers(opt)
    x = torch.randn(512, channels, size, size, device=device)
    y = torch.randint(0, 10, (512,), device=device)
    g = torch.Generator().manual_seed(0)
    rec = StepRecorder(flat, flat_v, steps=blocks * steps_per_block + 1, tensor_every=10, compile="auto")
    dirs = torch.linalg.qr(torch.randn(flat.numel, modes, generator=torch.Generator().manual_seed(1)))[0].T
    rec_phase = StepRecorder(
        flat,
        flat_v,
        steps=blocks * steps_per_block + 1,
        tensor_every=10,
        compile="auto",
        directions=dirs.contiguous().to(device),
        sketch_dim=sketch_dim,
    )

    def block(record) -> float:
        sync(device)
        t = time.perf_counter()
        for _ in range(steps_per_block):
            idx = torch.randint(512, (batch_size,), generator=g).to(device)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
            if record:
                record.record(loss)
        sync(device)
        return (time.perf_counter() - t) / steps_per_block

    block(None), block(rec), block(rec_phase)  # warm-up
    rec.reset(), rec_phase.reset()
    plain, recorded, phase = [], [], []
    for _ in range(blocks):
        plain.append(block(None))
        recorded.append(block(rec))
        phase.append(block(rec_phase))
    p, r, ph = statistics.median(plain), statistics.median(recorded), statistics.median(phase)
    # The recording alone (same calls, no training in between): a low-noise
    # estimate of its cost, which the A/B ratio above confirms within the noise.
    loss = torch.zeros((), device=device)
    n_alone = min(rec.steps, blocks * steps_per_block)

    def alone_ms(recorder) -> float:
        recorder.reset()
        sync(device)
        t = time.perf_counter()
        for _ in range(n_alone):
            recorder.record(loss)
        sync(device)
        return (time.perf_counter() - t) / n_alone

    alone, phase_alone = alone_ms(rec), alone_ms(rec_phase)
    return {
        "case": case,
        "batch_size": batch_size,
        "n_params": count_parameters(model),
        "optimizer": opt.name,
        "step_ms_plain": 1e3 * p,
        "step_ms_recorded": 1e3 * r,
        "overhead": r / p - 1,
        "record_ms_alone": 1e3 * alone,
        "overhead_alone": alone / p,
        "modes": modes,
        "sketch_dim": sketch_dim,
        "step_ms_phase": 1e3 * ph,
        "overhead_phase": ph / p - 1,
        "record_phase_ms_alone": 1e3 * phase_alone,
        "overhead_phase_alone": phase_alone / p,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--batch-sizes", nargs="+", type=int, default=[32, 64])
    ap.add_argument("--blocks", type=int, default=10)
    ap.add_argument("--steps-per-block", type=int, default=20)
    ap.add_argument("--out", default="bench/recording_overhead.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    rows = [measure(c, b, device, a.blocks, a.steps_per_block) for c in a.cases for b in a.batch_sizes]
    print(
        f"device {device} "
        f"({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor() or 'cpu'}), "
        f"{a.threads} threads, torch {torch.__version__}"
    )
    print(
        f"optimizer {rows[0]['optimizer']}; 'A/B': recorded/plain - 1 from interleaved blocks; "
        f"'alone': cost of the recording calls alone / plain step"
    )
    print(
        f"{'case':16s} {'S':>4s} {'params':>10s} {'plain ms':>9s} {'recorded ms':>12s} {'A/B':>8s} "
        f"{'record ms':>10s} {'alone':>7s} | {'phase A/B':>9s} {'alone':>7s}"
    )
    for r in rows:
        print(
            f"{r['case']:16s} {r['batch_size']:4d} {r['n_params']:10d} {r['step_ms_plain']:9.2f} "
            f"{r['step_ms_recorded']:12.2f} {100 * r['overhead']:7.2f}% {r['record_ms_alone']:10.3f} "
            f"{100 * r['overhead_alone']:6.2f}% | {100 * r['overhead_phase']:8.2f}% "
            f"{100 * r['overhead_phase_alone']:6.2f}%"
        )
    with open(a.out, "w") as fh:
        json.dump({"device": str(device), "threads": a.threads, "torch": torch.__version__, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
