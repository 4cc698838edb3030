"""The loss landscape on the plane of two Hessian eigenvectors around theta_0; a
stopped landscape continues from its finished rows to the same grid, bit for bit."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from small_networks import Small

from limiting_dynamics import hessian, landscape


def test_loss_plane_is_centred_on_theta0_curves_like_the_hessian_and_leaves_the_model_alone():
    torch.manual_seed(0)
    model = Small(activation=torch.tanh).double().train()  # smooth: finite differences see the Hessian
    x, y = torch.randn(32, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (32,))
    before = copy.deepcopy(model.state_dict())
    op = hessian.HessianOperator(
        model,
        [(x, y)],
        bn_mode="eval",
        reuse_graph=False,
        device=torch.device("cpu"),
        dtype=torch.float64,
        loss=F.cross_entropy,
        stack_examples=12,
    )
    top = hessian.lanczos(
        op.matvec, op.numel, 2, tol=1e-10, max_iter=op.numel, dtype=torch.float64, seed=0, device="cpu"
    )
    u, w = top.eigenvectors[:, 0], top.eigenvectors[:, 1]
    h = 1e-3
    out = landscape.loss_plane(model, u, w, [-h, 0.0, h], [-h, 0.0, h], {"train": (x, y)}, torch.device("cpu"))
    z = out["train"]
    model.eval()
    with torch.no_grad():
        assert z[1, 1] == pytest.approx(float(F.cross_entropy(model(x), y)), rel=1e-12)
    # second differences along u and w are the eigenvalues
    assert (z[0, 1] - 2 * z[1, 1] + z[2, 1]) / h**2 == pytest.approx(top.eigenvalues[0], rel=1e-4)
    assert (z[1, 0] - 2 * z[1, 1] + z[1, 2]) / h**2 == pytest.approx(top.eigenvalues[1], rel=1e-4)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    with pytest.raises(ValueError, match="directions"):
        landscape.loss_plane(model, u[:-1], w, [0.0], [0.0], {"train": (x, y)}, torch.device("cpu"))


def test_grid_extent_covers_the_trajectory():
    assert landscape.grid_extent(np.array([0.1, -0.4, 0.2]), 1.5) == pytest.approx(0.6)
    assert landscape.grid_extent(np.zeros(3), 1.5) == pytest.approx(1e-3)


def _plane_problem():
    torch.manual_seed(0)
    model = Small(activation=torch.tanh).double().train()
    x, y = torch.randn(32, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (32,))
    xt, yt = torch.randn(20, 1, 4, 4, dtype=torch.float64), torch.randint(0, 4, (20,))
    n = sum(p.numel() for p in model.parameters())
    u, w = torch.randn(n, dtype=torch.float64), torch.randn(n, dtype=torch.float64)
    grid = np.linspace(-0.5, 0.5, 6)
    return model, u / u.norm(), w / w.norm(), grid, grid[:5], {"train": (x, y), "test": (xt, yt)}


def test_loss_plane_continued_from_finished_rows_gives_the_same_grid_bit_for_bit():
    """Stopped after 3 of 6 rows (``on_row`` hands them over): computing the
    rest from those rows gives the uninterrupted grid, bit for bit, with only
    the missing rows computed; progress lines at the start, after rows and at the end."""
    model, u, w, alphas, betas, sets = _plane_problem()
    cpu = torch.device("cpu")
    whole = landscape.loss_plane(model, u, w, alphas, betas, sets, cpu, batch_size=8)

    class Stopped(Exception):
        pass

    kept = {}

    def on_row(rows, losses):
        assert all(v.shape == (rows, 5) for v in losses.values())
        if rows == 3:
            kept.update({k: v.copy() for k, v in losses.items()})
            raise Stopped

    with pytest.raises(Stopped):
        landscape.loss_plane(model, u, w, alphas, betas, sets, cpu, batch_size=8, on_row=on_row)
    rows, lines = [], []
    out = landscape.loss_plane(
        model,
        u,
        w,
        alphas,
        betas,
        sets,
        cpu,
        batch_size=8,
        done=kept,
        on_row=lambda r, losses: rows.append(r),
        log=lines.append,
        progress_every=0,
    )
    assert rows == [4, 5, 6]
    for name in whole:
        assert np.array_equal(out[name], whole[name]), name
    assert lines[0] == "loss landscape: started (6 rows, resumed after 3)"
    assert [line.split(",")[0] for line in lines[1:4]] == [f"loss landscape: {r}/6 rows" for r in (4, 5, 6)]
    assert lines[-1].startswith("loss landscape: done, 6 rows in ")
    with pytest.raises(ValueError, match="do not fit a 6 x 4 grid"):
        landscape.loss_plane(model, u, w, alphas, betas[:4], sets, cpu, done=kept)


def test_landscape_command_stopped_by_sigterm_mid_grid_resumes_to_the_same_file(
    digits, monkeypatch, tmp_path, one_thread, capsys
):
    """``limiting-dynamics landscape --resume``, sent a real SIGTERM in the middle
    of its 3rd row of 5: it finishes the row, keeps the 3 rows in its checkpoint
    and exits with status 75; the same command again computes only rows 4 and 5
    and writes the file an uninterrupted run writes, bit for bit."""
    import json
    import os
    import signal

    import xarray as xr
    from conftest import SMALL_RESNET, TINY, assert_same_result

    from limiting_dynamics import hyperparameters, trajectory
    from limiting_dynamics.atomic import write_netcdf
    from limiting_dynamics.checkpoints import read_checkpoint, save_checkpoint
    from limiting_dynamics.cli import EXIT_INTERRUPTED, main
    from limiting_dynamics.data import datasets as data
    from limiting_dynamics.models import build_model

    data.save_prepared(data.prepare(TINY["data"]), tmp_path / "digits.npz")
    torch.manual_seed(0)
    model = build_model(SMALL_RESNET, 10, 1)
    save_checkpoint({"model": model.state_dict()}, tmp_path / "theta0.pt")
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    vecs = np.linalg.qr(np.random.default_rng(0).standard_normal((n, 3)))[0].T.astype(np.float32)
    hess = xr.Dataset(
        {
            "hessian_eigenvalues": ("mode", [3.0, 2.0, 1.0]),
            "hessian_eigenvectors": (("mode", "parameter"), vecs),
            "slq_nodes": (("probe", "node"), np.ones((1, 4))),
            "slq_weights": (("probe", "node"), np.full((1, 4), 0.25)),
        },
        attrs={"n_params": n, "bn_mode": "eval", "hessian_trace_hutchinson": 6.0},
    )
    write_netcdf(hess, tmp_path / "hessian.nc")
    steps = np.arange(1, 11)
    traj = xr.Dataset(
        {
            **{v: ("step", np.linspace(0.1, 1.0, 10)) for v in trajectory.STEP_VARIABLES},
            "mode_position": (("step", "mode"), np.outer(np.sin(steps), [0.3, 0.2, 0.1]).astype(np.float32)),
        },
        coords={"step": steps, "mode": [1, 2, 3]},
        attrs={
            "format_name": trajectory.FORMAT_NAME,
            "format_version": trajectory.FORMAT_VERSION,
            **dict.fromkeys(hyperparameters.NAMES, 0),
        },
    )
    write_netcdf(traj, tmp_path / "trajectory.nc")
    cfg = {k: v for k, v in TINY["landscape"].items() if k != "enabled"}
    params = json.dumps({"device": "cpu", "deterministic": True, "model": SMALL_RESNET, "landscape": cfg, "cell": "c"})

    def command(out: str, *extra: str) -> list[str]:
        inputs = [f"--{k}={tmp_path / f}" for k, f in (("data", "digits.npz"), ("checkpoint", "theta0.pt"))]
        inputs += [f"--{k}={tmp_path / k}.nc" for k in ("hessian", "trajectory")]
        return ["landscape", *inputs, "--params", params, "--out", str(tmp_path / out), *extra]

    calls = []
    forward = landscape.functional_call

    def counting(*args, **kw):
        calls.append(1)
        return forward(*args, **kw)

    monkeypatch.setattr(landscape, "functional_call", counting)
    assert main(command("ref.nc")) == 0
    per_row = len(calls) // cfg["grid"]
    resume = tmp_path / "landscape_resume.pt"

    def sigterm_in_the_third_row(*args, **kw):
        if len(calls) == 2 * per_row + 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return counting(*args, **kw)

    calls.clear()
    with monkeypatch.context() as m:
        m.setattr(landscape, "functional_call", sigterm_in_the_third_row)
        assert main(command("cut.nc", "--resume", str(resume), "--checkpoint-every", "0")) == EXIT_INTERRUPTED
    assert len(calls) == 3 * per_row and not (tmp_path / "cut.nc").exists()
    assert "interrupted: stopped by SIGTERM after 3 rows of the loss landscape" in capsys.readouterr().err
    assert read_checkpoint(resume)["rows"] == 3
    calls.clear()
    assert main(command("cut.nc", "--resume", str(resume), "--checkpoint-every", "1")) == 0
    assert len(calls) == 2 * per_row and not resume.exists()
    assert "resuming after 3 of 5 rows" in capsys.readouterr().out
    ref, cut = xr.load_dataset(tmp_path / "ref.nc"), xr.load_dataset(tmp_path / "cut.nc")
    assert_same_result(ref, cut)
