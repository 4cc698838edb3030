"""Cheap per-step recording of the quantities the theory talks about.

Three ideas keep the cost of recording every step small:

* the parameters are made views into one flat buffer (:class:`FlatParameters`),
  and so are the momentum buffers, so every norm is one pass over memory;
* with PyTorch SGD, ``theta_t - theta_{t-1} = -lr * v_t`` exactly, so the step
  length needs no extra pass: ``||theta_t - theta_{t-1}||^2 = lr^2 ||v_t||^2``;
* results go into a preallocated tensor on the training device and are copied
  to the host only at the end (no per-step synchronisation on a GPU);
* per-tensor norms, needed for the radial/angular split and the bootstrap,
  are taken at a sparser set of steps (``tensor_every``);
* for large models the three per-step norms are fused into one pass over
  memory with ``torch.compile``, and so are the per-tensor norms at the
  sparse steps that take them (one pass instead of four, and accurate: ATen's
  CPU ``dot`` and ``vector_norm`` accumulate 11M float32 squares with relative
  errors of 1e-4 and 1e-3, the compiled reductions within 1e-6);
* phase space is recorded as projections on a few directions (Hessian
  eigenvectors: ``k`` dot products) and a :class:`BlockSignSketch` of
  ``theta - theta_0`` (one multiply and one reduction), never as full vectors.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn


class FlatParameters:
    """Rebind a model's parameters as views into one contiguous buffer.

    The model keeps its ``nn.Parameter`` objects (an optimizer built before or
    after sees the same tensors); only their storage moves. ``names`` and
    ``sizes`` describe the segments, in ``model.named_parameters()`` order.
    ``channels_last``: 4-d parameters (convolution weights) become views with
    the channels-last layout, which GPU convolutions prefer with
    channels-last images; the flat buffer then holds each such weight in
    ``(out, kh, kw, in)`` order (norms are unaffected).
    """

    def __init__(self, model: nn.Module, channels_last: bool = False):
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        if not params:
            raise ValueError("model has no trainable parameters")
        dtype, device = params[0][1].dtype, params[0][1].device
        self.names = [n for n, _ in params]
        self.sizes = [p.numel() for _, p in params]
        self.shapes = [p.shape for _, p in params]
        self.params = [p for _, p in params]
        self.channels_last = bool(channels_last)
        self.flat = torch.empty(sum(self.sizes), dtype=dtype, device=device)
        for view, (_, p) in zip(self.views(self.flat), params):
            view.copy_(p.detach())
            p.data = view
        self.numel = self.flat.numel()

    def views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Views of ``flat`` shaped like each parameter."""
        out, offset = [], 0
        for size, shape in zip(self.sizes, self.shapes):
            seg = flat[offset : offset + size]
            if self.channels_last and len(shape) == 4:
                o, i, kh, kw = shape
                out.append(seg.view(o, kh, kw, i).permute(0, 3, 1, 2))
            else:
                out.append(seg.view(shape))
            offset += size
        return out

    def from_standard_layout(self, vectors: torch.Tensor) -> torch.Tensor:
        """Rows of ``vectors`` (``k x P``, each parameter flattened in its
        default contiguous order, as :func:`torch.nn.utils.parameters_to_vector`
        and the Hessian stage write them) in this buffer's layout."""
        if not self.channels_last:
            return vectors
        out = torch.empty_like(vectors)
        for row_out, row in zip(out, vectors):
            offset = 0
            for dst, size, shape in zip(self.views(row_out), self.sizes, self.shapes):
                dst.copy_(row[offset : offset + size].view(shape))
                offset += size
        return out

    def install_momentum_buffers(self, optimizer) -> torch.Tensor:
        """Give every parameter a momentum buffer that is a view into one flat tensor.

        ``optimizer`` keeps its buffers as ``optimizer.state[p]["momentum_buffer"]``
        (:class:`limiting_dynamics.heavy_ball.HeavyBall` or ``torch.optim.SGD``).
        Existing buffers are copied in; missing ones start at zero, which is
        bit-identical to PyTorch's first step (``0 * beta + g == g``).
        """
        flat_v = torch.zeros_like(self.flat)
        for view, p in zip(self.views(flat_v), self.params):
            state = optimizer.state[p]
            old = state.get("momentum_buffer")
            if old is not None:
                view.copy_(old)
            state["momentum_buffer"] = view
        return flat_v


def _step_norms(theta: torch.Tensor, theta0: torch.Tensor, v: torch.Tensor, diff: torch.Tensor) -> torch.Tensor:
    """``[||theta - theta0||^2, ||v||^2, ||theta||^2]`` with plain kernels (diff is scratch)."""
    torch.sub(theta, theta0, out=diff)
    return torch.stack([torch.dot(diff, diff), torch.dot(v, v), torch.dot(theta, theta)])


def _fused_norms(theta: torch.Tensor, theta0: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    d = theta - theta0
    return torch.stack([(d * d).sum(), (v * v).sum(), (theta * theta).sum()])


def _gradient(theta: torch.Tensor, v: torch.Tensor, v_prev: torch.Tensor, coef: tuple[float, float, float]):
    """The minibatch gradient of the step that made ``v`` from ``v_prev``:
    ``v_k = beta v_{k-1} + g_k + wd theta_{k-1}`` and ``theta_{k-1} = theta_k + lr v_k``
    give ``g_k = (1 - lr wd) v_k - beta v_{k-1} - wd theta_k``; ``coef`` is
    ``(1 - lr wd, beta, wd)``."""
    return coef[0] * v - coef[1] * v_prev - coef[2] * theta


def _segment_norms(
    theta: torch.Tensor,
    theta0: torch.Tensor,
    v: torch.Tensor,
    v_prev: torch.Tensor,
    sizes: tuple[int, ...],
    coef: tuple[float, float, float],
    lr: float,
):
    """The three norms of :func:`_fused_norms` and, per parameter segment (rows
    :attr:`StepRecorder.TENSOR_ROWS`), ``||theta_j - theta0_j||^2``,
    ``||theta_j||^2``, ``||v_j||^2``, the squared norm of the minibatch gradient
    (:func:`_gradient`), ``<theta_{k-1,j}, g_j>`` and ``<v_{k-1,j}, g_j>``:
    compiled, one pass."""
    g = _gradient(theta, v, v_prev, coef)
    prev = theta + lr * v  # theta_{k-1}, where g was evaluated
    pieces = zip(
        theta.split(sizes), theta0.split(sizes), v.split(sizes), g.split(sizes), prev.split(sizes), v_prev.split(sizes)
    )
    rows = torch.stack(
        [
            torch.stack(
                [((a - b) * (a - b)).sum(), (a * a).sum(), (c * c).sum(), (d * d).sum(), (e * d).sum(), (f * d).sum()]
            )
            for a, b, c, d, e, f in pieces
        ],
        dim=1,
    )
    return torch.stack([rows[0].sum(), rows[2].sum(), rows[1].sum()]), rows


COMPILE_THRESHOLD = 1_000_000


class BlockSignSketch:
    """A fixed random linear map ``R^P -> R^m`` that preserves squared norms in
    expectation: coordinate ``i`` gets a random sign ``s_i``, the coordinates are
    put in a random order, and the signed vector is summed over ``m`` blocks of
    ``ceil(P/m)`` consecutive coordinates of that order. Over the draw of the
    signs ``E ||S x||^2 = ||x||^2`` for every ``x``, so
    ``||S(theta_{t+tau} - theta_t)||^2`` estimates the lag-MSD at every lag from
    ``m`` numbers per step. The estimate of one ``||x||^2`` has relative variance
    ``2 sum_j ||x_j||^4 / ||x||^4`` (``x_j``: the blocks of ``x``), about ``2/m``
    when the blocks carry similar norm. The random order is what makes them do
    so: a network's displacement concentrates in a few parameter tensors, and
    blocks of the parameters in their own order would put it in a few blocks.
    Cost per call: one gather, one multiply and one reduction over ``P``
    (a gather, not a scatter-add, so the result is the same on every run, GPU
    included).
    """

    def __init__(self, numel: int, dim: int, seed: int, device, dtype=torch.float32):
        if dim < 1 or dim > numel:
            raise ValueError(f"sketch dimension {dim} must be between 1 and the {numel} parameters")
        gen = torch.Generator().manual_seed(int(seed))
        self.numel, self.dim = numel, dim
        self.block = -(-numel // dim)
        signs = torch.randint(0, 2, (numel,), generator=gen).to(dtype) * 2 - 1
        order = torch.randperm(numel, generator=gen)
        self.order = order.to(device)
        self.signs = signs[order].to(device)  # the sign of each coordinate, in the random order
        self.scratch = torch.zeros(dim * self.block, dtype=dtype, device=device)

    def __call__(self, x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        head = self.scratch[: self.numel]
        torch.index_select(x, 0, self.order, out=head)
        head.mul_(self.signs)
        return torch.sum(self.scratch.view(self.dim, self.block), dim=1, out=out)


def tensor_record_steps(steps: int, every: int) -> list[int]:
    """Steps (1-based) at which per-tensor norms are recorded: 1..every, then every ``every``-th, and the last."""
    return [k for k in range(1, steps + 1) if k <= every or k % every == 0 or k == steps]


@dataclass(frozen=True, eq=False)
class RecordingPlan:
    """What a limiting run records beyond the per-step norms, as :class:`StepRecorder`
    takes it: per-tensor rows at the steps :func:`tensor_record_steps` gives for
    ``tensor_every``; the phase space (``directions``, ``k x P`` in the model's
    parameter order, and a sketch of ``sketch_dim`` numbers seeded by
    ``sketch_seed``; neither by default); and whether the norms are fused with
    ``torch.compile`` (``compile``)."""

    tensor_every: int
    compile: str
    directions: torch.Tensor | None = None
    sketch_dim: int = 0
    sketch_seed: int = 0

    def recorder_settings(self) -> dict:
        """The plan as :class:`StepRecorder`'s keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class StepRecorder:
    """Per-step norms into a preallocated device tensor.

    Columns of :attr:`scalars` (every step): ``train_loss``,
    ``sq_dist_from_start``, ``sq_velocity``, ``sq_param_norm``; ``sq_step`` is
    derived as ``lr^2 sq_velocity``. :attr:`by_tensor` holds, for every
    parameter tensor at the steps :attr:`tensor_steps` (see
    :func:`tensor_record_steps`), the rows :attr:`TENSOR_ROWS`: the squared
    distance from the start and the squared norm (for the radial/angular split,
    the rotation angles and the bootstrap over tensors), the squared norm of
    the momentum buffer (the step per tensor) and of the minibatch gradient of
    that step, read off the momentum buffers as
    ``g_k = (1 - lr wd) v_k - beta v_{k-1} - wd theta_k`` (``gradient_coefficients``
    gives ``lr, beta, wd``; the buffer of the step before is kept only before
    the steps that take these), so the gradient noise is measured along the
    run at no extra forward or backward pass; and two inner products of that
    gradient: with the weights it was taken at, ``<theta_{k-1}, g_k>`` (zero for
    a scale-invariant tensor: how scale invariance is measured rather than
    declared), and with the momentum buffer before the step,
    ``<v_{k-1}, g_k>`` (the momentum-gradient correlation that separates the
    in-run noise formula from an identity).

    The three per-step norms cost one pass over ``theta``, ``theta0`` and ``v``
    when fused, and so do they together with the per-tensor norms at the
    steps that take those. ``compile``: ``"auto"`` fuses them with ``torch.compile`` for
    models of at least 1M parameters (where memory traffic dominates; for small
    models launch overhead dominates and plain kernels are faster), ``"always"``,
    or ``"never"``. A compile failure falls back to plain kernels with a warning.

    Phase space (optional, kept by a :class:`PhaseSpaceRecorder`): ``directions``
    (``k x P``, e.g. Hessian eigenvectors at theta_0) give :attr:`mode_position` ``= U (theta_k - theta_0)`` and
    :attr:`mode_velocity` ``= U v_k`` every step; ``sketch_dim`` > 0 records a
    :class:`BlockSignSketch` of ``theta_k - theta_0`` every step. Either uses the
    plain-kernel path, which materialises ``theta_k - theta_0`` anyway. With
    directions, :attr:`mode_start` holds ``U theta_0`` and ``U v_0``, from
    which every step's minibatch gradient along each direction follows (the
    same identity as above).
    """

    COLUMNS = ("train_loss", "sq_dist_from_start", "sq_velocity", "sq_param_norm")
    TENSOR_ROWS = (
        "sq_dist_from_start",
        "sq_param_norm",
        "sq_velocity",
        "sq_grad",
        "param_dot_grad",
        "velocity_dot_grad",
    )

    def __init__(
        self,
        flat: FlatParameters,
        flat_v: torch.Tensor,
        steps: int,
        *,
        tensor_every: int,
        compile: str,
        log=print,
        directions: torch.Tensor | None = None,
        sketch_dim: int = 0,
        sketch_seed: int = 0,
        gradient_coefficients=(0.0, 0.0, 0.0),
    ):
        self.flat = flat
        self.flat_v = flat_v
        self.theta0 = flat.flat.detach().clone()
        self.v_prev = flat_v.detach().clone()  # v_{k-1}, kept before the steps that record per-tensor norms
        lr, beta, wd = (float(c) for c in gradient_coefficients)
        self.coef = (1.0 - lr * wd, beta, wd)
        self.lr = lr
        self.diff = torch.empty_like(self.theta0)
        self.diff_views = flat.views(self.diff)
        self.param_views = flat.views(flat.flat)
        self.v_views = flat.views(flat_v)
        self._grad = self._grad_views = None
        dev = self.theta0.device
        self.steps, self.tensor_every = steps, max(1, int(tensor_every))
        self.tensor_steps = tensor_record_steps(steps, self.tensor_every)
        self._tensor_step_set = set(self.tensor_steps)
        self.scalars = torch.full((steps, len(self.COLUMNS)), float("nan"), device=dev)
        self.by_tensor = torch.full(
            (len(self.tensor_steps), len(self.TENSOR_ROWS), len(flat.sizes)), float("nan"), device=dev
        )
        self.count = 0
        self._tensor_count = 0
        self._log = log
        self.phase = PhaseSpaceRecorder(self.theta0, self.v_prev, steps, directions, sketch_dim, sketch_seed)
        use = not self.phase.active and (compile == "always" or (compile == "auto" and flat.numel >= COMPILE_THRESHOLD))
        self._fused = torch.compile(_fused_norms, dynamic=False) if use else None
        self._fused_segments = torch.compile(_segment_norms, dynamic=False) if use else None
        self._sizes = tuple(flat.sizes)

    def reset(self) -> None:
        """Start recording again from the first row (benchmarks reuse one recorder)."""
        self.count = 0
        self._tensor_count = 0

    def _compiled(self, fn, *args):
        """``fn(theta, theta0, v, *args)``, or None after switching to plain kernels if compiling fails."""
        try:
            return fn(self.flat.flat, self.theta0, self.flat_v, *args)
        except Exception as exc:  # no compiler on this machine, unsupported backend, ...
            self._log(f"warning: fused recording unavailable ({type(exc).__name__}); using plain kernels")
            self._fused = self._fused_segments = None
            return None

    def _tensor_norms(self, row: torch.Tensor, bt: torch.Tensor) -> None:
        """The per-step norms into ``row`` and the per-tensor rows (:attr:`TENSOR_ROWS`) into ``bt``."""
        if self._fused_segments is not None:
            out = self._compiled(self._fused_segments, self.v_prev, self._sizes, self.coef, self.lr)
            if out is not None:
                row[1:], bt[:] = out
                return
        row[1:] = _step_norms(self.flat.flat, self.theta0, self.flat_v, self.diff)
        if self._grad is None:  # scratch for the gradient and theta_{k-1}, allocated once
            self._grad, self._prev = torch.empty_like(self.theta0), torch.empty_like(self.theta0)
            self._grad_views, self._prev_views = self.flat.views(self._grad), self.flat.views(self._prev)
            self._v_prev_views = self.flat.views(self.v_prev)
        torch.mul(self.flat_v, self.coef[0], out=self._grad)  # _gradient, in place
        self._grad.sub_(self.v_prev, alpha=self.coef[1]).sub_(self.flat.flat, alpha=self.coef[2])
        for i, views in enumerate((self.diff_views, self.param_views, self.v_views, self._grad_views)):
            norm = torch.stack(torch._foreach_norm(views))
            torch.mul(norm, norm, out=bt[i])
        torch.add(self.flat.flat, self.flat_v, alpha=self.lr, out=self._prev)  # theta_{k-1}, where g was taken
        for i, views in ((4, self._prev_views), (5, self._v_prev_views)):
            torch.stack([torch.vdot(a.reshape(-1), g.reshape(-1)) for a, g in zip(views, self._grad_views)], out=bt[i])

    @torch.no_grad()
    def record(self, loss: torch.Tensor) -> None:
        k = self.count
        step = k + 1
        row = self.scalars[k]
        row[0] = loss.detach()
        t = self._tensor_count
        if t < len(self.tensor_steps) and self.tensor_steps[t] == step:
            self._tensor_norms(row, self.by_tensor[t])
            self._tensor_count += 1
        else:
            norms = None if self._fused is None else self._compiled(self._fused)
            row[1:] = _step_norms(self.flat.flat, self.theta0, self.flat_v, self.diff) if norms is None else norms
        if self.phase.active:  # phase space forces the plain path, so self.diff holds theta - theta0 here
            self.phase.record(k, self.diff, self.flat_v)
        if step + 1 in self._tensor_step_set:  # the next step reads its gradient off v_prev
            self.v_prev.copy_(self.flat_v)
        self.count = step

    def state(self) -> dict:
        """What was recorded so far, and theta_0 (CPU tensors, for a checkpoint)."""
        n, t = self.count, self._tensor_count
        return {
            "theta0": self.theta0.cpu().clone(),
            "v_prev": self.v_prev.cpu().clone(),
            "count": n,
            "tensor_count": t,
            "scalars": self.scalars[:n].cpu().clone(),
            "by_tensor": self.by_tensor[:t].cpu().clone(),
            **self.phase.state(n),
        }

    def load(self, state: dict) -> None:
        """Continue from :meth:`state` of a recorder with the same settings."""
        n, t = int(state["count"]), int(state["tensor_count"])
        if "v_prev" not in state:
            raise ValueError(
                "recorder state does not fit this run: written by an older version (no momentum "
                "buffer of the step before)"
            )
        expect = {
            "theta0": tuple(self.theta0.shape),
            "scalars": (n, *self.scalars.shape[1:]),
            "by_tensor": (t, *self.by_tensor.shape[1:]),
            **self.phase.shapes(n),
        }
        wrong = [
            f"{k} {tuple(state[k].shape)} != {shape}" for k, shape in expect.items() if tuple(state[k].shape) != shape
        ]
        if wrong or n > self.steps or t > len(self.tensor_steps):
            raise ValueError("recorder state does not fit this run: " + "; ".join(wrong or [f"{n} steps"]))
        self.theta0.copy_(state["theta0"])
        self.v_prev.copy_(state["v_prev"])
        self.scalars[:n] = state["scalars"]
        self.by_tensor[:t] = state["by_tensor"]
        self.phase.load(state, n)
        self.count, self._tensor_count = n, t

    def phase_space(self) -> dict:
        """The phase-space record as numpy arrays (empty dict when none was asked for)."""
        return self.phase.arrays(self.count)


class PhaseSpaceRecorder:
    """The phase-space part of a :class:`StepRecorder`: with ``directions`` (``k x P``),
    :attr:`mode_position` ``= U (theta_k - theta_0)`` and :attr:`mode_velocity` ``= U v_k``
    every step and :attr:`mode_start` ``= (U theta_0, U v_0)``; with ``sketch_dim`` > 0, a
    :class:`BlockSignSketch` of ``theta_k - theta_0`` every step. Inactive (records
    nothing) with neither."""

    ROWS = ("mode_position", "mode_velocity", "sketch_values")  # one row per recorded step

    def __init__(
        self,
        theta0: torch.Tensor,
        v0: torch.Tensor,
        steps: int,
        directions: torch.Tensor | None,
        sketch_dim: int,
        sketch_seed: int,
    ):
        dev, numel = theta0.device, theta0.numel()
        if directions is not None and (directions.ndim != 2 or directions.shape[1] != numel):
            raise ValueError(f"directions must be k x {numel}, got {tuple(directions.shape)}")
        self.directions = directions
        k = 0 if directions is None else directions.shape[0]
        self.mode_position = torch.full((steps, k), float("nan"), device=dev)
        self.mode_velocity = torch.full((steps, k), float("nan"), device=dev)
        self.mode_start = (
            None if directions is None else torch.stack([directions @ theta0, directions @ v0], dim=1)
        )  # (k, 2): U theta_0, U v_0
        self.sketch = BlockSignSketch(numel, sketch_dim, sketch_seed, dev, theta0.dtype) if sketch_dim else None
        self.sketch_values = torch.full((steps, sketch_dim), float("nan"), device=dev)
        self.sketch_seed = sketch_seed
        self.active = directions is not None or self.sketch is not None

    def record(self, k: int, diff: torch.Tensor, v: torch.Tensor) -> None:
        """Row ``k`` from ``diff = theta_k - theta_0`` and the momentum buffer ``v``."""
        if self.directions is not None:
            torch.mv(self.directions, diff, out=self.mode_position[k])
            torch.mv(self.directions, v, out=self.mode_velocity[k])
        if self.sketch is not None:
            self.sketch(diff, out=self.sketch_values[k])

    def state(self, n: int) -> dict:
        """The first ``n`` rows and the start (CPU tensors, for a checkpoint)."""
        return {
            "mode_start": None if self.mode_start is None else self.mode_start.cpu().clone(),
            **{row: getattr(self, row)[:n].cpu().clone() for row in self.ROWS},
        }

    def shapes(self, n: int) -> dict:
        """The shapes :meth:`state` has after ``n`` rows (to check a checkpoint against)."""
        return {row: (n, *getattr(self, row).shape[1:]) for row in self.ROWS}

    def load(self, state: dict, n: int) -> None:
        if self.mode_start is not None:
            self.mode_start.copy_(state["mode_start"])
        for row in self.ROWS:
            getattr(self, row)[:n] = state[row]

    def arrays(self, n: int) -> dict:
        """The first ``n`` rows as numpy arrays, with the start and the sketch's seed and block."""
        out = {}
        if self.directions is not None:
            out["mode_position"] = self.mode_position[:n].cpu().double().numpy()
            out["mode_velocity"] = self.mode_velocity[:n].cpu().double().numpy()
            out["mode_offset"] = self.mode_start[:, 0].cpu().double().numpy()
            out["mode_velocity_start"] = self.mode_start[:, 1].cpu().double().numpy()
        if self.sketch is not None:
            out["sketch"] = self.sketch_values[:n].cpu().double().numpy()
            out["sketch_seed"] = int(self.sketch_seed)
            out["sketch_block"] = int(self.sketch.block)
        return out
