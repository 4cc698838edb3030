"""The figure registry (limiting_dynamics.figures): every entry is complete and
consistent with its plotting function, the plot stage and the command line; the
plot stage opens the inputs by role and passes them on by name."""

from __future__ import annotations

import inspect
import json
import string
import subprocess
import sys
import types

import pandas as pd
import pytest
import xarray as xr

from limiting_dynamics import cli, figures
from limiting_dynamics.errors import FigureError
from limiting_dynamics.figures import FIGURES
from limiting_dynamics.stages import plot


def test_the_registry_loads_no_plotting_library():
    """The Snakefile imports it: no matplotlib, seaborn, xarray or torch for a dry run."""
    code = (
        "import sys, limiting_dynamics.figures\n"
        "print(sorted(m for m in ('matplotlib', 'seaborn', 'xarray', 'pandas', 'torch') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_figure_is_complete(name):
    fig = FIGURES[name]
    assert fig.category and fig.caption.strip() and fig.caption == inspect.cleandoc(fig.caption)
    assert set(fig.needs) <= set(figures.SWITCHES)
    for role, spec in fig.inputs.items():
        assert role.isidentifier() and not hasattr(list, role) and role not in ("items", "keys", "get", "update")
        assert spec.read in figures.READS and spec.read in plot.READERS
        for pattern in spec.patterns:
            placeholders = {n for _, n, _, _ in string.Formatter().parse(pattern) if n}
            assert placeholders <= set(figures.CONTEXT), pattern


@pytest.mark.parametrize("name", list(FIGURES))
def test_every_plotting_function_takes_its_roles_and_settings_by_name(name):
    fig = FIGURES[name]
    function = plot.drawing(name)
    signature = inspect.signature(function)
    signature.bind(**dict.fromkeys(fig.inputs), **dict.fromkeys(fig.settings), path="out.png", dpi=50)


def test_the_readers_are_the_kinds_the_registry_names():
    assert sorted(plot.READERS) == sorted(figures.READS)


def test_the_command_line_draws_every_figure_of_the_registry():
    parser = cli.build_parser()
    for name in FIGURES:
        a = parser.parse_args(["plot", name, "--inputs", "none", "--params", "{}", "--out", "x.png"])
        assert a.figure == name
    with pytest.raises(SystemExit):
        parser.parse_args(["plot", "no_such_figure", "--inputs", "none", "--params", "{}", "--out", "x.png"])


def test_inputs_expand_over_the_cells_of_the_context():
    context = {"probed": ["a", "b"], "phase_cell": "b", "linreg": ["m1", "m2"]}
    assert figures.figure_files("phase_space", context) == {
        "traj": ["results/trajectories/b.nc"],
        "comparison": ["results/analysis/theory/b.nc"],
    }
    assert figures.figure_files("theory_modes", context) == {
        "cells": ["results/analysis/theory/a.nc", "results/analysis/theory/b.nc"],
        "predictions": ["results/analysis/predictions.csv"],
    }
    assert figures.figure_files("linreg_theory", context)["cells"] == [
        "results/linear_regression/m1.nc",
        "results/linear_regression/m2.nc",
    ]
    assert figures.figure_files("theory_power_law", context) == {}


def test_the_switches_select_the_figures():
    off = dict.fromkeys(figures.SWITCHES, False)
    assert figures.figures_requested(off) == [n for n, f in FIGURES.items() if not f.needs]
    assert figures.figures_requested(dict.fromkeys(figures.SWITCHES, True)) == list(FIGURES)
    hessian_only = figures.figures_requested({**off, "hessian": True})
    assert "hessian_spectrum" in hessian_only and "loss_landscape" not in hessian_only


def test_inputs_are_checked_against_the_roles():
    assert plot.files_by_role("msd", ["traj=t.nc", "summary=s.csv"]) == {"traj": ["t.nc"], "summary": ["s.csv"]}
    assert plot.files_by_role("theory_msd", ["cells=a.nc", "cells=b.nc"]) == {"cells": ["a.nc", "b.nc"]}
    assert plot.files_by_role("theory_power_law", ["none"]) == {}
    with pytest.raises(FigureError, match="role"):
        plot.files_by_role("msd", ["traj=t.nc"])  # the summary is missing
    with pytest.raises(FigureError, match="ROLE=PATH"):
        plot.files_by_role("msd", ["t.nc", "summary=s.csv"])
    with pytest.raises(FigureError, match="ROLE=PATH"):
        plot.files_by_role("metrics", ["traj=t.nc", "summary=s.csv"])  # metrics reads no summary
    with pytest.raises(FigureError, match="one file"):
        plot.files_by_role("metrics", ["traj=a.nc", "traj=b.nc"])


def test_the_plot_stage_opens_each_role_and_passes_it_by_name(tmp_path, monkeypatch):
    xr.Dataset({"x": ("step", [1.0, 2.0])}).to_netcdf(tmp_path / "t.nc")
    pd.DataFrame({"cell": ["a"], "c": [1.0]}).to_csv(tmp_path / "s.csv", index=False)
    calls = []
    monkeypatch.setattr(plot, "drawing", lambda name: lambda **kw: calls.append(kw))
    p = {"context": "paper", "dpi": 60, "smoothing": 7, "format": "png", "default": {}}
    a = types.SimpleNamespace(
        figure="local_displacement",
        inputs=[f"traj={tmp_path / 't.nc'}", f"summary={tmp_path / 's.csv'}"],
        params=json.dumps(p),
        out="fig.png",
    )
    plot.cmd_plot(a)
    (kw,) = calls
    assert sorted(kw) == ["dpi", "path", "smoothing", "summary", "traj"]
    assert isinstance(kw["traj"], xr.Dataset) and list(kw["summary"].index) == ["a"]
    assert kw["smoothing"] == 7 and kw["dpi"] == 60 and kw["path"] == "fig.png"
