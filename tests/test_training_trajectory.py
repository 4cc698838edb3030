import numpy as np
import pytest
import torch
import xarray as xr

from limiting_dynamics import trajectory
from limiting_dynamics.atomic import write_netcdf
from limiting_dynamics.data import datasets as data
from limiting_dynamics.data.batches import BatchSampler
from limiting_dynamics.models import build_model
from limiting_dynamics.training import DivergenceError, Hyperparameters, limiting_run

MODEL = {"arch": "resnet", "blocks": [1], "width": 4, "stem": "cifar"}


def _run(digits, hp, steps=40, burn_in=5, **kw):
    torch.manual_seed(0)
    model = build_model(MODEL, 10, 1)
    return limiting_run(
        model,
        digits,
        hp,
        steps=steps,
        burn_in=burn_in,
        eval_every=20,
        sampling=kw.pop("sampling", "reshuffle"),
        device=torch.device("cpu"),
        cell="testcell",
        log=lambda s: None,
        **kw,
    )


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
    assert np.allclose(record["sq_dist_from_start_by_tensor"].sum(axis=1), record["sq_dist_from_start"][at], rtol=1e-4)
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
    with pytest.raises(trajectory.TrajectoryFormatError, match="format version 1 is not the supported version 4"):
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


def test_converge_stage_is_bit_reproducible(tmp_path):
    """The whole stage, initialisation included, depends only on the config's seeds."""
    import json

    from limiting_dynamics.checkpoints import load_checkpoint
    from limiting_dynamics.cli import main

    path = tmp_path / "digits.npz"
    data.save_prepared(
        data.prepare({"name": "digits", "image_size": 8, "channels": 1, "test_fraction": 0.2, "split_seed": 0}), path
    )
    params = json.dumps(
        {
            "device": "cpu",
            "model": MODEL,
            "converge": {
                "checkpoint": None,
                "epochs": 1,
                "lr": 0.1,
                "batch_size": 128,
                "momentum": 0.9,
                "weight_decay": 5e-4,
                "sampling": "reshuffle",
                "augment_shift": 1,
                "seed": 3,
            },
        }
    )
    states = []
    for i in range(2):
        torch.manual_seed(100 + i)  # whatever the global RNG was before must not matter
        assert (
            main(
                [
                    "converge",
                    "--data",
                    str(path),
                    "--params",
                    params,
                    "--out-checkpoint",
                    str(tmp_path / f"t{i}.pt"),
                    "--out-history",
                    str(tmp_path / f"h{i}.nc"),
                ]
            )
            == 0
        )
        states.append(load_checkpoint(tmp_path / f"t{i}.pt")["model"])
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k]), k


def test_burn_in_checkpoint_then_run_is_bit_identical_to_one_process(digits, tmp_path):
    """burn-in -> checkpoint on disk -> limiting run == burn-in and run in one go, for both samplings."""
    from limiting_dynamics.checkpoints import load_checkpoint, save_checkpoint
    from limiting_dynamics.training import burn_in

    for sampling in ("reshuffle", "replacement"):
        hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 3)
        whole = _run(digits, hp, steps=30, burn_in=47, sampling=sampling, augment_shift=1)
        torch.manual_seed(0)
        state = burn_in(
            build_model(MODEL, 10, 1),
            digits,
            hp,
            steps=47,
            sampling=sampling,
            device=torch.device("cpu"),
            augment_shift=1,
            log=lambda s: None,
        )
        save_checkpoint(state, tmp_path / "theta0.pt")
        split = _run(
            digits,
            hp,
            steps=30,
            burn_in=0,
            sampling=sampling,
            augment_shift=1,
            start=load_checkpoint(tmp_path / "theta0.pt"),
        )
        assert split["burn_in_steps"] == 47
        for key in ("train_loss", "sq_dist_from_start", "sq_velocity", "sq_param_norm", "eval_test_loss"):
            np.testing.assert_array_equal(split[key], whole[key], err_msg=f"{sampling}: {key}")


def test_burn_in_state_refuses_other_hyperparameters(digits):
    from limiting_dynamics.checkpoints import CheckpointError
    from limiting_dynamics.training import burn_in

    hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 0)
    state = burn_in(
        build_model(MODEL, 10, 1),
        digits,
        hp,
        steps=3,
        sampling="reshuffle",
        device=torch.device("cpu"),
        log=lambda s: None,
    )
    with pytest.raises(CheckpointError, match="hyperparameters"):
        _run(digits, Hyperparameters(0.04, 32, 0.9, 5e-3, 0), steps=3, burn_in=0, start=state)
    with pytest.raises(CheckpointError, match="not a burn-in checkpoint"):
        _run(digits, hp, steps=3, burn_in=0, start={"model": state["model"]})


def test_phase_space_projections_and_sketch_match_the_parameters(digits):
    """mode_position/velocity are exact projections; the sketch preserves squared distances on average."""
    hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 0)
    n = sum(p.numel() for p in build_model(MODEL, 10, 1).parameters())
    g = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(n, 3, generator=g, dtype=torch.float64))[0].T.float()
    plain = _run(digits, hp, steps=40)
    rec = _run(digits, hp, steps=40, directions=u, sketch_dim=64, sketch_seed=5)
    # phase-space recording does not change the run
    np.testing.assert_array_equal(rec["train_loss"], plain["train_loss"])
    assert rec["mode_position"].shape == (40, 3) and rec["mode_velocity"].shape == (40, 3)
    # projections of orthonormal directions cannot exceed the full norms
    assert np.all((rec["mode_position"] ** 2).sum(1) <= rec["sq_dist_from_start"] * (1 + 1e-4))
    assert np.all((rec["mode_velocity"] ** 2).sum(1) <= rec["sq_velocity"] * (1 + 1e-4))
    # the sketch is unbiased: its squared norm tracks ||theta_k - theta_0||^2 within sketch noise (~sqrt(2/64))
    ratio = (rec["sketch"] ** 2).sum(1) / rec["sq_dist_from_start"]
    assert 0.6 < np.median(ratio) < 1.6, np.median(ratio)


def test_block_sign_sketch_is_linear_and_unbiased():
    from limiting_dynamics.recording import BlockSignSketch

    x = torch.randn(1001, dtype=torch.float64)
    y = torch.randn(1001, dtype=torch.float64)
    s = BlockSignSketch(1001, 10, seed=0, device="cpu", dtype=torch.float64)
    assert s.block == 101
    np.testing.assert_allclose(s(x + 2 * y).numpy(), (s(x) + 2 * s(y)).numpy(), atol=1e-12)
    # over many sign draws E||Sx||^2 = ||x||^2
    est = np.mean(
        [
            float((BlockSignSketch(1001, 10, seed=k, device="cpu", dtype=torch.float64)(x) ** 2).sum())
            for k in range(400)
        ]
    )
    assert abs(est / float(x @ x) - 1) < 0.05
    with pytest.raises(ValueError, match="sketch dimension"):
        BlockSignSketch(10, 11, 0, "cpu")


def test_replay_from_the_burn_in_state_retraces_the_recorded_run(digits):
    """The eigenvector-drift stage replays a run from theta_0: at every requested
    step its parameters are the recorded run's, bit for bit (distance from the
    start and the label-noise batches included)."""
    from limiting_dynamics.training import burn_in, replay

    hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 2)
    torch.manual_seed(0)
    state = burn_in(
        build_model(MODEL, 10, 1),
        digits,
        hp,
        steps=10,
        sampling="reshuffle",
        device=torch.device("cpu"),
        label_noise=0.2,
        log=lambda s: None,
    )
    recorded = _run(digits, hp, steps=12, burn_in=0, start=state, label_noise=0.2)
    model = build_model(MODEL, 10, 1)
    theta0 = None
    for step, m in replay(
        model, digits, hp, state, [0, 3, 12], sampling="reshuffle", device=torch.device("cpu"), label_noise=0.2
    ):
        theta = torch.cat([p.detach().reshape(-1).double() for p in m.parameters()])
        theta0 = theta.clone() if step == 0 else theta0
        if step:
            assert float(((theta - theta0) ** 2).sum()) == pytest.approx(
                recorded["sq_dist_from_start"][step - 1], rel=1e-5
            )


def test_label_noise_replaces_the_drawn_fraction_and_resumes_identically(digits):
    from limiting_dynamics.data.batches import MemoryBatches

    a = MemoryBatches(digits, 64, "reshuffle", seed=0, shift=0, label_noise=0.3)
    clean = MemoryBatches(digits, 64, "reshuffle", seed=0, shift=0)
    changed = []
    for _ in range(200):
        (_, y), (_, y0) = a.next(), clean.next()
        changed.append((y != y0).float().mean().item())
    assert np.mean(changed) == pytest.approx(0.3 * 0.9, abs=0.02)  # a uniform class is the true one 1 time in 10
    state = a.state_dict()
    b = MemoryBatches(digits, 64, "reshuffle", seed=0, shift=0, label_noise=0.3)
    b.load_state_dict(state)
    for _ in range(5):
        assert torch.equal(a.next()[1], b.next()[1])
