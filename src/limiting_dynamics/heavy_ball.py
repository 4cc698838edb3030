"""SGD with heavy-ball momentum and L2 weight decay: PyTorch's update, without ``torch.optim``.

Constructing any ``torch.optim.Optimizer`` imports ``torch._dynamo`` (its
``add_param_group`` and ``step`` are wrapped to disable the compiler), which
took about 1 s per process on the 2-core development machine, more than all of
a small training job's other start-up work together (``bench/job_fixed_cost.py``).
:class:`HeavyBall` calls the very kernels ``torch.optim.SGD`` calls
(``torch._fused_sgd_``, or the ``torch._foreach_*`` sequence of its multi-tensor
path on a device without the fused kernel) with the same arguments, so its
steps are bit-identical to ``torch.optim.SGD(..., fused=True)`` (resp.
``foreach=True``); ``tests/unit/test_heavy_ball.py`` checks that, and that its
:meth:`HeavyBall.state_dict` loads into ``torch.optim.SGD`` and back.

The update, with momentum ``beta``, weight decay ``wd`` and learning rate ``lr``::

    d = g + wd * theta
    v = beta * v + d          (v = d on the first step)
    theta = theta - lr * v
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FUSED = "fused"
FOREACH = "foreach"
NAMES = {FUSED: "heavy-ball SGD (fused)", FOREACH: "heavy-ball SGD (foreach)"}  # recorded in checkpoints
# what a checkpoint written before this module records for the same kernels
_KERNELS = {**{v: k for k, v in NAMES.items()}, "torch.optim.SGD(fused)": FUSED, "torch.optim.SGD(foreach)": FOREACH}
_FUSED_DEVICES = ("cpu", "cuda", "mps", "xpu", "hpu")


def kernel_of(name: str | None) -> str | None:
    """The kernel an optimizer name recorded in a checkpoint or trajectory stands for."""
    return _KERNELS.get(name)


class HeavyBall:
    """SGD with momentum (no dampening, no Nesterov) and L2 weight decay.

    ``state[p]["momentum_buffer"]`` holds each parameter's buffer as in
    ``torch.optim.SGD`` (``None``/absent until the first step), so a buffer may
    be replaced by a view into a flat tensor
    (:meth:`limiting_dynamics.recording.FlatParameters.install_momentum_buffers`).
    ``lr`` may be changed between steps (a schedule).
    """

    def __init__(self, params: Iterable[torch.Tensor], lr: float, momentum: float, weight_decay: float):
        self.params = list(params)
        if lr < 0 or momentum < 0 or weight_decay < 0:
            raise ValueError(f"lr {lr}, momentum {momentum} and weight_decay {weight_decay} must be >= 0")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.state: dict[torch.Tensor, dict[str, torch.Tensor]] = {p: {} for p in self.params}
        supported = all(p.device.type in _FUSED_DEVICES and torch.is_floating_point(p) for p in self.params)
        self.kernel = FUSED if supported else FOREACH
        # the kernels take one device and dtype per call; the parameters are fixed, so group them once
        groups: dict[tuple, list[torch.Tensor]] = {}
        for p in self.params:
            groups.setdefault((p.device, p.dtype), []).append(p)
        self._groups = list(groups.values())

    @property
    def name(self) -> str:
        """Recorded in checkpoints and trajectories: runs are bit-identical within one kernel only."""
        return NAMES[self.kernel]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                p.grad.detach_().zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (as ``torch.optim.SGD.step``)."""
        for group in self._groups:
            ps = [p for p in group if p.grad is not None]
            if not ps:
                continue
            gs, bs = [p.grad for p in ps], [self.state[p].get("momentum_buffer") for p in ps]
            new = self._fused(ps, gs, bs) if self.kernel == FUSED else self._foreach(ps, gs, bs)
            if self.momentum != 0:
                for p, b in zip(ps, new):
                    self.state[p]["momentum_buffer"] = b

    def _fused(self, ps: list, gs: list, bs: list) -> list:
        first = self.momentum != 0 and all(b is None for b in bs)
        if first:
            bs = [torch.empty_like(g) for g in gs]
        torch._fused_sgd_(
            ps,
            gs,
            [] if self.momentum == 0 else bs,
            weight_decay=self.weight_decay,
            momentum=self.momentum,
            lr=self.lr,
            dampening=0.0,
            nesterov=False,
            maximize=False,
            is_first_step=first,
        )
        return bs

    def _foreach(self, ps: list, gs: list, bs: list) -> list:
        if self.weight_decay != 0:
            gs = torch._foreach_add(gs, ps, alpha=self.weight_decay)
        if self.momentum != 0:
            if all(b is not None for b in bs):
                torch._foreach_mul_(bs, self.momentum)
                torch._foreach_add_(bs, gs, alpha=1.0)
            else:
                bs = [
                    g.detach().clone() if b is None else b.mul_(self.momentum).add_(g, alpha=1.0)
                    for g, b in zip(gs, bs)
                ]
            gs = bs
        torch._foreach_add_(ps, gs, alpha=-self.lr)
        return bs

    def state_dict(self) -> dict:
        """In ``torch.optim.SGD``'s layout (loadable by its ``load_state_dict``)."""
        state = {
            i: {"momentum_buffer": self.state[p]["momentum_buffer"]}
            for i, p in enumerate(self.params)
            if self.state[p].get("momentum_buffer") is not None
        }
        group = {
            "lr": self.lr,
            "momentum": self.momentum,
            "dampening": 0.0,
            "weight_decay": self.weight_decay,
            "nesterov": False,
            "maximize": False,
            "foreach": self.kernel == FOREACH,
            "differentiable": False,
            "fused": self.kernel == FUSED,
            "params": list(range(len(self.params))),
        }
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, saved: dict) -> None:
        """From :meth:`state_dict` or ``torch.optim.SGD.state_dict()`` of the same parameters."""
        groups = saved["param_groups"]
        if len(groups) != 1 or len(groups[0]["params"]) != len(self.params):
            raise ValueError(
                f"optimizer state for {sum(len(g['params']) for g in groups)} parameters in "
                f"{len(groups)} groups; this optimizer has {len(self.params)} in one"
            )
        if groups[0].get("dampening", 0) != 0 or groups[0].get("nesterov", False):
            raise ValueError("optimizer state with dampening or Nesterov momentum: not heavy-ball SGD")
        self.lr = float(groups[0]["lr"])
        self.momentum, self.weight_decay = float(groups[0]["momentum"]), float(groups[0]["weight_decay"])
        for index, p in zip(groups[0]["params"], self.params):
            buf = saved["state"].get(index, {}).get("momentum_buffer")
            if buf is None:
                self.state[p].pop("momentum_buffer", None)
                continue
            if buf.shape != p.shape:
                raise ValueError(f"momentum buffer of shape {tuple(buf.shape)} for a parameter of {tuple(p.shape)}")
            self.state[p]["momentum_buffer"] = buf.to(device=p.device, dtype=p.dtype).clone()
