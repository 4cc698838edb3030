"""The analysis stages' tables as NetCDF: per cell, with and without per-mode rows."""

import numpy as np


def test_predictions_dataset_with_and_without_per_mode_rows():
    import pandas as pd

    from limiting_dynamics.stages.analysis import cell_table_dataset

    df = pd.DataFrame(
        {
            "cell": ["a", "b"],
            "lr": [0.1, 0.2],
            "batch_size": [8, 8],
            "momentum": [0.9, 0.9],
            "weight_decay": [0.0, 0.0],
            "seed": [0, 0],
            "sq_step_in_run_check": [1.0, 2.0],
        }
    ).set_index("cell")
    empty = pd.DataFrame(columns=["cell", "mode"])
    ds = cell_table_dataset(
        df, "predictions", "predict", empty
    )  # no comparisons (e.g. no phase space): the per-cell table alone
    assert "mode" not in ds.dims and ds["lr"].dims == ("cell",) and "git_revision" in ds.attrs
    modes = pd.DataFrame({"cell": ["a", "a", "b"], "mode": [1, 2, 1], "position_var_in_run_check": [1.0, 2.0, 3.0]})
    ds = cell_table_dataset(df, "predictions", "predict", modes)
    assert float(ds["position_var_in_run_check"].sel(cell="b", mode=1)) == 3.0
    assert np.isnan(float(ds["position_var_in_run_check"].sel(cell="b", mode=2)))
