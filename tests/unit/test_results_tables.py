"""The generated results page: formatting of the spread between seeds."""

import numpy as np
import pytest

from limiting_dynamics import results_tables


def test_spread_formatting():
    assert results_tables._spread([1.0, 2.0, 3.0]) == "2.00 ± 1.00 [1.00, 3.00]"
    assert results_tables._spread([0.5]) == "0.50"
    assert results_tables._spread([np.nan]) == "-"


def _quadratic_modes(ratios, valid_steps, bias=0.9, sd=0.4):
    """Two quadratic cells (lr 1e-4, 7e-5) x 3 seeds x the modes of ``ratios``
    (per mode: the measured / predicted position ratio of every run)."""
    import pandas as pd

    cells = [f"lr{lr}_bs64_mom0.99_wd0.0005_seed{s}" for lr in ("0.0001", "7e-05") for s in range(3)]
    quad = pd.DataFrame({"lr": [1e-4] * 3 + [7e-5] * 3, "seed": [0, 1, 2] * 2, "mode_window_end": 2000}, index=cells)
    rows = [
        {
            "cell": c,
            "mode": m,
            "position_var_measured_over_predicted": r,
            "position_var_window_bias": bias,
            "position_var_window_sd": sd,
            "valid_steps": valid_steps[m - 1],
        }
        for m, r in enumerate(ratios, start=1)
        for c in cells
    ]
    return pd.DataFrame(rows), quad


def test_window_z_is_the_seed_mean_in_units_of_one_windows_scatter_over_root_seeds():
    modes, quad = _quadratic_modes([0.9, 0.9 - 0.8 / np.sqrt(3), 2.5], valid_steps=[2000, 2000, 300])
    z = results_tables.window_z(modes, quad, "position").set_index(["lr", "mode"])
    np.testing.assert_allclose(z.loc[(1e-4, 1), "z"], 0.0, atol=1e-12)
    np.testing.assert_allclose(z.loc[(7e-5, 2), "z"], -2.0)  # two sd of the mean of 3 seeds
    assert z["valid"].tolist() == [True, True, False] * 2  # mode 3's eigenvector did not hold over the window


def test_probability_that_every_mode_lands_in_a_band_multiplies_over_modes():
    modes, quad = _quadratic_modes([1.0, 1.0], valid_steps=[2000, 2000], bias=1.0, sd=0.4 * np.sqrt(3))
    # per mode a normal of mean 1 and sd 0.4: P(0.5 < x < 2) = Phi(2.5) - Phi(-1.25)
    one = 0.99379 - 0.10565
    assert results_tables._all_within(modes, 3, 0.5, 2.0) == pytest.approx(one**2, rel=1e-3)
    assert results_tables._all_within(modes, 3, -10, 10) == pytest.approx(1.0)


def test_window_z_is_left_out_where_the_one_window_theory_does_not_apply():
    """Reshuffled batches: no one-window scatter (NaN); the targets table and the
    paragraph leave the test out rather than fail."""
    modes, quad = _quadratic_modes([1.0, 0.5], valid_steps=[2000, 2000], bias=np.nan, sd=np.nan)
    assert results_tables.window_z(modes, quad, "position").dropna(subset=["z"]).empty
    assert results_tables._variance_limit(modes, quad) == []


def test_held_modes_keeps_the_modes_whose_eigenvector_held_in_every_run():
    modes, quad = _quadratic_modes([1.0, 1.1, 2.5], valid_steps=[2000, 2000, 300])
    modes.loc[(modes["mode"] == 2) & (modes["cell"] == modes["cell"].iloc[0]), "valid_steps"] = 1000  # one run
    per_mode = modes.groupby("mode")["position_var_measured_over_predicted"].mean()
    assert results_tables.held_modes(modes, quad, per_mode).index.tolist() == [1]
    assert results_tables.held_modes(modes.drop(columns="valid_steps"), quad, per_mode).index.tolist() == [1, 2, 3]


def test_the_spread_between_seeds_is_pooled_within_cells_and_set_against_one_anchors_predicted_scatter():
    """Two cells of three seeds whose means differ: the spread is taken about each cell's own
    mean (pooled, 4 degrees of freedom), so the difference between the cells does not enter."""
    import pandas as pd

    rows = _seed_rows(distance_end=lambda ratio: 2.0 * ratio)  # the predictions agree; the distances spread
    (text,) = results_tables._exact_between_seeds(pd.DataFrame(rows))
    assert "(2 cells of 3 seeds, 4 degrees of freedom within cells: a standard deviation known to about 35%)" in text
    # at the longest lag: deviations +-0.1 in each cell -> pooled sd 0.1, 5x the predicted 0.02;
    # mean 1.15 +- 0.1 / sqrt(6)
    assert (
        "at lag 3000 their measured / predicted has mean 1.15 ± 0.04 (standard error) and standard deviation 0.10"
        in text
    )
    assert "against 0.02 predicted for one anchor (5.0x)" in text
    # the measured distance spreads as the ratio does (relative to each cell's mean: 0.1 and 0.1 / 1.3), the
    # predictions not at all: the runs scatter beyond one anchor
    assert "the measured distance itself spreads 0.09 about its cell's mean (4.5x), the predictions 0.00" in text
    assert "At the longest lag the measured distance spreads well beyond the predicted scatter of one anchor" in text
    # at a tenth of it the seeds agree exactly: no spread, whatever the cells' different means
    assert (
        "at lag 300 their measured / predicted has mean 1.15 ± 0.00 (standard error) and standard deviation 0.00"
        in text
    )
    # one seed per cell: no spread to measure, no sentence
    assert results_tables._exact_between_seeds(pd.DataFrame(rows[::3])) == []


def _seed_rows(distance_end) -> list[dict]:
    """Two cells of three seeds (means 1.0 and 1.3, deviations -0.1, 0, 0.1 of the exact ratio at the
    window's end, none at a tenth of it); ``distance_end(ratio)`` gives the measured distance there."""
    rows = []
    for lr, base in ((1e-4, 1.0), (1.5e-4, 1.3)):
        for seed, dev in enumerate((-0.1, 0.0, 0.1)):
            hp = dict(lr=lr, batch_size=64, momentum=0.99, weight_decay=5e-4, seed=seed)
            ratio = base + dev
            end = dict(lag_at_window_end=3000, exact_ratio_at_window_end=ratio, exact_predicted_sd_at_window_end=0.02)
            end["exact_distance_at_window_end"] = distance_end(ratio)
            tenth = dict(
                lag_at_window_tenth=300, exact_ratio_at_window_tenth=base, exact_predicted_sd_at_window_tenth=0.05
            )
            tenth["exact_distance_at_window_tenth"] = 0.5 * base
            rows.append(hp | end | tenth)
    return rows


@pytest.mark.parametrize(
    "distance_end, reading",
    [
        (lambda ratio: 0.2, "the excess of measured / predicted between seeds is the predictions' own"),
        (lambda ratio: 0.2 * (1 + 0.2 * (ratio - 1)), "the excess of measured / predicted between seeds is the"),
        (lambda ratio: 2.0 * ratio, "the measured distance spreads well beyond the predicted scatter"),
    ],
    ids=["runs-agree", "runs-agree-within-one-anchor", "runs-scatter"],
)
def test_the_spread_between_seeds_says_whether_the_runs_or_the_predictions_scatter(distance_end, reading):
    """The same spread of measured / predicted between seeds is read from the measured distance's own
    spread: where the runs agree (to within twice one anchor's predicted scatter) and the predictions
    do not, the excess is the predictions'; where the runs spread, it is theirs."""
    import pandas as pd

    (text,) = results_tables._exact_between_seeds(pd.DataFrame(_seed_rows(distance_end)))
    assert reading in text
