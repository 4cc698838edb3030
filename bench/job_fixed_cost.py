"""Fixed cost of the workflow's jobs: process start to the first step, product or figure.

Run by hand in a directory holding a finished default run (results/ complete):

    python bench/job_fixed_cost.py [--workdir .] [--repeats 3] [--out bench/job_fixed_cost.json]

For one job of each rule below, the script asks Snakemake (dry run,
``--forcerun``) for the job's exact command, then starts it as the workflow
would, with the first call of the function that starts the job's work hooked: the
model's first forward pass (``torch.nn.Module.__call__``: the first step of a
training job, the first gradient of the Hessian or noise job) and the figure's
save (plot). At that first
call the process reports the time since it was launched and exits, so nothing is
written. ``import torch`` alone in a fresh interpreter is the reference: the
issue's target is a median fixed cost at most 0.5 s beyond it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

# rule -> (a target that rule makes, module to hook, object in it or None, function): the default cell's jobs
JOBS = {
    "converge": ("results/converge/converged.pt", "torch.nn", "Module", "__call__"),
    "burn_in": ("results/runs/lr0.02_bs64_mom0.9_wd0.005_seed0/theta0.pt", "torch.nn", "Module", "__call__"),
    "limiting_run": ("results/runs/lr0.02_bs64_mom0.9_wd0.005_seed0/record.npz", "torch.nn", "Module", "__call__"),
    "hessian": ("results/hessian/lr0.02_bs64_mom0.9_wd0.005_seed0.nc", "torch.nn", "Module", "__call__"),
    "gradient_noise": ("results/noise/lr0.02_bs64_mom0.9_wd0.005_seed0.nc", "torch.nn", "Module", "__call__"),
    "plot": ("results/figures/msd.png", "limiting_dynamics.plots.style", None, "save"),
}

CHILD = """
import os, sys, time, importlib
t0 = float(os.environ["BENCH_LAUNCH"])
mod = importlib.import_module(os.environ["BENCH_MODULE"])
owner = getattr(mod, os.environ["BENCH_OWNER"]) if os.environ["BENCH_OWNER"] else mod
name = os.environ["BENCH_FUNCTION"]
original = getattr(owner, name)
def first_call(*a, **k):
    print("BENCH_FIRST_CALL", time.time() - t0, flush=True)
    os._exit(0)
setattr(owner, name, first_call)
sys.argv = ["limiting-dynamics"] + sys.argv[1:]
from limiting_dynamics.cli import main
sys.exit(main())
"""


def command_of(rule: str, target: str, workdir: Path) -> list[str]:
    """The job's ``limiting-dynamics ...`` arguments from a Snakemake dry run."""
    out = subprocess.run(
        ["snakemake", "-n", "-p", "--cores", "1", "--force", target],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    )
    out = out.stdout + out.stderr  # Snakemake logs the dry run on stderr
    lines = [x for x in out.splitlines() if "limiting-dynamics " in x]
    if not lines:
        raise SystemExit(f"{rule}: no command for {target} in the dry run:\n{out[-1500:]}")
    line = lines[0]
    line = line[line.index("limiting-dynamics ") :]  # Snakemake prints it as "Shell command: ..."
    line = re.sub(r"\s*>\s*\S+\s+2>&1\s*$", "", line.strip())  # drop the log redirection
    return shlex.split(line)[1:]


def launch(args: list[str], hook: tuple, workdir: Path) -> float:
    module, owner, function = hook
    env = dict(
        os.environ,
        BENCH_LAUNCH=repr(time.time()),
        BENCH_MODULE=module,
        BENCH_OWNER=owner or "",
        BENCH_FUNCTION=function,
    )
    out = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=workdir, env=env, capture_output=True, text=True)
    found = re.search(r"BENCH_FIRST_CALL ([0-9.eE+-]+)", out.stdout)
    if not found:
        raise SystemExit(f"no first call in {args[0]}: rc {out.returncode}\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return float(found.group(1))


def import_torch(workdir: Path) -> float:
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import torch"], cwd=workdir, check=True)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/job_fixed_cost.json")
    a = ap.parse_args()
    workdir = Path(a.workdir).resolve()
    torch_s = statistics.median(import_torch(workdir) for _ in range(a.repeats))
    rows = {}
    for rule, (target, *hook) in JOBS.items():
        args = command_of(rule, target, workdir)
        times = [launch(args, tuple(hook), workdir) for _ in range(a.repeats)]
        rows[rule] = {"median_s": statistics.median(times), "times_s": times, "beyond_import_torch_s": None}
        rows[rule]["beyond_import_torch_s"] = rows[rule]["median_s"] - torch_s
        extra = rows[rule]["beyond_import_torch_s"]
        print(
            f"{rule:16s} first {hook[-1]} after {rows[rule]['median_s']:.2f} s ({extra:+.2f} s beyond import torch), "
            f"runs {', '.join(f'{t:.2f}' for t in times)}",
            flush=True,
        )
    torch_jobs = [r["beyond_import_torch_s"] for k, r in rows.items() if k != "plot"]
    print(f"import torch: {torch_s:.2f} s; median beyond it over the torch jobs: {statistics.median(torch_jobs):.2f} s")
    Path(a.out).write_text(json.dumps({"import_torch_s": torch_s, "jobs": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
