"""The workflow through the SLURM profile on a real single-node SLURM, with a
limiting run requeued (pre-empted) while it runs."""

from __future__ import annotations

import copy
import os
import subprocess
import time

import numpy as np
import pytest
import xarray as xr
import yaml
from conftest import REPO, TINY, Workflow, _snakemake_exe
from slurm_cluster import SingleNodeSlurm, available

pytestmark = pytest.mark.integration


DEFAULT = "lr0.05_bs32_mom0.9_wd0.005_seed0"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = available()
    if why:  # under CI (.ci/run installs SLURM first) a missing cluster is a failure, not a skip
        (pytest.fail if os.environ.get("LIMITING_DYNAMICS_CI") else pytest.skip)(why)
    import snakemake_executor_plugin_slurm  # noqa: F401  (in the test extra)

    c = SingleNodeSlurm(tmp_path_factory.mktemp("slurm")).start()
    yield c
    c.stop()


def _test_profile(root) -> None:
    """The shipped profile with its SITE lines filled in for the test cluster
    (what a user does), plus the settings a cluster without slurmdbd needs."""
    prof = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    prof["default-resources"]["slurm_partition"] = "debug"
    del prof["default-resources"]["slurm_account"]
    prof["slurm-no-account"] = True
    for res in prof["set-resources"].values():
        res.pop("slurm_partition", None)
        res.pop("gpu_model", None)
        res["runtime"] = 15
    # the convergence job asks for a GPU: the plugin submits it with --gpus and the
    # node's fake GPU (File=/dev/null) schedules it; it computes on the CPU (device: cpu)
    prof["set-resources"].setdefault("converge", {})["gpu"] = 1
    prof.update(
        {
            "slurm-status-command": "squeue",
            "slurm-init-seconds-before-status-checks": 2,
            "seconds-between-status-checks": 2,
            "latency-wait": 5,
        }
    )
    (root / "testprofile").mkdir()
    (root / "testprofile" / "config.yaml").write_text(yaml.safe_dump(prof))


def test_workflow_runs_through_the_slurm_profile_and_survives_a_requeue(cluster, tmp_path):
    cfg = copy.deepcopy(TINY)
    for section in ("linear_regression", "hessian", "noise", "landscape"):  # fewer chained cluster stages:
        cfg[section]["enabled"] = False  # the plugin's status checks back off to ~36 s per stage
    cfg["limiting"]["phase_space"]["modes"] = 0
    cfg["cells"]["quadratic"]["lr"] = []  # the two cells of the sweep are enough on the cluster
    cfg["limiting"]["steps"] = 2000
    cfg["limiting"]["eval_every"] = 1000
    cfg["compute"]["checkpoint_steps"] = 100
    wf = Workflow(tmp_path, cfg)
    _test_profile(tmp_path)
    env = {**wf._env(slurm=True), "SLURM_CONF": str(cluster.conf)}
    start = time.monotonic()
    proc = subprocess.Popen(
        ["timeout", "900", _snakemake_exe(), "--workflow-profile", "testprofile"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    resume = wf.path(f"results/runs/{DEFAULT}/resume.pt")
    requeued, released, gpu_rules = None, False, set()
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        jobs, gpu = cluster.squeue(), cluster.gpu_jobs()
        gpu_rules |= {comment.split("_wildcards")[0] for j, comment, _ in jobs if j in gpu}
        if requeued is None and resume.exists():  # the default cell's limiting run is under way on the cluster
            running = [
                j
                for j, comment, state in jobs
                if state == "RUNNING" and "limiting_run" in comment and DEFAULT in comment
            ]
            if running:
                assert cluster.scontrol("requeue", running[0]).returncode == 0
                requeued = running[0]
        if requeued is not None and not released and (requeued, "PENDING") in {(j[0], j[2]) for j in jobs}:
            # SLURM holds a requeued job for about two minutes before it may start again
            released = cluster.scontrol("update", f"JobId={requeued}", "StartTime=now").returncode == 0
        time.sleep(0.2)
    out = proc.communicate(timeout=300)[0]
    seconds = time.monotonic() - start
    assert proc.returncode == 0, out[-4000:]
    assert requeued is not None and released, "the limiting run was never seen running, or not requeued"
    assert gpu_rules == {"rule_converge"}, gpu_rules  # only the job given gpu=1 held a (fake) GPU
    log = wf.path(f"results/logs/limiting_run/{DEFAULT}.log").read_text()
    assert "resuming after step" in log, log[-2000:]
    traj = xr.load_dataset(wf.path(f"results/trajectories/{DEFAULT}.nc"))
    assert traj.sizes["step"] == 2000 and np.isfinite(traj.sq_dist_from_start.values).all()
    assert wf.path("results/figures/msd.png").exists()
    submitted = out.count("has been submitted with SLURM jobid")
    print(f"SLURM run: {seconds:.0f} s, {submitted} jobs submitted, job {requeued} requeued")
    assert submitted == 6  # data, convergence, and per cell: burn-in, limiting run
