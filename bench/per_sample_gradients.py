"""Per-sample gradient statistics: torch.func vmap at several chunks vs a plain autograd loop vs "auto".

Run by hand (never from the tests):

    python bench/per_sample_gradients.py                      # ResNet-8 @ 1x8x8 and ResNet-18 @ 3x32x32, CPU
    python bench/per_sample_gradients.py --uncapped           # also raw vmap at chunks above the memory cap
    python bench/per_sample_gradients.py --device cuda        # on a GPU

Every timing is a whole ``noise.per_sample_noise`` call (eval mode, three
projection directions, the statistics included) on the same model and samples;
the configurations run interleaved (A B C ... A B C ...) for ``--repeats``
rounds, so that drift of a busy machine hits all of them alike, after a
warm-up on a few samples (none for auto, which warms up inside, as in use);
the median rate is reported with its ratio to the loop's median (and the best
repeat's, in brackets). "auto" times the loop on its first 8 samples and
tries vmap only while what that costs beyond the loop fits in 1% of the
loop's predicted time (``noise._calibrate``): under 900 samples it is the loop
itself, so the loop and auto (at the largest auto chunk) also run interleaved
on ``--long-samples`` (default 16384 for ResNet-8, 2048 for ResNet-18),
where the trial happens; its cost beyond the loop (``calibration_trial_s``)
is reported. ``per_sample_noise`` caps the chunk at ~0.8 GB
of float32 gradients (17 samples for ResNet-18): requested chunks above the
cap run at the cap and are measured once. ``--uncapped`` adds the raw vmap
gradients (no statistics, one chunk, after one warm-up chunk) at the requested
chunks above the cap, against the loop's raw gradients, for reference. ``--threads 1 2`` (the default) gives one
run per torch thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from limiting_dynamics import noise
from limiting_dynamics.models import build_model, count_parameters

CASES = {
    "resnet8@8px": ({"arch": "resnet", "blocks": [1, 1, 1], "width": 16, "stem": "cifar"}, 8, 1),
    "resnet18@32px": ({"arch": "resnet18", "blocks": [2, 2, 2, 2], "width": 64, "stem": "imagenet"}, 32, 3),
}
DEFAULT_SAMPLES = {"resnet8@8px": 1024, "resnet18@32px": 64}
DEFAULT_LONG_SAMPLES = {"resnet8@8px": 16384, "resnet18@32px": 2048}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def measure(
    case: str,
    n: int,
    device: torch.device,
    chunks: list[int],
    auto_chunks: list[int],
    repeats: int,
    uncapped: bool,
    long_samples: int = 0,
    long_chunk: int = 64,
) -> dict:
    cfg, size, channels = CASES[case]
    torch.manual_seed(0)
    model = build_model(cfg, 10, channels).to(device)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics, as at theta_0
        model(torch.rand(64, channels, size, size, device=device))
    model.eval()
    n_params = count_parameters(model)
    x = torch.rand(n, channels, size, size, device=device)  # digits-like / CIFAR-like intensities in [0, 1]
    y = torch.randint(0, 10, (n,), device=device)
    dirs = torch.nn.functional.normalize(torch.randn(3, n_params, device=device), dim=1)

    def run(method, chunk, k=n):
        sync(device)
        t, out = timed(lambda: noise.per_sample_noise(model, x[:k], y[:k], directions=dirs, chunk=chunk, method=method))
        sync(device)
        return t, out

    def effective(chunk):
        return run("vmap", chunk, k=1)[1]["chunk"]

    configs = {}  # label -> (method, chunk); vmap chunks above the cap measured once, at the cap
    requested = {}
    for c in chunks:
        e = effective(c)
        label = f"vmap@{e}"
        configs[label] = ("vmap", c)
        requested.setdefault(label, []).append(c)
    configs["loop"] = ("loop", min(chunks))
    for c in auto_chunks:
        configs[f"auto@{c}"] = ("auto", c)
        requested[f"auto@{c}"] = [c]

    for method, c in configs.values():  # warm-up: two chunks of each vmap, a few samples of the loop
        if method != "auto":  # (auto warms up inside, as it must in use)
            run(method, c, k=min(n, 2 * effective(c) if method == "vmap" else 4))
    times = {k: [] for k in configs}
    results = {}
    for _ in range(repeats):
        for label, (method, c) in configs.items():
            t, out = run(method, c)
            times[label].append(t)
            results.setdefault(label, []).append(out)
    loop_rate = statistics.median(n / t for t in times["loop"])
    loop_best = n / min(times["loop"])
    ref = results["loop"][0]
    rows = []
    for label, (method, c) in configs.items():
        rates = [n / t for t in times[label]]
        rate = statistics.median(rates)
        outs = results[label]
        row = {
            "config": label,
            "method": method,
            "chunk_requested": requested.get(label, [c]),
            "chunk_used": [o["chunk"] for o in outs],
            "samples_per_s": rate,
            "samples_per_s_all": rates,
            "ratio_to_loop": rate / loop_rate,
            "samples_per_s_best": max(rates),
            "ratio_to_loop_best": max(rates) / loop_best,
            "max_rel_diff_trace_c_vs_loop": max(abs(o["trace_c"] / ref["trace_c"] - 1) for o in outs),
        }
        if method == "auto":
            row["chosen"] = [o["method"] for o in outs]
            row["calibration_vmap_samples_per_s"] = [o["calibration_vmap_samples_per_s"] for o in outs]
            row["calibration_loop_samples_per_s"] = [o["calibration_loop_samples_per_s"] for o in outs]
            row["calibration_trial_s"] = [o["calibration_trial_s"] for o in outs]
        rows.append(row)
    loop_rates = [n / t for t in times["loop"]]
    # "Beyond noise": the auto median below the slowest loop repeat.
    for row in rows:
        if row["method"] == "auto":
            row["slower_than_loop_beyond_noise"] = row["samples_per_s"] < min(loop_rates)

    # Auto tries vmap only on jobs of 900+ samples: on top of the rows above,
    # loop vs auto at the workflow's chunk on more samples, where it does.
    long = None
    if long_samples > n:
        xl = torch.rand(long_samples, channels, size, size, device=device)
        yl = torch.randint(0, 10, (long_samples,), device=device)
        lt = {"loop": [], "auto": []}
        chosen, trial = [], []
        for _ in range(repeats):
            for method in lt:
                sync(device)
                t, out = timed(
                    lambda: noise.per_sample_noise(model, xl, yl, directions=dirs, chunk=long_chunk, method=method)  # noqa: B023
                )
                sync(device)
                lt[method].append(long_samples / t)
                if method == "auto":
                    chosen.append(f"{out['method']}@{out['chunk']}")
                    trial.append(out["calibration_trial_s"])
        long = {
            "n_samples": long_samples,
            "chunk_requested": long_chunk,
            "loop_samples_per_s_all": lt["loop"],
            "auto_samples_per_s_all": lt["auto"],
            "chosen": chosen,
            "calibration_trial_s": trial,
            "auto_ratio_to_loop": statistics.median(lt["auto"]) / statistics.median(lt["loop"]),
            "auto_ratio_to_loop_best": max(lt["auto"]) / max(lt["loop"]),
            "auto_slower_than_loop_beyond_noise": statistics.median(lt["auto"]) < min(lt["loop"]),
        }

    raw = []
    if uncapped:
        cap = noise.per_sample_noise(model, x[:1], y[:1], chunk=10**9, method="vmap")["chunk"]
        above = [c for c in chunks if cap < c <= n]
        psg = noise._PerSampleGradients(model, max(above, default=1))
        if above:  # the loop's gradients alone, on as many samples as the largest chunk, for the ratio
            k = max(above)
            psg.loop(x[:2], y[:2])  # warm-up
            sync(device)
            t, _ = timed(lambda: psg.loop(x[:k], y[:k]))
            sync(device)
            raw_loop = k / t
        for c in above:
            psg.vmap(x[:c], y[:c])  # warm-up
            sync(device)
            t, g = timed(lambda: psg.vmap(x[:c], y[:c]))  # noqa: B023
            sync(device)
            del g
            raw.append(
                {
                    "chunk": c,
                    "gradients_only_samples_per_s": c / t,
                    "loop_gradients_only_samples_per_s": raw_loop,
                    "ratio_to_loop": c / t / raw_loop,
                }
            )
    return {"case": case, "n_params": n_params, "n_samples": n, "rows": rows, "long": long, "raw_vmap_above_cap": raw}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="torch threads, one run each")
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--samples", type=int, default=None, help="per case (default: 1024 for ResNet-8, 64 for ResNet-18)")
    ap.add_argument("--chunks", nargs="+", type=int, default=[8, 16, 32, 64])
    ap.add_argument("--auto-chunks", nargs="+", type=int, default=[16, 64])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--uncapped", action="store_true")
    ap.add_argument(
        "--long-samples",
        type=int,
        default=None,
        help="loop vs auto (at the largest auto chunk) on this many samples where a case has fewer "
        "(default: 16384 for ResNet-8, 2048 for ResNet-18)",
    )
    ap.add_argument("--out", default="bench/per_sample_gradients.json")
    a = ap.parse_args()
    device = torch.device(a.device)
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu"
    runs = []
    for threads in a.threads:
        torch.set_num_threads(threads)
        t0 = time.perf_counter()
        load = [os.getloadavg()]
        cases = [
            measure(
                c,
                a.samples or DEFAULT_SAMPLES[c],
                device,
                a.chunks,
                a.auto_chunks,
                a.repeats,
                a.uncapped,
                a.long_samples or DEFAULT_LONG_SAMPLES[c],
                max(a.auto_chunks),
            )
            for c in a.cases
        ]
        load.append(os.getloadavg())
        runs.append(
            {"threads": threads, "seconds": time.perf_counter() - t0, "load_average_before_after": load, "cases": cases}
        )
        print(
            f"device {device} ({name}, {os.cpu_count()} cores), {threads} threads, torch {torch.__version__}, "
            f"{a.repeats} interleaved repeats, {runs[-1]['seconds']:.0f} s; load average (1, 5, 15 min) "
            f"{tuple(round(v, 2) for v in load[0])} before, {tuple(round(v, 2) for v in load[1])} after"
        )
        print(
            "samples/s and x loop: median of the repeats (best in brackets); d tr C: largest relative difference "
            "of tr C from the loop's"
        )
        print(
            f"{'case':14s} {'config':10s} {'chunk':>9s} {'samples/s':>18s} {'x loop':>13s} {'d tr C':>8s}  auto chose"
        )
        for case in cases:
            for r in case["rows"]:
                req = "/".join(map(str, r["chunk_requested"]))
                used = "/".join(map(str, sorted(set(r["chunk_used"]))))
                chunk = f"{req}->{used}" if used != req else req
                chose = ",".join(r.get("chosen", []))
                print(
                    f"{case['case']:14s} {r['config']:10s} {chunk:>9s} {r['samples_per_s']:8.1f} "
                    f"({r['samples_per_s_best']:7.1f}) {r['ratio_to_loop']:5.2f} ({r['ratio_to_loop_best']:5.2f}) "
                    f"{r['max_rel_diff_trace_c_vs_loop']:8.1e}  {chose}"
                )
            lg = case["long"]
            if lg:
                n_l = f"n={lg['n_samples']}"
                lo, au = lg["loop_samples_per_s_all"], lg["auto_samples_per_s_all"]
                print(
                    f"{case['case']:14s} {'loop':10s} {n_l:>9s} {statistics.median(lo):8.1f} ({max(lo):7.1f}) "
                    f"{1:5.2f} ({1:5.2f})"
                )
                print(
                    f"{case['case']:14s} {'auto@' + str(lg['chunk_requested']):10s} {n_l:>9s} "
                    f"{statistics.median(au):8.1f} ({max(au):7.1f}) {lg['auto_ratio_to_loop']:5.2f} "
                    f"({lg['auto_ratio_to_loop_best']:5.2f}) {'':8s}  {','.join(lg['chosen'])}; trial cost "
                    f"beyond the loop {', '.join(f'{t:.2f}' for t in lg['calibration_trial_s'])} s"
                )
            for r in case["raw_vmap_above_cap"]:
                print(
                    f"{case['case']:14s} {'raw vmap':10s} {r['chunk']:9d} {r['gradients_only_samples_per_s']:8.1f} "
                    f"{'':9s} {r['ratio_to_loop']:5.2f}  (gradients only, one chunk above the cap; "
                    f"the loop's alone: {r['loop_gradients_only_samples_per_s']:.1f}/s)"
                )
        print()
    with open(a.out, "w") as fh:
        json.dump(
            {
                "device": str(device),
                "device_name": name,
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "repeats": a.repeats,
                "auto_vmap_margin": noise.AUTO_VMAP_MARGIN,
                "auto_trial_budget": noise.AUTO_TRIAL_BUDGET,
                "runs": runs,
            },
            fh,
            indent=2,
        )


if __name__ == "__main__":
    main()
