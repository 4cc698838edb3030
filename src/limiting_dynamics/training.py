"""Reaching convergence, and the limiting run of one hyperparameter cell.

Conventions are PyTorch's SGD: ``v <- beta v + g + wd theta``,
``theta <- theta - lr v`` (no dampening, no Nesterov). All randomness of a run
comes from explicit generators seeded from the config.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import Checkpointer, CheckpointError, load_weights
from .data.datasets import TensorData
from .data.drawing import BatchDrawing
from .errors import ConfigError, DivergenceError
from .heavy_ball import HeavyBall, kernel_of
from .hyperparameters import Hyperparameters
from .models import scale_invariant_tensors
from .progress import Progress
from .recording import FlatParameters, RecordingPlan, StepRecorder


@dataclass(frozen=True)
class Numerics:
    """How the training forward and backward passes are computed (``compute``
    config): ``channels_last`` memory layout for images and convolution weights
    (faster convolutions on GPUs with tensor cores, and for the small default
    model on a CPU core, ``bench/step_layouts.py``; same arithmetic up to
    rounding order), ``autocast`` (``"none"`` or ``"bfloat16"``: the forward
    and backward passes in bfloat16 under ``torch.autocast``; weights, momentum
    buffers, the update and everything recorded stay float32), and
    ``compile_model`` (``torch.compile`` of the model for training steps).
    Evaluation always runs the plain float32 model."""

    channels_last: bool = False
    autocast: str = "none"
    compile_model: bool = False

    @classmethod
    def from_config(cls, numerics: dict) -> Numerics:
        """From a stage's ``numerics`` settings (``channels_last``, ``autocast``, ``compile_model``)."""
        return cls(bool(numerics["channels_last"]), str(numerics["autocast"]), bool(numerics["compile_model"]))

    def describe(self) -> str:
        """One line for the outputs' attributes."""
        return (
            f"autocast={self.autocast}; channels_last={str(self.channels_last).lower()}; "
            f"compile_model={str(self.compile_model).lower()}"
        )

    def prepare(self, model: nn.Module) -> Callable:
        """The callable that computes training logits (the model, maybe compiled)."""
        return torch.compile(model) if self.compile_model else model

    def loss(self, forward: Callable, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast == "none":
            return F.cross_entropy(forward(x), y)
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            logits = forward(x)
        return F.cross_entropy(logits.float(), y)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; ``cuda`` without a GPU is an error
    that says which torch build looked, what it found and what to do."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        # the oldest NVIDIA driver branch each CUDA major version runs on (NVIDIA's CUDA
        # Compatibility guide, "Minor Version Compatibility": 13.x >= 580, 12.x >= 525, 11.x >= 450)
        min_driver = {"13": "580", "12": "525", "11": "450"}
        cuda = torch.version.cuda
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        try:
            count = torch.cuda.device_count()
        except RuntimeError:  # only reported; the error below is the point
            count = 0
        found = (
            f"torch.cuda.device_count() is {count}, "
            + (f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES is unset")
            + (" (it hides every GPU)" if visible is not None and visible.strip() in ("", "-1") else "")
        )
        if cuda is None:
            build = f"torch {torch.__version__} is a CPU-only build (torch.version.cuda is None)"
            fix = (
                f"for a GPU install torch {torch.__version__.split('+')[0]} with CUDA (the default wheel on "
                "PyPI; docs/install.md), or run on the CPU: set compute.device: cpu (or auto)"
            )
        else:
            driver = min_driver.get(cuda.split(".")[0])
            need = f"the NVIDIA driver is {driver} or newer" if driver else f"the NVIDIA driver supports CUDA {cuda}"
            build = f"torch {torch.__version__} is a CUDA {cuda} build"
            fix = (
                f"run it where a GPU is allocated and {need} (check with nvidia-smi"
                + ("; a GPU counted but not usable usually means an older driver" if count else "")
                + "), or run on the CPU: set compute.device: cpu (or auto), for which torch's CPU-only "
                "build suffices (docs/install.md)"
            )
        raise ConfigError(f"compute.device is 'cuda' but no CUDA GPU is visible to this job; {build}; {found}; {fix}")
    return torch.device(name)


def _rng_states() -> dict:
    """Every global generator (torch CPU and CUDA, numpy, Python); the runs draw
    from their own seeded generators, and these are kept so that nothing else can differ."""
    np_state = np.random.get_state()
    states = {
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python_rng": dict(zip(("version", "internal", "gauss_next"), random.getstate())),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(state: dict) -> None:
    torch.set_rng_state(state["torch_rng"])
    if "numpy_rng" in state:
        s = state["numpy_rng"]
        np.random.set_state(
            ("MT19937", s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached_gaussian"])
        )
    if "python_rng" in state:
        s = state["python_rng"]
        random.setstate((s["version"], tuple(s["internal"]), s["gauss_next"]))
    if "cuda_rng" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """Mean cross-entropy and accuracy in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for s in range(0, x.shape[0], batch_size):
        out = model(x[s : s + batch_size])
        total_loss += F.cross_entropy(out, y[s : s + batch_size], reduction="sum").item()
        correct += (out.argmax(1) == y[s : s + batch_size]).sum().item()
    model.train(was_training)
    n = x.shape[0]
    return total_loss / n, correct / n


def evaluate_all(model: nn.Module, data: TensorData) -> dict[str, float]:
    train_loss, train_acc = evaluate(model, data.x_train, data.y_train)
    test_loss, test_acc = evaluate(model, data.x_test, data.y_test)
    return {"train_loss": train_loss, "train_accuracy": train_acc, "test_loss": test_loss, "test_accuracy": test_acc}


def sgd(model: nn.Module, lr: float, momentum: float, weight_decay: float) -> HeavyBall:
    """PyTorch's SGD update through its fused kernel where the device has one
    (:mod:`.heavy_ball`, bit-identical to ``torch.optim.SGD(fused=True)``).

    The fused kernel does the whole update in one pass over parameters,
    gradients and momentum buffers. Measured on ResNet-18 (11.2M parameters,
    2 CPU cores) its step took 4.5 ms against 19 ms for the multi-tensor
    (``foreach``) path, whose temporaries dominate. The two round differently in
    the last bit of the momentum buffer, so runs are reproducible within one
    kernel only (the one used is recorded in the trajectory's ``optimizer``
    attribute).
    """
    return HeavyBall(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)


def cosine_lr(base: float, step: int, total: int) -> float:
    """The convergence run's learning rate after ``step`` of ``total`` steps (cosine to zero)."""
    return base * (0.5 * (1 + math.cos(math.pi * step / total)))


def pretrain(
    model: nn.Module,
    data: TensorData,
    cfg: dict,
    device: torch.device,
    checkpointer: Checkpointer | None = None,
    log: Callable[[str], None] = print,
    *,
    numerics: Numerics,
    progress_every: float = 30.0,
) -> dict[str, list[float]]:
    """Train from scratch with SGD + momentum and a cosine schedule.

    ``cfg`` is the ``converge`` config section (``epochs``, ``lr``,
    ``batch_size``, ``momentum``, ``weight_decay``, ``seed`` and the three keys
    of :class:`.data.drawing.BatchDrawing`).
    Returns per-epoch train/test loss and accuracy and the learning rate.
    ``checkpointer`` (per epoch): resume from its newest checkpoint, write new
    ones on its schedule and on a signal. Progress (steps done, rate, time
    left) goes to ``log`` at most every ``progress_every`` seconds.
    """
    torch.manual_seed(int(cfg["seed"]))
    model.to(device).train()
    if numerics.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = numerics.prepare(model)
    opt = sgd(model, cfg["lr"], cfg["momentum"], cfg["weight_decay"])
    batches = data.train_batches(int(cfg["batch_size"]), BatchDrawing.from_settings(cfg), int(cfg["seed"]))
    epochs = int(cfg["epochs"])
    total = epochs * batches.per_epoch
    history: dict[str, list[float]] = {
        k: [] for k in ("lr", "train_loss", "train_accuracy", "test_loss", "test_accuracy")
    }
    first = 0
    saved = checkpointer.resume() if checkpointer is not None else None
    if saved is not None:
        load_weights(model, saved["model"], str(checkpointer.store.path))
        opt.load_state_dict(saved["optimizer"])
        batches.load_state_dict(saved, str(checkpointer.store.path))
        _set_rng_states(saved)
        history, first = saved["history"], int(saved["epoch"])
        log(f"resuming after epoch {first} from {checkpointer.store.path}")

    def state() -> dict:
        return {
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(),
            **batches.state_dict(),
            **_rng_states(),
            "history": history,
            "epoch": epoch + 1,
        }

    per_epoch = batches.per_epoch
    progress = Progress("convergence training", total, "steps", log, progress_every, first * per_epoch)
    for epoch in range(first, epochs):
        history["lr"].append(cosine_lr(cfg["lr"], epoch * per_epoch, total))
        for i in range(per_epoch):
            opt.lr = cosine_lr(cfg["lr"], epoch * per_epoch + i, total)
            loss = numerics.loss(forward, *batches.next())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            progress.update(epoch * per_epoch + i + 1)
        metrics = evaluate_all(model, data)
        if not math.isfinite(metrics["train_loss"]):
            raise DivergenceError(f"pretraining diverged in epoch {epoch + 1}: train loss {metrics['train_loss']}")
        for k, v in metrics.items():
            history[k].append(v)
        log(
            f"epoch {epoch + 1}/{epochs} lr {history['lr'][-1]:.4g} "
            + " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
        )
        if checkpointer is not None and epoch + 1 < epochs:
            checkpointer(epoch + 1, "epochs", state)
    progress.end(total)
    return history


def _check_finite(rec: StepRecorder, start: int, cell: str, offset: int = 0) -> None:
    """Raise :class:`DivergenceError` naming the first non-finite recorded step."""
    block = rec.scalars[start : rec.count]
    ok = torch.isfinite(block).all(dim=1)
    if not bool(ok.all()):
        bad = int(torch.nonzero(~ok)[0, 0]) + start
        values = dict(zip(rec.COLUMNS, rec.scalars[bad].tolist()))
        raise DivergenceError(
            f"cell {cell} diverged at step {bad + 1 + offset}: " + ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        )


class _Run:
    """The SGD state of one cell: model, optimizer with flat momentum buffers
    and batch source (:mod:`.batches`). :meth:`state` / :meth:`load`
    round-trip everything the next step depends on, so a run split at any step
    continues bit-identically."""

    def __init__(
        self,
        model: nn.Module,
        data: TensorData,
        hp: Hyperparameters,
        drawing: BatchDrawing,
        device: torch.device,
        numerics: Numerics,
    ):
        torch.manual_seed(hp.seed)
        self.model, self.hp, self.device = model.to(device).train(), hp, device
        self.drawing, self.numerics = drawing, numerics
        self.flat = FlatParameters(model, channels_last=numerics.channels_last)
        self.forward = numerics.prepare(model)
        self.opt = sgd(model, hp.lr, hp.momentum, hp.weight_decay)
        self.flat_v = self.flat.install_momentum_buffers(self.opt)
        self.batches = data.train_batches(hp.batch_size, drawing, hp.seed)
        self.step_count = 0

    def step(self) -> torch.Tensor:
        loss = self.numerics.loss(self.forward, *self.batches.next())
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        self.opt.step()
        self.step_count += 1
        return loss

    def state(self) -> dict:
        """A checkpoint dict (tensors on the CPU; loadable with ``weights_only=True``)."""
        return {
            "model": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            "momentum_buffer": self.flat_v.detach().cpu().clone(),
            **self.batches.state_dict(),
            **_rng_states(),
            "step": self.step_count,
            "hyperparameters": self.hp.as_dict(),
            **self.drawing.as_dict(),
            "optimizer": self.opt.name,
            "channels_last": self.flat.channels_last,
        }

    def load(self, state: dict, source: str = "checkpoint") -> None:
        """Continue from :meth:`state` of a run with the same hyperparameters."""
        for key in ("momentum_buffer", "torch_rng", "hyperparameters"):
            if key not in state:
                raise CheckpointError(f"{source} is not a burn-in checkpoint (no {key!r})")
        drawn = {key: state.get(key) for key in self.drawing.as_dict()}
        if state["hyperparameters"] != self.hp.as_dict() or drawn != self.drawing.as_dict():
            raise CheckpointError(
                f"{source} was written with hyperparameters {state['hyperparameters']} and batches "
                f"{drawn}; this run has {self.hp.as_dict()} and {self.drawing.as_dict()}"
            )
        if kernel_of(state.get("optimizer")) != self.opt.kernel:
            raise CheckpointError(
                f"{source} was written by {state.get('optimizer')}, this run uses "
                f"{self.opt.name}; they round differently (not bit-identical)"
            )
        if bool(state.get("channels_last", False)) != self.flat.channels_last:
            raise CheckpointError(
                f"{source} keeps its momentum buffer in the "
                f"{'channels-last' if state.get('channels_last') else 'default'} layout; this run "
                f"has compute.channels_last {str(self.flat.channels_last).lower()}"
            )
        load_weights(self.model, state["model"], source)
        mom = state["momentum_buffer"]
        if mom.shape != self.flat_v.shape:
            raise CheckpointError(f"momentum buffer in {source} has {mom.numel()} entries, model {self.flat_v.numel()}")
        with torch.no_grad():
            self.flat_v.copy_(mom)
        self.batches.load_state_dict(state, source)
        _set_rng_states(state)
        self.step_count = int(state["step"])

    def burn(
        self,
        steps: int,
        cell: str,
        check_every: int,
        checkpointer: Checkpointer | None = None,
        saved: dict | None = None,
        log: Callable[[str], None] | None = None,
        progress_every: float = 30.0,
    ) -> None:
        """``steps`` unrecorded steps; with ``checkpointer``, resumable: ``saved``
        is a checkpoint it wrote (the run continues after its step). With
        ``log``, progress lines at most every ``progress_every`` seconds."""
        losses = torch.empty(steps, device=self.device)
        done = 0
        if saved is not None:
            done = int(saved["burn_step"])
            losses[:done] = saved["burn_losses"].to(self.device)
        progress = Progress("burn-in", steps, "steps", log, progress_every, done) if log else None
        for k in range(done, steps):
            losses[k] = self.step().detach()
            if progress is not None:
                progress.update(k + 1)
            if (k + 1) % check_every == 0 or k + 1 == steps:
                self._check_burn(losses, k + 1, cell)
            if checkpointer is not None and k + 1 < steps:
                checkpointer(k + 1, "burn-in steps", lambda: self._burn_state(losses, k + 1, cell))  # noqa: B023
        if progress is not None:
            progress.end(steps)
        self.burn_loss = float(losses[-500:].mean()) if steps else float("nan")

    def _check_burn(self, losses: torch.Tensor, done: int, cell: str) -> None:
        bad = ~torch.isfinite(losses[:done])
        if bool(bad.any()) or not bool(torch.isfinite(self.flat.flat).all()):
            first = int(torch.nonzero(bad)[0, 0]) + 1 if bool(bad.any()) else done
            raise DivergenceError(f"cell {cell} diverged during burn-in at burn-in step {first}")

    def _burn_state(self, losses: torch.Tensor, done: int, cell: str) -> dict:
        self._check_burn(losses, done, cell)  # never checkpoint a diverged state
        return {"run": self.state(), "burn_step": done, "burn_losses": losses[:done].cpu().clone()}


def burn_in(
    model: nn.Module,
    data: TensorData,
    hp: Hyperparameters,
    *,
    steps: int,
    drawing: BatchDrawing,
    device: torch.device,
    cell: str = "cell",
    check_every: int = 500,
    checkpointer: Checkpointer | None = None,
    log: Callable[[str], None] = print,
    numerics: Numerics,
    progress_every: float = 30.0,
) -> dict:
    """Run ``steps`` unrecorded SGD steps at the cell's hyperparameters from the
    model's weights and return the full state after them (the cell's theta_0):
    a checkpoint dict that :func:`limiting_run` continues from bit-identically
    (``start=``). The caller's model is moved to ``device`` and trained in place.
    ``checkpointer``: resume from its newest checkpoint, write new ones on its
    schedule and on a signal; cleared when the burn-in completes. Progress
    (steps done, rate, time left) goes to ``log`` at most every
    ``progress_every`` seconds."""
    run = _Run(model, data, hp, drawing, device, numerics)
    saved = checkpointer.resume() if checkpointer is not None else None
    if saved is not None:
        run.load(saved["run"], source=str(checkpointer.store.path))
        log(f"resuming burn-in after step {saved['burn_step']} from {checkpointer.store.path}")
    run.burn(steps, cell, check_every, checkpointer, saved, log, progress_every)
    log(f"burn-in: {steps} steps, last-500 mean loss {run.burn_loss:.4g}")
    return {**run.state(), "burn_in_steps": int(steps), "burn_in_loss": run.burn_loss}


def limiting_run(
    model: nn.Module,
    data: TensorData,
    hp: Hyperparameters,
    *,
    steps: int,
    eval_every: int,
    drawing: BatchDrawing,
    device: torch.device,
    burn_in: int = 0,
    start: dict | None = None,
    recording: RecordingPlan,
    cell: str = "cell",
    check_every: int = 500,
    checkpointer: Checkpointer | None = None,
    log: Callable[[str], None] = print,
    numerics: Numerics,
    snapshot_steps=(),
    progress_every: float = 30.0,
) -> dict:
    """Continue SGD at constant ``hp``, recording every step.

    The run starts from ``start`` (a :func:`burn_in` state: weights, momentum
    buffer, sampler and generators) or, without it, from the model's weights
    with a zero momentum buffer after ``burn_in`` unrecorded steps; either way
    theta_0 is the state where recording starts. ``drawing`` says how the
    minibatches are drawn (sampling, augmentation, label noise:
    :mod:`.data.drawing`). Step ``k`` (1-based) of the
    record holds the minibatch loss of update ``k`` (evaluated at
    theta_{k-1}) and the norms after it; per-tensor norms are kept at the
    steps ``tensor_step``; ``recording`` (a :class:`.recording.RecordingPlan`)
    says at which steps, and which phase space is recorded (see
    :class:`.recording.StepRecorder`). Train/test metrics
    in eval mode are taken at step 0, every ``eval_every`` steps and at the
    last step.

    ``checkpointer``: the run resumes from its newest checkpoint (state of the
    SGD run, every generator, and the record so far) and writes new ones on its
    schedule and on a signal, so that a run stopped at any step and resumed
    gives the same record, bit for bit, as one that was never stopped.

    ``snapshot_steps``: steps (1..``steps``) after which the weights (the
    model's state dict) are kept, returned under ``"snapshots"`` as
    ``{step: state dict}`` (where the gradient-noise stage measures the noise
    along the run, and the eigenvector-drift stage takes the Hessian).

    Progress lines (steps done, rate, time left) go to ``log`` at most every
    ``progress_every`` seconds, for the burn-in too.

    Returns a dict of numpy arrays and metadata (see :mod:`.trajectory`).
    """
    snapshot_steps = sorted({int(k) for k in snapshot_steps})
    if snapshot_steps and not 1 <= snapshot_steps[0] <= snapshot_steps[-1] <= steps:
        raise ValueError(f"snapshot steps {snapshot_steps} must lie in 1..{steps}")
    if start is not None and burn_in:
        raise ValueError("give either start (a burn-in state) or burn_in steps, not both")
    run = _Run(model, data, hp, drawing, device, numerics)
    saved = checkpointer.resume() if checkpointer is not None else None
    if saved is not None:
        run.load(saved["run"], source=str(checkpointer.store.path))
        burn_in = int(saved["burn_in"])
    else:
        burn_in = _reach_theta0(run, start, burn_in, cell, check_every, log, progress_every)
    flat, flat_v = run.flat, run.flat_v
    plan = recording.recorder_settings()
    if plan["directions"] is not None:
        plan["directions"] = flat.from_standard_layout(
            plan["directions"].to(device=flat.flat.device, dtype=flat.flat.dtype)
        )
    rec = StepRecorder(
        flat, flat_v, steps, **plan, log=log, gradient_coefficients=(hp.lr, hp.momentum, hp.weight_decay)
    )
    if saved is not None:
        rec.load(saved["recorder"])
        sq_velocity_start, eval_steps, evals = saved["sq_velocity_start"], saved["eval_steps"], saved["evals"]
        snapshots = dict(saved.get("snapshots", {}))
        log(f"resuming after step {rec.count} from {checkpointer.store.path}")
    else:
        sq_velocity_start = float(torch.dot(flat_v, flat_v))
        eval_steps, evals = [0], [evaluate_all(model, data)]
        snapshots = {}
    checked = rec.count

    def state() -> dict:
        _check_finite(rec, checked, cell)  # never checkpoint a diverged state
        return {
            "run": run.state(),
            "recorder": rec.state(),
            "burn_in": burn_in,
            "sq_velocity_start": sq_velocity_start,
            "eval_steps": list(eval_steps),
            "evals": list(evals),
            "snapshots": dict(snapshots),
        }

    progress = Progress("limiting run", steps, "steps", log, progress_every, rec.count)
    for k in range(rec.count + 1, steps + 1):
        rec.record(run.step())
        progress.update(k)
        if k in snapshot_steps:
            snapshots[k] = {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}
        if k % check_every == 0 or k == steps:
            _check_finite(rec, checked, cell)
            checked = rec.count
        if k % eval_every == 0 or k == steps:
            eval_steps.append(k)
            evals.append(evaluate_all(model, data))
            log(f"step {k}/{steps} " + " ".join(f"{n} {v:.4f}" for n, v in evals[-1].items()))
        if checkpointer is not None and k < steps:
            checkpointer(k, "steps", state)
    progress.end(steps)
    out = _record(rec, run, model, hp, eval_steps, evals, sq_velocity_start, burn_in, numerics)
    if snapshot_steps:
        out["snapshots"] = snapshots
    return out


def _reach_theta0(run: _Run, start: dict | None, burn_in: int, cell: str, check_every: int, log, progress_every) -> int:
    """Bring a fresh run to theta_0: load the burn-in state ``start`` or take ``burn_in``
    unrecorded steps (none: theta_0 is the model's weights). Returns the burn-in steps."""
    if start is not None:
        run.load(start, source=f"burn-in state of cell {cell}")
        return int(start.get("burn_in_steps", start["step"]))
    if burn_in:
        run.burn(burn_in, cell, check_every, log=log, progress_every=progress_every)
        log(f"burn-in: {burn_in} steps, last-500 mean loss {run.burn_loss:.4g}")
    return burn_in


def _record(rec: StepRecorder, run: _Run, model, hp, eval_steps, evals, sq_velocity_start, burn_in, numerics) -> dict:
    """The finished run's record as numpy arrays and metadata (see :mod:`.trajectory`)."""
    flat = run.flat
    steps = rec.scalars.shape[0]
    scalars = rec.scalars.cpu().double().numpy()
    by_tensor = rec.by_tensor.cpu().double().numpy()
    start_norms = torch.stack(torch._foreach_norm(flat.views(rec.theta0))).double().cpu().numpy() ** 2
    out = {
        "step": np.arange(1, steps + 1),
        "train_loss": scalars[:, 0],
        "sq_dist_from_start": scalars[:, 1],
        "sq_velocity": scalars[:, 2],
        "sq_step": hp.lr**2 * scalars[:, 2],
        "sq_param_norm": scalars[:, 3],
        "tensor_step": np.asarray(rec.tensor_steps),
        **{f"{row}_by_tensor": by_tensor[:, i, :] for i, row in enumerate(rec.TENSOR_ROWS)},
        "sq_param_norm_start_by_tensor": start_norms,
        "tensor_name": list(flat.names),
        "tensor_scale_invariant": np.isin(flat.names, scale_invariant_tensors(model)).astype(np.int8),
        "tensor_size": np.asarray(flat.sizes),
        "eval_step": np.asarray(eval_steps),
        **{f"eval_{k}": np.asarray([e[k] for e in evals]) for k in evals[0]},
        "sq_param_norm_start": float(start_norms.sum()),
        "sq_velocity_start": sq_velocity_start,
        "burn_in_steps": burn_in,
        "n_params": flat.numel,
        "optimizer": run.opt.name,
        "precision": str(flat.flat.dtype).removeprefix("torch."),
        "numerics": numerics.describe(),
    }
    out.update(rec.phase_space())
    return out
