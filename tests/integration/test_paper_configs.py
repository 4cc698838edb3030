"""The paper-scale configs plan the right jobs with the right resources
(``snakemake -n`` against tiny generated data sets in the real formats)."""

from __future__ import annotations

import collections
import copy
import re

import pytest
import yaml
from conftest import REPO, Workflow
from generated_data import write_cifar10, write_image_folder
from snakemake.utils import update_config

from limiting_dynamics.config import cells_by_id

pytestmark = pytest.mark.integration


PER_CELL = ("burn_in", "hessian", "gradient_noise", "limiting_run", "export_trajectory", "analyze_cell", "compare_cell")


GPU_RULES = ("converge", "burn_in", "hessian", "gradient_noise", "limiting_run", "landscape")


def _planned(text: str) -> tuple[collections.Counter, dict]:
    """Jobs per rule and the resources line of each rule's first job, from a dry run."""
    counts, resources = collections.Counter(), {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        m = re.match(r"(?:local)?rule (\w+):", block)
        if not m or m.group(1) == "all":
            continue
        counts[m.group(1)] += 1
        res = re.search(r"resources: (.*)", block)
        resources.setdefault(m.group(1), dict(kv.split("=", 1) for kv in res.group(1).split(", ")) if res else {})
    return counts, resources


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper-data")
    return {"imagenet": write_image_folder(root / "imagenet"), "cifar10": write_cifar10(root / "cifar-10-batches-py")}


@pytest.mark.parametrize(
    "files,n_cells",
    [
        (("paper_imagenet.yaml", "paper_sweeps.yaml"), 60),
        (("paper_imagenet.yaml", "paper_grid.yaml"), 27),
        (("paper_imagenet.yaml", "paper_phase_space.yaml"), 2),
        (("cifar10.yaml",), 7),
        (("cifar10.yaml", "paper_sweeps.yaml"), 60),
    ],
)
def test_paper_config_plans_every_cell_on_a_gpu(tmp_path, data_dirs, files, n_cells):
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    wf = Workflow(tmp_path, base)
    merged = copy.deepcopy(base)
    for name in files:
        over = yaml.safe_load((REPO / "config" / name).read_text())
        if "data" in over:  # point the data set at the generated files
            over["data"]["path"] = str(data_dirs[over["data"]["name"]])
        if (over.get("converge") or {}).get("checkpoint"):  # the dry run only checks that the file exists
            weights = tmp_path / "weights.pth"
            weights.touch()
            over["converge"]["checkpoint"] = str(weights)
        (tmp_path / "config" / name).write_text(yaml.safe_dump(over))
        update_config(merged, copy.deepcopy(over))  # what --configfile does
    assert len(cells_by_id(merged)) == n_cells
    proc = wf.run("-n", "--configfile", *(f"config/{f}" for f in files))
    counts, resources = _planned(proc.stdout + proc.stderr)
    for rule in PER_CELL:
        assert counts[rule] == n_cells, rule
    assert counts["converge"] == 1 and counts["prepare_data"] == 1 and counts["landscape"] == 1
    assert "linreg_cell" not in counts  # the exactly solvable check stays with the embedded default
    for rule in GPU_RULES:
        assert resources[rule]["gpu"] == "1", rule
        assert resources[rule]["mem_mb"] == str(merged["compute"]["mem_mb"]), rule
    assert "gpu" not in resources["plot"] or resources["plot"]["gpu"] == "0"
    assert resources["limiting_run"]["checkpoint_every"] == str(merged["compute"]["checkpoint_steps"])
    hess = merged["hessian"]
    assert (hess["top_k"], hess["n_samples"], merged["landscape"]["grid"]) == PAPER_SCALE_HESSIAN[files[0]]


# the paper-scale Hessian and landscape of each base config: top_k, Hessian samples, landscape grid
PAPER_SCALE_HESSIAN = {"paper_imagenet.yaml": (30, 40960, 40), "cifar10.yaml": (30, 10240, 40)}
