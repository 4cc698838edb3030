"""The loss landscape on the plane of two Hessian eigenvectors around theta_0."""

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
    op = hessian.HessianOperator(model, [(x, y)], bn_mode="eval", device=torch.device("cpu"), dtype=torch.float64)
    top = hessian.lanczos(op.matvec, op.numel, 2, tol=1e-10, max_iter=op.numel, dtype=torch.float64)
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
