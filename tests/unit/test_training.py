"""Training: limiting runs record every step consistently and reproducibly,
divergence is named, burn-in states, phase-space projections, kept weights, label
noise, and runs stopped and resumed bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import SMALL_RESNET, StopAt, drawing, recording_plan, short_limiting_run

from limiting_dynamics.checkpoints import (
    Checkpointer,
    CheckpointError,
    ResumeStore,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from limiting_dynamics.errors import Interrupted
from limiting_dynamics.models import build_model
from limiting_dynamics.training import DivergenceError, Hyperparameters, Numerics, burn_in, limiting_run, pretrain

CPU = torch.device("cpu")


QUIET = {"log": lambda s: None}
PLAIN = {**QUIET, "numerics": Numerics()}  # quiet training in plain float32 arithmetic


def _limiting(digits, checkpointer=None):
    """50 recorded steps with phase space (3 directions, an 8-number sketch)."""
    torch.manual_seed(0)
    model = build_model(SMALL_RESNET, 10, 1)
    n = sum(p.numel() for p in model.parameters())
    directions = torch.linalg.qr(torch.randn(n, 3, generator=torch.Generator().manual_seed(5)))[0].T.contiguous()
    return limiting_run(
        model,
        digits,
        Hyperparameters(0.05, 32, 0.9, 5e-3, 1),
        steps=50,
        burn_in=7,
        eval_every=20,
        drawing=drawing("reshuffle", 1),
        device=CPU,
        recording=recording_plan(directions=directions, sketch_dim=8, tensor_every=3),
        cell="c",
        checkpointer=checkpointer,
        **PLAIN,
    )


def _assert_same_record(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def test_limiting_run_records_every_step_consistently(record):
    assert np.array_equal(record["step"], np.arange(1, 41))
    for k in ("train_loss", "sq_dist_from_start", "sq_velocity", "sq_param_norm", "sq_step"):
        assert record[k].shape == (40,) and np.all(np.isfinite(record[k]))

    assert list(record["tensor_step"]) == list(range(1, 11)) + [20, 30, 40]
    at = record["tensor_step"] - 1
    assert np.allclose(record["sq_dist_from_start_by_tensor"].sum(axis=1), record["sq_dist_from_start"][at], rtol=1e-4)
    assert list(record["eval_step"]) == [0, 20, 40]
    assert record["burn_in_steps"] == 5 and record["sq_velocity_start"] > 0


def test_same_seed_same_trajectory_other_seed_differs(digits, record):
    again = short_limiting_run(digits, Hyperparameters(0.05, 32, 0.9, 5e-3, 0))
    assert np.array_equal(again["sq_dist_from_start"], record["sq_dist_from_start"])
    other = short_limiting_run(digits, Hyperparameters(0.05, 32, 0.9, 5e-3, 1))
    assert not np.array_equal(other["sq_dist_from_start"], record["sq_dist_from_start"])


def test_divergence_names_cell_and_step(digits):
    with pytest.raises(DivergenceError, match=r"cell testcell diverged (at step \d+|during burn-in)"):
        short_limiting_run(digits, Hyperparameters(1e4, 32, 0.9, 0.0, 0), steps=40, burn_in=0, check_every=10)


def test_burn_in_checkpoint_then_run_is_bit_identical_to_one_process(digits, tmp_path):
    """burn-in -> checkpoint on disk -> limiting run == burn-in and run in one go, for both samplings."""
    from limiting_dynamics.training import burn_in

    for sampling in ("reshuffle", "replacement"):
        hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 3)
        whole = short_limiting_run(digits, hp, steps=30, burn_in=47, sampling=sampling, augment_shift=1)
        torch.manual_seed(0)
        state = burn_in(
            build_model(SMALL_RESNET, 10, 1),
            digits,
            hp,
            steps=47,
            drawing=drawing(sampling, 1),
            device=torch.device("cpu"),
            **PLAIN,
        )
        save_checkpoint(state, tmp_path / "theta0.pt")
        split = short_limiting_run(
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
    from limiting_dynamics.training import burn_in

    hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 0)
    state = burn_in(
        build_model(SMALL_RESNET, 10, 1),
        digits,
        hp,
        steps=3,
        drawing=drawing(),
        device=torch.device("cpu"),
        **PLAIN,
    )
    with pytest.raises(CheckpointError, match="hyperparameters"):
        short_limiting_run(digits, Hyperparameters(0.04, 32, 0.9, 5e-3, 0), steps=3, burn_in=0, start=state)
    with pytest.raises(CheckpointError, match="not a burn-in checkpoint"):
        short_limiting_run(digits, hp, steps=3, burn_in=0, start={"model": state["model"]})


def test_phase_space_projections_and_sketch_match_the_parameters(digits):
    """mode_position/velocity are exact projections; the sketch preserves squared distances on average."""
    hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 0)
    n = sum(p.numel() for p in build_model(SMALL_RESNET, 10, 1).parameters())
    g = torch.Generator().manual_seed(1)
    u = torch.linalg.qr(torch.randn(n, 3, generator=g, dtype=torch.float64))[0].T.float()
    plain = short_limiting_run(digits, hp, steps=40)
    rec = short_limiting_run(digits, hp, steps=40, recording=recording_plan(directions=u, sketch_dim=64, sketch_seed=5))
    # phase-space recording does not change the run
    np.testing.assert_array_equal(rec["train_loss"], plain["train_loss"])
    assert rec["mode_position"].shape == (40, 3) and rec["mode_velocity"].shape == (40, 3)
    # projections of orthonormal directions cannot exceed the full norms
    assert np.all((rec["mode_position"] ** 2).sum(1) <= rec["sq_dist_from_start"] * (1 + 1e-4))
    assert np.all((rec["mode_velocity"] ** 2).sum(1) <= rec["sq_velocity"] * (1 + 1e-4))
    # the sketch is unbiased: its squared norm tracks ||theta_k - theta_0||^2 within sketch noise (~sqrt(2/64))
    ratio = (rec["sketch"] ** 2).sum(1) / rec["sq_dist_from_start"]
    assert 0.6 < np.median(ratio) < 1.6, np.median(ratio)


def test_the_kept_weights_are_the_recorded_runs(digits):
    """The noise and eigenvector-drift stages take the weights the limiting run
    kept (``snapshot_steps``): at each kept step they are the recorded run's,
    bit for bit in the distance from the start (label-noise batches included),
    and the run itself is the same with and without keeping them."""
    from limiting_dynamics.training import burn_in

    hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 2)
    torch.manual_seed(0)
    state = burn_in(
        build_model(SMALL_RESNET, 10, 1),
        digits,
        hp,
        steps=10,
        drawing=drawing("reshuffle", 0, 0.2),
        device=torch.device("cpu"),
        **PLAIN,
    )
    plain = short_limiting_run(digits, hp, steps=12, burn_in=0, start=state, label_noise=0.2)
    kept = short_limiting_run(digits, hp, steps=12, burn_in=0, start=state, label_noise=0.2, snapshot_steps=[12, 3, 7])
    assert sorted(kept["snapshots"]) == [3, 7, 12]
    np.testing.assert_array_equal(kept["sq_dist_from_start"], plain["sq_dist_from_start"])
    model = build_model(SMALL_RESNET, 10, 1)
    model.load_state_dict(state["model"])
    theta0 = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
    for step, weights in kept["snapshots"].items():
        model.load_state_dict(weights)
        theta = torch.cat([p.detach().reshape(-1).double() for p in model.parameters()])
        assert float(((theta - theta0) ** 2).sum()) == pytest.approx(plain["sq_dist_from_start"][step - 1], rel=1e-5)


def test_label_noise_replaces_the_drawn_fraction_and_resumes_identically(digits):
    from limiting_dynamics.data.batches import MemoryBatches

    a = MemoryBatches(digits, 64, drawing("reshuffle", 0, 0.3), seed=0)
    clean = MemoryBatches(digits, 64, drawing(), seed=0)
    changed = []
    for _ in range(200):
        (_, y), (_, y0) = a.next(), clean.next()
        changed.append((y != y0).float().mean().item())
    assert np.mean(changed) == pytest.approx(0.3 * 0.9, abs=0.02)  # a uniform class is the true one 1 time in 10
    state = a.state_dict()
    b = MemoryBatches(digits, 64, drawing("reshuffle", 0, 0.3), seed=0)
    b.load_state_dict(state)
    for _ in range(5):
        assert torch.equal(a.next()[1], b.next()[1])


def test_limiting_run_stopped_twice_and_resumed_is_bit_identical(digits, tmp_path):
    whole = _limiting(digits)
    store = ResumeStore(tmp_path / "resume.pt", {"cell": "c"}, **QUIET)
    # stopped by a signal at step 13 (no scheduled checkpoint before), then at step 31 (after one at 20)
    with pytest.raises(Interrupted, match="stopped by SIGTERM after 13 steps"):
        _limiting(digits, Checkpointer(store, every=20, stop=StopAt(13), **QUIET))
    assert read_checkpoint(store.path)["recorder"]["count"] == 13
    with pytest.raises(Interrupted, match="after 31 steps"):
        _limiting(digits, Checkpointer(store, every=20, stop=StopAt(18), **QUIET))
    resumed = _limiting(digits, Checkpointer(store, every=20, **QUIET))
    _assert_same_record(whole, resumed)


def test_limiting_run_resumes_from_the_previous_checkpoint_when_the_last_is_damaged(digits, tmp_path):
    whole = _limiting(digits)
    store = ResumeStore(tmp_path / "resume.pt", {"cell": "c"}, **QUIET)
    with pytest.raises(Interrupted):
        _limiting(digits, Checkpointer(store, every=10, stop=StopAt(35), **QUIET))
    store.path.write_bytes(store.path.read_bytes()[:1000])  # the step-35 checkpoint, truncated
    assert read_checkpoint(store.prev)["recorder"]["count"] == 30
    _assert_same_record(whole, _limiting(digits, Checkpointer(store, every=10, **QUIET)))


def test_burn_in_stopped_and_resumed_is_bit_identical(digits, tmp_path):
    hp = Hyperparameters(0.05, 32, 0.9, 5e-3, 2)

    def run(checkpointer=None):
        torch.manual_seed(0)
        return burn_in(
            build_model(SMALL_RESNET, 10, 1),
            digits,
            hp,
            steps=40,
            drawing=drawing("replacement", 1),
            device=CPU,
            checkpointer=checkpointer,
            **PLAIN,
        )

    whole = run()
    store = ResumeStore(tmp_path / "burn.pt", {"cell": "c"}, **QUIET)
    with pytest.raises(Interrupted, match="after 17 burn-in steps"):
        run(Checkpointer(store, every=0, stop=StopAt(17), **QUIET))
    resumed = run(Checkpointer(store, every=0, **QUIET))
    assert resumed["burn_in_loss"] == whole["burn_in_loss"]
    for k, v in whole["model"].items():
        assert torch.equal(v, resumed["model"][k]), k
    assert torch.equal(whole["momentum_buffer"], resumed["momentum_buffer"])


def test_pretraining_stopped_and_resumed_is_bit_identical(digits, tmp_path):
    cfg = {
        "epochs": 3,
        "lr": 0.1,
        "batch_size": 128,
        "momentum": 0.9,
        "weight_decay": 5e-4,
        "sampling": "reshuffle",
        "augment_shift": 1,
        "label_noise": 0.0,
        "seed": 4,
    }

    def run(checkpointer=None):
        torch.manual_seed(4)
        model = build_model(SMALL_RESNET, 10, 1)
        return model, pretrain(model, digits, cfg, CPU, checkpointer=checkpointer, **PLAIN)

    whole_model, whole = run()
    store = ResumeStore(tmp_path / "conv.pt", {"converge": 1}, **QUIET)
    with pytest.raises(Interrupted, match="after 1 epochs"):
        run(Checkpointer(store, every=0, stop=StopAt(1), **QUIET))
    model, history = run(Checkpointer(store, every=1, **QUIET))
    assert history == whole
    for k, v in whole_model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
