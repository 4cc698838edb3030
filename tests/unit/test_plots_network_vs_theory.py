"""The theory-vs-experiment figure by content: which modes it draws, the medians its
titles state, and labels that tell cells apart."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from limiting_dynamics.plots import network_vs_theory as figure

HP = {"lr": 0.02, "batch_size": 64, "momentum": 0.9, "weight_decay": 0.005, "seed": 0}


def _cell(n_modes: int, ratio_top: float, ratio_rest: float, family: str = "spherical", **hp) -> xr.Dataset:
    """A comparison file's per-mode part: measured = ratio x predicted, with one ratio
    for the modes the figure compares and another for the modes beyond them."""
    n_cmp = figure.DEFAULT_MODES if family == "spherical" else figure.QUADRATIC_MODES
    pred = np.geomspace(1e-2, 1e-4, n_modes)
    ratio = np.where(np.arange(n_modes) < n_cmp, ratio_top, ratio_rest)
    data = {}
    for key in ("position_var", "velocity_var", "oscillation_frequency"):
        data[f"{key}_predicted"] = ("mode", pred)
        data[f"{key}_measured"] = ("mode", pred * ratio)
    data["position_var_in_run_check"] = ("mode", pred * 1.1)
    data["underdamped"] = ("mode", np.ones(n_modes, np.int8))
    return xr.Dataset(data, coords={"mode": np.arange(1, n_modes + 1)}, attrs={**HP, **hp, "family": family})


def _predictions() -> pd.DataFrame:
    measured = np.array([1.0, 2.0, 3.0]) * 1e-6
    return pd.DataFrame(
        {
            "sq_step_measured": measured,
            "sq_step_stderr": measured * 0.01,
            "sq_step_predicted": measured / np.array([0.9, 1.0, 1.2]),
            "sq_step_in_run_check": measured,
            "sq_step_equilibrium_check": measured,
            "measured_over_predicted": [0.9, 1.0, 1.2],
        }
    )


@pytest.fixture
def drawn(monkeypatch):
    figures = []
    monkeypatch.setattr(figure, "save", lambda fig, path, dpi: figures.append(fig))
    return figures


def test_the_titles_give_the_median_over_the_compared_modes_only(drawn):
    """Modes past the compared ones (ratio 50) change neither the points drawn nor the
    median in the title: the figure and the results page compare the same sets."""
    cells = [
        _cell(12, 0.8, 50.0, seed=0),
        _cell(12, 0.8, 50.0, seed=1),
        _cell(24, 1.2, 50.0, family="quadratic", lr=1e-4, momentum=0.99, weight_decay=5e-4),
    ]
    figure.theory_modes(cells, _predictions(), "unused.png", dpi=60)
    (fig,) = drawn
    spherical, quadratic = fig.axes[0], fig.axes[4]  # rows: families; columns: position, velocity, frequency, step
    assert "median measured/predicted 0.8 (top 5 modes, 2 runs)" in spherical.get_title()
    assert "median measured/predicted 1.2 (top 10 modes, 1 runs)" in quadratic.get_title()
    filled = [c for c in spherical.collections if c.get_offsets().shape[0] and np.any(c.get_facecolors()[:, 3] > 0)]
    assert sorted(c.get_offsets().shape[0] for c in filled) == [5, 5]  # top 5 of each run, nothing beyond
    points = np.concatenate([c.get_offsets() for c in filled])
    np.testing.assert_allclose(points[:, 1] / points[:, 0], 0.8)
    assert "median measured/predicted 1 (independent noise)" in fig.axes[3].get_title()


def test_cells_that_differ_in_one_hyperparameter_get_different_labels(drawn):
    cells = [_cell(5, 1.0, 1.0, weight_decay=0.005), _cell(5, 1.0, 1.0, weight_decay=0.001)]
    figure.theory_modes(cells, _predictions(), "unused.png", dpi=60)
    (fig,) = drawn
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert len(labels) == 2 and len(set(labels)) == 2
    assert any("wd=0.005" in s for s in labels) and any("wd=0.001" in s for s in labels)


def _legend_colours(fig) -> list[tuple]:
    return [tuple(np.round(h.get_facecolor()[0][:3], 3)) for h in fig.legends[0].legend_handles]


def test_every_run_has_its_own_colour_across_the_families(drawn):
    """Two spherical and two quadratic runs: four legend entries, four colours (a palette
    per family once gave the first run of each family the same colour)."""
    cells = [
        _cell(5, 1.0, 1.0, seed=0),
        _cell(5, 1.0, 1.0, seed=1),
        _cell(10, 1.0, 1.0, family="quadratic", lr=1e-4, momentum=0.99, weight_decay=5e-4),
        _cell(10, 1.0, 1.0, family="quadratic", lr=7e-5, momentum=0.99, weight_decay=5e-4),
    ]
    figure.theory_modes(cells, _predictions(), "unused.png", dpi=60)
    (fig,) = drawn
    colours = _legend_colours(fig)
    assert len(colours) == 4 and len(set(colours)) == 4


def _with_failed_fit(ds: xr.Dataset, mode_index: int) -> xr.Dataset:
    """The oscillator fit of one mode found no oscillation: its frequency sits at the search's bound."""
    converged = np.ones(ds.sizes["mode"], np.int8)
    converged[mode_index] = 0
    freq = ds.oscillation_frequency_measured.values.copy()
    freq[mode_index] = 1e-4 / (2 * np.pi)
    return ds.assign(oscillator_fit_converged=("mode", converged), oscillation_frequency_measured=("mode", freq))


def test_a_fit_that_found_no_oscillation_is_marked_on_the_edge_not_drawn_at_the_bound(drawn):
    cells = [_with_failed_fit(_cell(10, 1.0, 1.0, family="quadratic", lr=1e-4, momentum=0.99), 0)]
    figure.theory_modes(cells, _predictions(), "unused.png", dpi=60)
    figure.theory_validity(cells, "unused.png", dpi=60)
    modes_fig, validity_fig = drawn
    freq_ax = modes_fig.axes[2]
    data_points = [c.get_offsets() for c in freq_ax.collections if c.get_offset_transform() == freq_ax.transData]
    y = np.concatenate(data_points)[:, 1]
    assert y.size == 9 and y.min() > 1e-4 / 2  # the nine modes whose fit found an oscillation, none at the bound
    edge = [c for c in freq_ax.collections if c.get_offset_transform() != freq_ax.transData]
    assert [c.get_offsets().shape[0] for c in edge] == [1]
    assert "1 fits found no oscillation" in freq_ax.get_title()
    assert freq_ax.get_ylim()[0] > 1e-4 / 4  # the axis is not stretched down to the bound
    ratio_ax = validity_fig.axes[3]
    ratios = np.concatenate(
        [c.get_offsets() for c in ratio_ax.collections if c.get_offset_transform() == ratio_ax.transData]
    )
    assert np.nanmin(ratios[:, 1]) > 0.5  # the failed fit's ratio (1e-4 of the prediction) is not drawn
    assert (
        sum(c.get_offsets().shape[0] for c in ratio_ax.collections if c.get_offset_transform() != ratio_ax.transData)
        == 1
    )
