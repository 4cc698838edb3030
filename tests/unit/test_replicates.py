"""Spread between seeds, trends stated only where every seed agrees, and the generated results page."""

import numpy as np
import pandas as pd
import pytest

from limiting_dynamics import replicates, results_tables

DEFAULT = {"lr": 0.02, "batch_size": 64, "momentum": 0.9, "weight_decay": 5e-3}


def _summary(c_by_seed_lr: dict) -> pd.DataFrame:
    rows = []
    for (seed, lr), c in c_by_seed_lr.items():
        rows.append(
            {
                "cell": f"lr{lr}_seed{seed}",
                "lr": lr,
                "batch_size": 64,
                "momentum": 0.9,
                "weight_decay": 5e-3,
                "seed": seed,
                "c": c,
            }
        )
    return pd.DataFrame(rows).set_index("cell")


def test_aggregate_gives_the_spread_between_seeds_per_cell():
    s = _summary({(0, 0.02): 0.6, (1, 0.02): 0.8, (2, 0.02): 0.7, (0, 0.04): 0.5})
    agg = replicates.aggregate(s, columns=("c",)).set_index("lr")
    assert agg.loc[0.02, "n_seeds"] == 3 and agg.loc[0.02, "seeds"] == "0 1 2"
    assert agg.loc[0.02, "c_mean"] == pytest.approx(0.7) and agg.loc[0.02, "c_sd"] == pytest.approx(0.1)
    assert agg.loc[0.02, "c_min"] == 0.6 and agg.loc[0.02, "c_max"] == 0.8
    assert agg.loc[0.04, "n_seeds"] == 1 and np.isnan(agg.loc[0.04, "c_sd"])


def test_a_trend_is_stated_only_where_every_seed_agrees():
    agree = _summary({(0, 0.01): 0.9, (0, 0.02): 0.7, (0, 0.04): 0.5, (1, 0.01): 0.8, (1, 0.02): 0.75, (1, 0.04): 0.6})
    t = replicates.trend(agree, DEFAULT, "lr", "c")
    slopes = t.pop("slopes")
    assert t == {"signs": {0: -1, 1: -1}, "agree": True, "sign": -1}
    # least squares against log lr: seed 0 falls 0.2 per doubling, seed 1 0.1 per doubling
    assert slopes == pytest.approx({0: -0.2 / np.log(2), 1: -0.1 / np.log(2)})
    disagree = _summary({(0, 0.01): 0.9, (0, 0.04): 0.5, (1, 0.01): 0.5, (1, 0.04): 0.9})
    t = replicates.trend(disagree, DEFAULT, "lr", "c")
    assert t["signs"] == {0: -1, 1: 1} and not t["agree"] and t["sign"] == 0
    lines = results_tables.trend_lines(disagree, DEFAULT, "c")
    assert lines == ["- `c` against the learning rate: the seeds disagree (seed 0: -, seed 1: +); no trend is stated."]
    assert results_tables.trend_lines(agree, DEFAULT, "c")[0].startswith(
        "- `c` decreases with the learning rate in every seed"
    )
