"""The hand-run table scripts under bench/ that docs/measurements.md quotes, on small frames."""

from __future__ import annotations

import importlib.util

import pandas as pd
from conftest import REPO


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quadratic_lr_table_counts_fits_and_leaves_failed_ones_out_of_the_frequency():
    lr_table = _load("quadratic_lr_table")
    summary = pd.DataFrame(
        {"cell": ["a", "b", "d"], "lr": [1e-4, 2e-4, 0.02], "family": ["quadratic", "quadratic", "spherical"]}
    )
    predictions = pd.DataFrame(
        {
            "cell": ["a", "b", "d"],
            "mode_window_end": [2000, 2000, 625],
            "lag_msd_ratio_mode_window_min": [0.9, 0.8, 0.5],
            "lag_msd_ratio_mode_window_max": [1.1, 1.2, 1.5],
            "lag_msd_exact_ratio_mode_window_min": [0.85, 0.7, 0.5],
            "lag_msd_exact_ratio_mode_window_max": [1.05, 1.0, 1.5],
            "lag_msd_exact_z_mode_window_max": [2.0, 9.0, 30.0],
        }
    )
    rows = []
    for cell in "abd":
        for mode, (found, ratio) in enumerate([(1, 1.2), (0, 0.01), (1, 0.9)], start=1):
            rows.append(
                {
                    "cell": cell,
                    "mode": mode,
                    "eigenvalue": 2.0 / mode,
                    "underdamped": 1,
                    "valid_steps": 2000 if cell == "a" else 300,
                    "oscillation_frequency_predicted": 0.002,
                    "oscillator_fit_converged": found,
                    "oscillation_frequency_measured_over_predicted": ratio,
                    "oscillation_frequency_cramer_rao": 0.2,
                    "position_var_measured_over_predicted": 0.5 * mode,
                    "position_var_window_bias": 0.9,
                    "velocity_var_measured_over_predicted": 1.0,
                }
            )
    t = lr_table.table(pd.DataFrame(rows), summary, predictions, n_modes=10).set_index("lr")
    assert list(t.index) == ["0.0001", "0.0002"]  # the spherical cell is left out
    a = t.loc["0.0001"]
    assert a["fits that found an oscillation"] == "2 of 3"
    assert a["frequency measured / predicted (median, range)"] == "1.05 [0.90, 1.20]"  # the failed fit is not in it
    assert a["median frequency error"] == "15%"
    assert a["periods of mode 1 in the window"] == "4.0"
    assert a["lr x lam"] == "6.7e-05-0.0002"
    assert t.loc["0.0002", "top-5 valid up to step (shortest)"] == 300
    assert a["position var. measured / predicted (median)"] == "1.00"
    assert a["lag-MSD measured / predicted (sketch)"] == "0.90-1.10" and a["its largest deviation (sd)"] == "2.0"
    assert t.loc["0.0002", "distance from theta_0 measured / predicted (exact)"] == "0.70-1.00"


def test_quadratic_lr_table_gives_the_range_of_the_seeds_medians():
    lr_table = _load("quadratic_lr_table")
    cells = ["s0", "s1", "s2"]
    summary = pd.DataFrame({"cell": cells, "lr": [1e-4] * 3, "family": ["quadratic"] * 3})
    predictions = pd.DataFrame(
        {
            "cell": cells,
            "mode_window_end": [2000] * 3,
            **{f"lag_msd_ratio_mode_window_{e}": [1.0] * 3 for e in ("min", "max")},
            **{f"lag_msd_exact_ratio_mode_window_{e}": [1.0] * 3 for e in ("min", "max")},
            "lag_msd_exact_z_mode_window_max": [1.0] * 3,
        }
    )
    rows = [
        {
            "cell": cell,
            "mode": mode,
            "eigenvalue": 1.0,
            "underdamped": 1,
            "valid_steps": 2000,
            "oscillation_frequency_predicted": 0.002,
            "oscillator_fit_converged": 1,
            "oscillation_frequency_measured_over_predicted": 1 + 0.1 * (i + 1),  # errors 10, 20, 30%
            "oscillation_frequency_cramer_rao": 0.2,
            "position_var_measured_over_predicted": [0.6, 0.8, 1.0][i] * mode,  # seed medians 0.6, 0.8, 1.0
            "position_var_window_bias": 0.9,
            "velocity_var_measured_over_predicted": 1.0,
        }
        for i, cell in enumerate(cells)
        for mode in (1, 2, 3)
    ]
    # mode 2 is each seed's median position ratio: 1.2, 1.6, 2.0; pooled median 1.6
    row = lr_table.table(pd.DataFrame(rows), summary, predictions, n_modes=10).iloc[0]
    assert row["position var. measured / predicted (median)"] == "1.60 [1.20-2.00]"
    assert row["median frequency error"] == "20% [10%-30%]"
    assert row["velocity var. measured / predicted (median)"] == "1.00 [1.00-1.00]"


def _page(path, rows):
    lines = ["# page", "", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {name} | {measured} | {met} |" for name, measured, met in rows]
    lines += ["", "## Next"]
    path.write_text("\n".join(lines))
    return path


def test_compare_targets_agrees_only_when_every_page_has_the_same_verdict(tmp_path, monkeypatch, capsys):
    compare = _load("compare_targets")
    pages = [
        _page(tmp_path / "a.md", [("x in [0.8, 1.25] (3 runs)", "0.9", "yes"), ("y", "1", "no")]),
        _page(tmp_path / "b.md", [("x in [0.8, 1.25] (4 runs)", "0.95", "yes"), ("y", "2", "no")]),
        _page(tmp_path / "c.md", [("x in [0.8, 1.25]", "0.7", "no"), ("y", "3", "no")]),
    ]
    monkeypatch.setattr("sys.argv", ["compare_targets", *map(str, pages), "--names", "A", "B", "C"])
    compare.main()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| target | A | met | B | met | C | met | same verdict |"
    assert out[2] == "| x in [0.8, 1.25] | 0.9 | yes | 0.95 | yes | 0.7 | no | **no** |"  # counts dropped, rows matched
    assert out[3] == "| y | 1 | no | 2 | no | 3 | no | yes |"


def test_the_split_half_participation_ratio_is_not_capped_by_the_number_of_draws():
    """400 draws of noise in 1,000 equal directions: a sample covariance's own ratio stays below
    the 399 draws, the split-half estimate finds about 1,000; in 10 dominant directions, about 10."""
    import numpy as np

    directions = _load("noise_directions")
    rng = np.random.default_rng(0)
    iso = rng.standard_normal((400, 1000))
    centred = iso - iso.mean(0)
    eig = np.linalg.eigvalsh(centred @ centred.T)
    assert eig.sum() ** 2 / (eig**2).sum() < 399
    assert 900 < directions.participation_ratio(iso) < 1100
    few = rng.standard_normal((400, 1000)) * np.r_[np.full(10, 10.0), np.full(990, 0.01)]
    assert 9 < directions.participation_ratio(few) < 11.5
    # the theory's count: two nodes of 100 and 300 directions, noise ~ lam (1 and 3) or alike
    nodes, weights = np.array([1.0, 3.0, 0.0]), np.array([0.1, 0.3, 0.6])
    assert directions.theory_ratio(nodes, weights, 1000, 0.0) == 400
    assert directions.theory_ratio(nodes, weights, 1000, 1.0) == (100 + 900) ** 2 / (100 + 2700)
