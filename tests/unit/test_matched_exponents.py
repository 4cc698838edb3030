"""c over windows matched across cells: on curves built to the leading-order
theory, D(t) = lr / (S (1 - beta)) F(lr t / (1 - beta)), the matched fits agree
between cells while the fits over fixed steps fall with lr and beta."""

import numpy as np
import pandas as pd
import pytest

from limiting_dynamics import diffusion, matched_exponents, replicates, results_tables
from limiting_dynamics.matched_exponents import Run

CFG = {"fit_points": 64, "bootstrap_samples": 200, "seed": 0}
STEPS = np.concatenate([np.arange(1, 11), np.arange(20, 2501, 10)]).astype(float)
LAMS = np.array([0.5, 0.05, 0.005, 0.0005])  # relaxation rates in tau, one per "tensor"
DEFAULT = {"lr": 0.02, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-3, "seed": 0}


def theory_run(cell, family="spherical", with_sphere=True, **changes):
    hp = {**DEFAULT, **changes}
    tau = hp["lr"] * STEPS / (1 - hp["momentum"])
    scale = hp["lr"] / (hp["batch_size"] * (1 - hp["momentum"]))
    parts = scale * (1 - np.exp(-np.outer(tau, LAMS))) / LAMS
    angle = np.sqrt(2 * hp["weight_decay"] * tau) if with_sphere else np.zeros_like(tau)
    return Run(cell, family, hp, STEPS.copy(), parts, angle)


SWEEP = {
    "default": {},
    "lr_low": {"lr": 0.01},
    "lr_high": {"lr": 0.04},
    "beta_low": {"momentum": 0.8},
    "beta_high": {"momentum": 0.95},
    "s_low": {"batch_size": 32},
    "s_high": {"batch_size": 128},
}


@pytest.fixture(scope="module")
def table():
    runs = [theory_run(f"{name}_seed{seed}", seed=seed, **ch) for name, ch in SWEEP.items() for seed in (0, 1)]
    return matched_exponents.matched_table(runs, CFG)


def test_windows_are_common_to_the_family_and_past_the_momentum_memory(table):
    # slowest memory: beta 0.95 -> 3 / 0.05 = 60 steps at lr / (1 - beta) = 0.4 per step
    assert table["matched_time_lo"].iloc[0] == pytest.approx(24.0)
    # shortest reach: lr 0.01 (or beta 0.8) -> 2500 x 0.1
    assert table["matched_time_hi"].iloc[0] == pytest.approx(250.0)
    steps = table["matched_time_step_hi"] * DEFAULT["lr"] / (1 - DEFAULT["momentum"])
    assert table.loc["lr_high_seed0", "matched_time_step_hi"] == pytest.approx(625.0)
    assert steps.loc["default_seed0"] == pytest.approx(250.0)


def test_matched_fits_agree_where_fixed_steps_fits_do_not(table):
    fixed = {
        cell: diffusion.fit_exponent(STEPS, run_parts, window=(0.01, 1.0), n_points=64, n_boot=0).c
        for cell, run_parts in ((f"{name}_seed0", theory_run("x", **ch).parts) for name, ch in SWEEP.items())
    }
    assert fixed["lr_low_seed0"] - fixed["lr_high_seed0"] > 0.05  # a change of time unit alone
    assert fixed["beta_low_seed0"] - fixed["beta_high_seed0"] > 0.05
    assert fixed["s_low_seed0"] == pytest.approx(fixed["s_high_seed0"], abs=1e-12)
    matched = table["c_matched_time"]
    assert matched.max() - matched.min() < 0.02
    assert np.all(np.isfinite(table["c_matched_angle"]))
    assert table["c_matched_angle"].max() - table["c_matched_angle"].min() < 0.02
    assert np.all(table["c_matched_time_low"] <= table["c_matched_time_high"])
    # the free-walk angle sqrt(2 wd tau) is the same at the end of the tau window in every cell
    assert table["rotation_angle_at_matched_time_hi"].std() / table["rotation_angle_at_matched_time_hi"].mean() < 0.02


def test_no_sphere_no_angle_window_and_a_short_overlap_no_fit():
    runs = [theory_run("a", with_sphere=False), theory_run("b", with_sphere=False, lr=0.04)]
    t = matched_exponents.matched_table(runs, CFG)
    assert t["matched_angle_lo"].isna().all() and t["c_matched_angle"].isna().all()
    assert t["c_matched_time"].notna().all()
    # a family whose runs overlap by less than MIN_SPAN in tau gets NaN, not a fit over a sliver
    short = [theory_run("c"), theory_run("d", lr=0.0002)]  # tau ends at 5 vs starts at 6
    t = matched_exponents.matched_table(short, CFG)
    assert t["c_matched_time"].isna().all()


def test_families_get_their_own_windows():
    runs = [theory_run("s"), theory_run("q", family="quadratic", lr=1e-4, momentum=0.99, weight_decay=5e-4)]
    t = matched_exponents.matched_table(runs, CFG)
    assert t.loc["q", "matched_time_lo"] == pytest.approx(1e-4 * 300 / 0.01)
    assert t.loc["s", "matched_time_lo"] == pytest.approx(0.2 * 30)


def test_results_page_states_a_trend_only_where_every_seed_agrees():
    rows = []
    for seed in (0, 1, 2):
        for lr, c_fixed, c_matched in ((0.01, 0.7, 0.50), (0.02, 0.6, 0.51 if seed else 0.49), (0.04, 0.5, 0.50)):
            rows.append({**DEFAULT, "lr": lr, "seed": seed, "c": c_fixed, "c_matched_time": c_matched})
    df = pd.DataFrame(rows)
    df["c_matched_time"] += np.where(df["seed"] == 1, 0.01 * np.log(df["lr"]), -0.01 * np.log(df["lr"]))
    df["c_matched_angle"] = df["c_matched_time"]
    text = results_tables.matched_trend_table(df, DEFAULT)
    line = next(x for x in text.splitlines() if x.startswith("| learning rate"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[1] == "-" and cells[2].startswith(
        "- - - (**-** in every seed; slope -"
    )  # theory and measured, fixed steps
    assert cells[3] == "0" and "seeds disagree" in cells[4]
    assert replicates.trend(df, DEFAULT, "lr", "c")["agree"]
