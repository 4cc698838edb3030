"""Where two finished runs spent their time, job by job, from Snakemake's benchmarks.

Run by hand (never from the tests):

    python bench/job_seconds.py RUN_A RUN_B

``RUN_A`` and ``RUN_B`` are working copies whose ``results/benchmarks/`` a run
filled (one ``.tsv`` per job, the wall seconds in column ``s``). Prints, per
rule, the job count and job seconds of each run, then the same for the jobs
the two runs share by name (the same rule and wildcards: the same cell, seed or
figure), so that a run of a larger config can be compared with an older,
smaller one on the work both did. Two runs compare fairly only when they met
the same state of the machine: started together with ``--cores 1`` each, or
interleaved.
"""

from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path


def job_seconds(run: Path) -> dict[str, float]:
    """``{job: seconds}`` with ``job`` the benchmark's path under ``results/benchmarks``."""
    root = run / "results" / "benchmarks"
    if not root.is_dir():
        raise SystemExit(f"{root} does not exist: give the working copy of a finished run")
    out = {}
    for f in sorted(root.rglob("*.tsv")):
        with f.open() as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        if rows:
            out[str(f.relative_to(root))] = float(rows[0]["s"])
    return out


def rule_of(job: str) -> str:
    return job.split("/")[0].removesuffix(".tsv")


def by_rule(jobs: dict[str, float], names) -> dict[str, tuple[int, float]]:
    out: dict[str, list] = defaultdict(lambda: [0, 0.0])
    for name in names:
        out[rule_of(name)][0] += 1
        out[rule_of(name)][1] += jobs[name]
    return {rule: (n, s) for rule, (n, s) in out.items()}


def table(a: dict[str, float], b: dict[str, float], names_a, names_b, title: str) -> None:
    ra, rb = by_rule(a, names_a), by_rule(b, names_b)
    print(f"\n{title}\n| rule | jobs A | job s A | jobs B | job s B | B / A |\n|---|---|---|---|---|---|")
    for rule in sorted(set(ra) | set(rb), key=lambda r: -max(ra.get(r, (0, 0))[1], rb.get(r, (0, 0))[1])):
        (na, sa), (nb, sb) = ra.get(rule, (0, 0.0)), rb.get(rule, (0, 0.0))
        ratio = f"{sb / sa:.2f}" if sa > 0 else "-"
        print(f"| {rule} | {na} | {sa:.0f} | {nb} | {sb:.0f} | {ratio} |")
    ta, tb = sum(a[n] for n in names_a), sum(b[n] for n in names_b)
    print(f"| all | {len(names_a)} | {ta:.0f} | {len(names_b)} | {tb:.0f} | {tb / ta:.3f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_a", type=Path)
    ap.add_argument("run_b", type=Path)
    args = ap.parse_args()
    a, b = job_seconds(args.run_a), job_seconds(args.run_b)
    table(a, b, list(a), list(b), "every job")
    shared = sorted(set(a) & set(b))
    table(a, b, shared, shared, f"the {len(shared)} jobs both runs have")


if __name__ == "__main__":
    main()
