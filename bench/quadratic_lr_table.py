"""Per learning rate of the quadratic family: where its per-mode theory can be tested
(run by hand on a finished run, e.g. of ``config/quadratic_lr_scan.yaml``).

    python bench/quadratic_lr_table.py results/analysis

Prints one Markdown row per learning rate over the top ``--modes`` modes of every
seed (medians pool the seeds' modes; with several seeds, the range of the seeds'
own medians follows in brackets): the span of ``lr lam``, how many modes oscillate, how long the top-5
eigenvectors of theta_0 stay eigenvectors, how many periods of mode 1 the mode
window holds, the oscillator fits (found / underdamped, median measured/predicted
frequency and median |error| over those found, the median Cramér-Rao bound of one
window), the median measured/predicted position variance beside what one window
of that length expects of it (``theory.window_variance_scatter``), and the median
measured/predicted velocity variance; and the lag-MSD over the mode window
against its prediction with nothing calibrated (through the sketch, time
averaged) and the exact distance from theta_0 with its largest deviation in
standard deviations of its predicted scatter; in runs that have them, the
sketch against the exact distance from theta_0, and one anchor's scatter as the
run shows it against what the theory predicts for it (both through the sketch).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd


def _median(g: pd.DataFrame, column: str) -> str:
    """Median over the modes of every seed; with several seeds, the range of the
    seeds' own medians after it."""
    return _with_seed_range(g, lambda x: x[column].median(), "{:.2f}")


def _with_seed_range(g: pd.DataFrame, stat, fmt: str) -> str:
    """``stat`` of the pooled modes, then, where ``g`` holds several cells (seeds), the
    smallest and largest ``stat`` of one cell's modes in brackets."""
    text = fmt.format(stat(g))
    if g["cell"].nunique() > 1:
        per_seed = [stat(c) for _, c in g.groupby("cell")]
        text += f" [{fmt.format(min(per_seed))}-{fmt.format(max(per_seed))}]"
    return text


def _span(cells: pd.DataFrame, stem: str) -> str:
    """Smallest minimum to largest maximum over the cells (seeds) of one learning rate."""
    return f"{cells[f'{stem}_min'].min():.2f}-{cells[f'{stem}_max'].max():.2f}"


def _median_frequency_error(found: pd.DataFrame) -> float:
    return 100 * (found["oscillation_frequency_measured_over_predicted"] - 1).abs().median()


def table(modes: pd.DataFrame, summary: pd.DataFrame, predictions: pd.DataFrame, n_modes: int) -> pd.DataFrame:
    lag = [
        "lag_msd_ratio_mode_window_min",
        "lag_msd_ratio_mode_window_max",
        "lag_msd_exact_ratio_mode_window_min",
        "lag_msd_exact_ratio_mode_window_max",
        "lag_msd_exact_z_mode_window_max",
    ]
    # columns of later runs: the sketch against the exact distance, and one anchor's scatter as the run shows it
    own = [
        "single_anchor_sd_ratio_mode_window_min",
        "single_anchor_sd_ratio_mode_window_max",
        "sketch_over_exact_sq_dist",
    ]
    lag += [c for c in own if c in predictions]
    runs = summary.set_index("cell")[["lr", "family"]].join(predictions.set_index("cell")[["mode_window_end", *lag]])
    quad = runs[runs["family"] == "quadratic"]
    m = modes[modes["cell"].isin(quad.index) & (modes["mode"] <= n_modes)].copy()
    m["lr"] = quad["lr"].reindex(m["cell"]).values
    window = quad["mode_window_end"].reindex(m["cell"]).values  # the window starts at step 1 (results page)
    m["periods"] = window * m["oscillation_frequency_predicted"]
    rows = []
    for lr, g in m.groupby("lr"):
        osc = g[g["underdamped"] > 0]
        found = osc[osc["oscillator_fit_converged"] > 0]
        ratio = found["oscillation_frequency_measured_over_predicted"]
        lam_lr = lr * g["eigenvalue"]
        cells = quad[quad["lr"] == lr]
        rows.append(
            {
                "lr": f"{lr:g}",
                "lr x lam": f"{lam_lr.min():.2g}-{lam_lr.max():.2g}",
                "underdamped": f"{len(osc)} of {len(g)}",
                "top-5 valid up to step (shortest)": int(g[g["mode"] <= 5]["valid_steps"].min()),
                "periods of mode 1 in the window": f"{g[g['mode'] == 1]['periods'].min():.1f}",
                "fits that found an oscillation": f"{len(found)} of {len(osc)}",
                "frequency measured / predicted (median, range)": (
                    f"{ratio.median():.2f} [{ratio.min():.2f}, {ratio.max():.2f}]" if len(found) else "-"
                ),
                "median frequency error": (
                    _with_seed_range(found, _median_frequency_error, "{:.0f}%") if len(found) else "-"
                ),
                "median Cramér-Rao bound": f"{100 * osc['oscillation_frequency_cramer_rao'].median():.0f}%",
                "position var. measured / predicted (median)": _median(g, "position_var_measured_over_predicted"),
                "one window expects (median)": _median(g, "position_var_window_bias"),
                "velocity var. measured / predicted (median)": _median(g, "velocity_var_measured_over_predicted"),
                "lag-MSD measured / predicted (sketch)": _span(cells, "lag_msd_ratio_mode_window"),
                "distance from theta_0 measured / predicted (exact)": _span(cells, "lag_msd_exact_ratio_mode_window"),
                "its largest deviation (sd)": f"{cells['lag_msd_exact_z_mode_window_max'].max():.1f}",
            }
        )
        if "single_anchor_sd_ratio_mode_window_min" in cells:
            rows[-1] |= {
                "sketch / exact distance from theta_0": (
                    f"{cells['sketch_over_exact_sq_dist'].min():.2f}-{cells['sketch_over_exact_sq_dist'].max():.2f}"
                ),
                "one anchor's scatter, run / predicted (through the sketch)": _span(
                    cells, "single_anchor_sd_ratio_mode_window"
                ),
            }
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("analysis", type=Path, help="a run's results/analysis (modes.csv, summary.csv, predictions.csv)")
    ap.add_argument("--modes", dest="n_modes", type=int, default=10)
    a = ap.parse_args()
    t = table(*(pd.read_csv(a.analysis / f"{name}.csv") for name in ("modes", "summary", "predictions")), a.n_modes)
    print("| " + " | ".join(t.columns) + " |")
    print("|" + "---|" * len(t.columns))
    for row in t.itertuples(index=False):
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
