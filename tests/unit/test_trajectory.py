"""The NetCDF trajectory: a CF round trip, invalid files rejected, and all cells combined."""

import numpy as np
import pytest
import xarray as xr

from limiting_dynamics import trajectory
from limiting_dynamics.atomic import write_netcdf


def _dataset(record):
    rec = dict(record)
    attrs = {
        "lr": 0.05,
        "batch_size": 32,
        "momentum": 0.9,
        "weight_decay": 5e-3,
        "seed": 0,
        "cell": "c",
        "dataset": "digits",
        "model": "{}",
        "sampling": "reshuffle",
        "device": "cpu",
    }
    return trajectory.build_dataset(rec, attrs)


def test_trajectory_netcdf_round_trip_with_cf_attributes(record, tmp_path):
    ds = _dataset(record)
    path = tmp_path / "t.nc"
    write_netcdf(ds, path, trajectory.encoding_for(ds))
    back = trajectory.open_trajectory(path)
    for v in ("train_loss", "sq_dist_from_start", "sq_step", "sq_velocity", "sq_param_norm"):
        assert back[v].dims == ("step",)
        assert back[v].attrs["units"] and back[v].attrs["long_name"]
        np.testing.assert_array_equal(back[v].values, ds[v].values)
    assert back["eval_test_accuracy"].dims == ("eval_step",)
    assert back.attrs["Conventions"].startswith("CF-")
    assert back.attrs["history"][:4].isdigit() and "Z " in back.attrs["history"]
    for a in (
        "lr",
        "batch_size",
        "momentum",
        "weight_decay",
        "seed",
        "n_params",
        "torch_version",
        "limiting_dynamics_version",
        "dataset",
        "model",
    ):
        assert a in back.attrs
    # radial + angular = total, radial >= 0
    total = back["sq_dist_from_start"].sel(step=back["tensor_step"].values).values
    assert np.allclose(back["sq_dist_radial"] + back["sq_dist_angular"], total, rtol=1e-4)
    assert np.all(back["sq_dist_radial"].values >= 0)
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        assert nc["sq_dist_from_start"].filters()["zlib"] is True


def test_invalid_trajectories_are_rejected(record, tmp_path):
    ds = _dataset(record)
    bad = ds.copy(deep=True)
    bad["sq_step"][3] = np.nan
    with pytest.raises(trajectory.TrajectoryFormatError, match="sq_step has non-finite"):
        trajectory.validate_trajectory(bad)
    with pytest.raises(trajectory.TrajectoryFormatError, match="without gaps"):
        trajectory.validate_trajectory(ds.drop_sel(step=[10]))
    old = ds.copy()
    old.attrs["format_version"] = 1
    with pytest.raises(trajectory.TrajectoryFormatError, match="format version 1 is not the supported version 5"):
        trajectory.validate_trajectory(old)
    (tmp_path / "junk.nc").write_text("junk")
    with pytest.raises(trajectory.TrajectoryFormatError, match="cannot be read"):
        trajectory.open_trajectory(tmp_path / "junk.nc")


def test_combine_puts_hyperparameters_on_the_cell_dimension(record, tmp_path):
    paths = []
    for i, lr in enumerate((0.05, 0.1)):
        ds = _dataset(record)
        ds.attrs["lr"] = lr
        if i == 1:
            ds = ds.isel(step=slice(0, 30))
        p = tmp_path / f"{i}.nc"
        write_netcdf(ds, p)
        paths.append(p)
    comb = trajectory.combine(paths, ["a", "b"])
    assert comb.sizes["cell"] == 2 and comb.sizes["step"] == 40
    assert list(comb["lr"].values) == [0.05, 0.1]
    assert np.isnan(comb["sq_step"].sel(cell="b", step=35))
    assert isinstance(comb, xr.Dataset) and "tensor" not in comb.dims
