"""A retried job gets more time: the rules' ``runtime`` (common.smk's
``runtime_by_attempt``) and the SLURM profile's per-rule limits are the base
times the attempt, as Snakemake evaluates them under ``--retries``."""

from __future__ import annotations

import copy

import pytest
import yaml
from conftest import REPO, TINY, Workflow

pytestmark = pytest.mark.integration

# the submitted jobs' runtime on the first attempt (minutes; the rules' base times)
SUBMITTED = {
    "prepare_data": 120,
    "converge": 120,
    "burn_in": 120,
    "hessian": 120,
    "gradient_noise": 60,
    "limiting_run": 240,
    "landscape": 60,
}

# a job that fails on its first attempt and logs the runtime Snakemake gave each attempt
PROBE = """

rule attempt_probe:
    output:
        "probe/{how}.txt",
    resources:
        runtime=runtime_by_attempt(120),
    shell:
        "echo {resources.runtime} >> probe/{wildcards.how}.log;"
        " test -e {output}.ok || {{ touch {output}.ok; exit 1; }}; touch {output}"
"""


@pytest.fixture(scope="module")
def wf(tmp_path_factory):
    w = Workflow(tmp_path_factory.mktemp("retries"), copy.deepcopy(TINY))
    with open(w.path("Snakefile"), "a") as f:
        f.write(PROBE)
    return w


def test_a_retried_job_gets_its_runtime_times_the_attempt(wf):
    wf.run("--retries", "2", "probe/rule.txt")
    assert wf.path("probe/rule.log").read_text().split() == ["120", "240"]


def test_the_slurm_profiles_limits_grow_with_the_attempt_as_snakemake_evaluates_them(wf):
    prof = yaml.safe_load((REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())
    assert prof["retries"] >= 1
    limits = {rule: res["runtime"] for rule, res in prof["set-resources"].items() if "runtime" in res}
    assert limits
    for rule, expr in limits.items():  # the base time, doubled on the first retry (below the cap)
        assert 2 * eval(str(expr), {"attempt": 1}) == eval(str(expr), {"attempt": 2}), rule
    expr = limits["converge"]  # as the profile hands it to Snakemake, on the probe job
    profile = {"retries": 1, "set-resources": {"attempt_probe": {"runtime": expr}}}
    wf.path("testprofile").mkdir()
    wf.path("testprofile/config.yaml").write_text(yaml.safe_dump(profile))
    wf.run("--workflow-profile", "testprofile", "probe/profile.txt")
    got = [int(x) for x in wf.path("probe/profile.log").read_text().split()]
    assert got == [eval(str(expr), {"attempt": a}) for a in (1, 2)]


def test_the_submitted_jobs_plan_their_base_runtime_on_the_first_attempt(wf):
    out = wf.run("-n", "--retries", "2").stdout
    for rule, minutes in SUBMITTED.items():
        block = out[out.index(f"rule {rule}:") :]
        resources = block[block.index("resources:") :].splitlines()[0]
        assert f"runtime={minutes}," in resources, (rule, resources)
