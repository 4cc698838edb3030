import numpy as np
import pytest
import torch
import xarray as xr

from limiting_dynamics import data, trajectory
from limiting_dynamics.models import build_model
from limiting_dynamics.training import BatchSampler, DivergenceError, Hyperparameters, limiting_run

MODEL = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    data.save_prepared(data.prepare({"name": "digits", "image_size": 8, "channels": 1,
                                     "test_fraction": 0.2, "split_seed": 0}), path)
    return data.load_prepared(path)


def _run(digits, hp, steps=40, burn_in=5, **kw):
    torch.manual_seed(0)
    model = build_model(MODEL, 10, 1)
    return limiting_run(model, digits, hp, steps=steps, burn_in=burn_in, eval_every=20,
                        sampling=kw.pop("sampling", "reshuffle"), device=torch.device("cpu"),
                        cell="testcell", log=lambda s: None, **kw)


@pytest.fixture(scope="module")
def record(digits):
    return _run(digits, Hyperparameters(0.05, 32, 0.9, 5e-3, 0))


def test_reshuffle_visits_every_example_once_per_epoch():
    s = BatchSampler(100, 10, "reshuffle", seed=0, device=torch.device("cpu"))
    first = torch.cat([s.next() for _ in range(10)])
    assert sorted(first.tolist()) == list(range(100))
    s2 = BatchSampler(100, 10, "reshuffle", seed=0, device=torch.device("cpu"))
    assert torch.equal(torch.cat([s2.next() for _ in range(10)]), first)


def test_replacement_draws_are_iid_uniform():
    s = BatchSampler(50, 25, "replacement", seed=0, device=torch.device("cpu"))
    idx = torch.cat([s.next() for _ in range(400)])
    counts = torch.bincount(idx, minlength=50).double()
    assert counts.min() > 0
    # chi-square with 49 dof: far below 100 unless the draws are not uniform
    chi2 = float(((counts - counts.mean()) ** 2 / counts.mean()).sum())
    assert chi2 < 100
    # with replacement, a batch can repeat an example (it does, with 25 of 50)
    assert any(len(set(s.next().tolist())) < 25 for _ in range(20))


def test_limiting_run_records_every_step_consistently(record):
    assert np.array_equal(record["step"], np.arange(1, 41))
    for k in ("train_loss", "sq_dist_from_start", "sq_velocity", "sq_param_norm", "sq_step"):
        assert record[k].shape == (40,) and np.all(np.isfinite(record[k]))
    assert np.allclose(record["sq_step"], 0.05**2 * record["sq_velocity"])
    assert list(record["tensor_step"]) == list(range(1, 11)) + [20, 30, 40]
    at = record["tensor_step"] - 1
    assert np.allclose(record["sq_dist_from_start_by_tensor"].sum(axis=1), record["sq_dist_from_start"][at],
                       rtol=1e-4)
    assert list(record["eval_step"]) == [0, 20, 40]
    assert record["burn_in_steps"] == 5 and record["sq_velocity_start"] > 0


def test_same_seed_same_trajectory_other_seed_differs(digits, record):
    again = _run(digits, Hyperparameters(0.05, 32, 0.9, 5e-3, 0))
    assert np.array_equal(again["sq_dist_from_start"], record["sq_dist_from_start"])
    other = _run(digits, Hyperparameters(0.05, 32, 0.9, 5e-3, 1))
    assert not np.array_equal(other["sq_dist_from_start"], record["sq_dist_from_start"])


def test_divergence_names_cell_and_step(digits):
    with pytest.raises(DivergenceError, match=r"cell testcell diverged (at step \d+|during burn-in)"):
        _run(digits, Hyperparameters(1e4, 32, 0.9, 0.0, 0), steps=40, burn_in=0, check_every=10)


def _dataset(record):
    rec = dict(record)
    attrs = {"lr": 0.05, "batch_size": 32, "momentum": 0.9, "weight_decay": 5e-3, "seed": 0,
             "cell": "c", "dataset": "digits", "model": "{}", "sampling": "reshuffle", "device": "cpu"}
    return trajectory.build_dataset(rec, attrs)


def test_trajectory_netcdf_round_trip_with_cf_attributes(record, tmp_path):
    ds = _dataset(record)
    path = tmp_path / "t.nc"
    trajectory.write_netcdf(ds, path, trajectory.encoding_for(ds))
    back = trajectory.open_trajectory(path)
    for v in ("train_loss", "sq_dist_from_start", "sq_step", "sq_velocity", "sq_param_norm"):
        assert back[v].dims == ("step",)
        assert back[v].attrs["units"] and back[v].attrs["long_name"]
        np.testing.assert_array_equal(back[v].values, ds[v].values)
    assert back["eval_test_accuracy"].dims == ("eval_step",)
    assert back.attrs["Conventions"].startswith("CF-")
    assert back.attrs["history"][:4].isdigit() and "Z " in back.attrs["history"]
    for a in ("lr", "batch_size", "momentum", "weight_decay", "seed", "n_params", "torch_version",
              "limiting_dynamics_version", "dataset", "model"):
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
    with pytest.raises(trajectory.TrajectoryFormatError, match="format version 1 is not the supported version 2"):
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
        trajectory.write_netcdf(ds, p)
        paths.append(p)
    comb = trajectory.combine(paths, ["a", "b"])
    assert comb.sizes["cell"] == 2 and comb.sizes["step"] == 40
    assert list(comb["lr"].values) == [0.05, 0.1]
    assert np.isnan(comb["sq_step"].sel(cell="b", step=35))
    assert isinstance(comb, xr.Dataset) and "tensor" not in comb.dims


def test_converge_stage_is_bit_reproducible(tmp_path):
    """The whole stage, initialisation included, depends only on the config's seeds."""
    import json

    from limiting_dynamics.checkpoints import load_checkpoint
    from limiting_dynamics.cli import main

    path = tmp_path / "digits.npz"
    data.save_prepared(data.prepare({"name": "digits", "image_size": 8, "channels": 1,
                                     "test_fraction": 0.2, "split_seed": 0}), path)
    params = json.dumps({"device": "cpu", "model": MODEL,
                         "converge": {"checkpoint": None, "epochs": 1, "lr": 0.1, "batch_size": 128,
                                      "momentum": 0.9, "weight_decay": 5e-4, "sampling": "reshuffle",
                                      "augment_shift": 1, "seed": 3}})
    states = []
    for i in range(2):
        torch.manual_seed(100 + i)  # whatever the global RNG was before must not matter
        assert main(["converge", "--data", str(path), "--params", params,
                     "--out-checkpoint", str(tmp_path / f"t{i}.pt"), "--out-history", str(tmp_path / f"h{i}.nc")]) == 0
        states.append(load_checkpoint(tmp_path / f"t{i}.pt")["model"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k
