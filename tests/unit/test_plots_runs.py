"""The runs' figures: which cells form each sweep, seeds as replicates, and legends off the data."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from limiting_dynamics.plots import runs as plots

DEFAULT = {"lr": 0.02, "batch_size": 64, "momentum": 0.9, "weight_decay": 0.005, "seed": 0}


def _summary(cells) -> pd.DataFrame:
    rows = []
    for i, cell in enumerate(cells):
        hp = {**DEFAULT, **cell}
        c = 0.5 + 10 * hp["lr"] + 0.01 * hp["seed"]  # a known value per cell
        scale = hp["lr"] ** 2 / (hp["batch_size"] * (1 - hp["momentum"] ** 2))
        rows.append(
            {
                **hp,
                "c": c,
                "c_low": c - 0.05,
                "c_high": c + 0.05,
                "c_geodesic": c + 0.01,
                "c_geodesic_low": c - 0.04,
                "c_geodesic_high": c + 0.06,
                "sq_step_mean": 60 * scale * (1 + 0.01 * i),
                "sq_step_stderr": 3 * scale,
                "sq_step_in_run_check": 62 * scale,
                "sq_step_equilibrium_check": 61 * scale,
                "theory_scale": scale,
                "noise_trace_estimate": 60.0,
            }
        )
    return pd.DataFrame(rows)


@pytest.fixture
def drawn(monkeypatch):
    figures = []
    monkeypatch.setattr(plots, "save", lambda fig, path, dpi: figures.append(fig))
    return figures


def test_seeds_are_replicates_of_every_sweep():
    # a grid over lr and seed, plus a momentum sweep at the default seed only
    cells = [{"lr": lr, "seed": s} for lr, s in itertools.product((0.01, 0.02, 0.04), (0, 1, 2))]
    cells += [{"momentum": 0.8}, {"momentum": 0.95}]
    sweeps = plots.sweeps_of(_summary(cells), DEFAULT)
    assert set(sweeps) == {"lr", "momentum", "seed"}
    assert len(sweeps["lr"]) == 9 and sorted(set(sweeps["lr"]["seed"])) == [0, 1, 2]
    assert list(sweeps["momentum"]["momentum"]) == [0.8, 0.9, 0.9, 0.9, 0.95]  # the default cell's three seeds
    assert list(sweeps["seed"]["seed"]) == [0, 1, 2] and set(sweeps["seed"]["lr"]) == {0.02}

    m = plots.replicate_means(sweeps["lr"], "lr", "c")
    np.testing.assert_allclose(m["mean"], [0.61, 0.71, 0.91])
    np.testing.assert_allclose(m["sd"], [0.01, 0.01, 0.01])
    assert list(m["n"]) == [3, 3, 3]


def test_one_seed_per_value_is_the_plain_one_at_a_time_sweep():
    cells = [{}, {"lr": 0.01}, {"lr": 0.04}, {"batch_size": 32}, {"batch_size": 128}]
    sweeps = plots.sweeps_of(_summary(cells), DEFAULT)
    assert set(sweeps) == {"lr", "batch_size"}
    assert list(sweeps["lr"]["lr"]) == [0.01, 0.02, 0.04]
    assert list(sweeps["batch_size"]["batch_size"]) == [32, 64, 128]


def test_the_figure_joins_means_over_seeds_with_their_spread(drawn):
    cells = [{"lr": lr, "seed": s} for lr, s in itertools.product((0.01, 0.02, 0.04), (0, 1, 2))]
    plots.hyperparameter_scaling(_summary(cells), DEFAULT, "unused.png", dpi=60)
    (fig,) = drawn
    top = fig.axes[0]  # panels: lr (c, displacement), seed (c, displacement)
    labels = top.get_legend_handles_labels()[1]
    assert "squared distance: mean of 3 seeds ± 1 sd" in labels
    assert "along the spheres: mean of 3 seeds ± 1 sd" in labels
    (mean,) = [c for c in top.containers if c.get_label() == "squared distance: mean of 3 seeds ± 1 sd"]
    np.testing.assert_allclose(np.asarray(mean.lines[0].get_ydata(), float), [0.61, 0.71, 0.91])
    runs = [c for c in top.containers if c.get_label().startswith("_")]  # every seed run, unlabelled
    assert sorted(len(c.lines[0].get_xdata()) for c in runs) == [9, 9]
    assert [t.get_text() for t in top.get_xticklabels()] == ["0.01", "0.02", "0.04"]


def test_the_figure_without_replicates_keeps_one_point_per_cell(drawn):
    cells = [{}, {"momentum": 0.8}, {"momentum": 0.95}]
    plots.hyperparameter_scaling(_summary(cells), DEFAULT, "unused.png", dpi=60)
    (fig,) = drawn
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert set(labels) == {"squared distance", "along the spheres", "Brownian (c=1)"}


def _flat_runs(levels=(0.01, 0.02, 0.04), seeds=3, steps=2500):
    """Stationary per-step displacements (noisy, flat) for a few cells, and their summary rows."""
    rng = np.random.default_rng(0)
    t = np.arange(1, steps + 1)
    rows, series = [], []
    for lr in levels:
        for s in range(seeds):
            cell, level = f"lr{lr}_seed{s}", 5e-3 * lr
            series.append(
                xr.DataArray(level * rng.gamma(4, 0.25, steps), coords={"step": t}, dims="step").expand_dims(
                    cell=[cell]
                )
            )
            rows.append(
                {
                    "cell": cell,
                    **DEFAULT,
                    "lr": lr,
                    "seed": s,
                    "stationarity_ratio": 1.2,
                    "sq_step_in_run_check": 0.95 * level,
                    "sq_step_equilibrium_check": 1.02 * level,
                    "measured_over_in_run_check": 1.05,
                    "measured_over_equilibrium_check": 0.98,
                }
            )
    return xr.Dataset({"sq_step": xr.concat(series, "cell")}), pd.DataFrame(rows).set_index("cell")


def test_the_local_displacement_legends_stay_off_the_data(drawn):
    """Flat series fill a panel at every height, so no place inside it is free: each
    legend lies wholly outside its panel's plotting area."""
    traj, summary = _flat_runs()
    plots.local_displacement(traj, summary, "unused.png", smoothing=200, dpi=60)
    (fig,) = drawn
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == 3
    for ax in panels:
        assert len(ax.get_legend().get_texts()) == 5  # three seeds, two checks
        legend, area = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
        assert not legend.overlaps(area), (legend, area)
