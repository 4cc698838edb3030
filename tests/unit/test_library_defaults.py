"""The config is the one place for every setting it holds: the library functions
that take such a setting have no default for it, so a notebook and the workflow
cannot silently use two different values (e.g. a Lanczos ``max_iter`` of 200 in
the code against 120 in the config)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from limiting_dynamics import (
    diffusion,
    hessian,
    local_displacement,
    noise,
    spectra,
    stationarity,
    training,
)
from limiting_dynamics.data import datasets
from limiting_dynamics.models import SmallResNet
from limiting_dynamics.plots import network_vs_theory, runs, style, theory_engine
from limiting_dynamics.recording import RecordingPlan

DEFAULT = yaml.safe_load((Path(__file__).parents[2] / "config" / "config.yaml").read_text())

# config key -> the library parameters that take its value
SETTINGS = [
    ("hessian.tol", hessian.lanczos, "tol"),
    ("hessian.max_iter", hessian.lanczos, "max_iter"),
    ("hessian.seed", hessian.lanczos, "seed"),
    ("hessian.seed", hessian.slq, "seed"),
    ("hessian.seed", hessian.hutchinson_trace, "seed"),
    ("hessian.slq_vectors", hessian.slq, "n_vectors"),
    ("hessian.slq_iterations", hessian.slq, "iterations"),
    ("hessian.hutchinson_samples", hessian.hutchinson_trace, "n_samples"),
    ("hessian.precision", hessian.HessianOperator, "dtype"),
    ("hessian.precision", hessian.lanczos, "dtype"),
    ("hessian.bn_mode", hessian.HessianOperator, "bn_mode"),
    ("hessian.reuse_graph", hessian.HessianOperator, "reuse_graph"),
    ("hessian.batch_size", hessian.HessianOperator, "stack_examples"),
    ("compute.device", hessian.HessianOperator, "device"),
    ("compute.device", hessian.lanczos, "device"),
    ("compute.device", datasets.load_prepared, "device"),
    ("limiting.label_noise", hessian.HessianOperator, "loss"),
    ("limiting.label_noise", hessian.analyze, "label_smoothing"),
    ("model.blocks", SmallResNet, "blocks"),
    ("model.width", SmallResNet, "width"),
    ("model.stem", SmallResNet, "stem"),
    ("analysis.fit_window", diffusion.fit_exponent, "window"),
    ("analysis.fit_points", diffusion.fit_exponent, "n_points"),
    ("analysis.bootstrap_samples", diffusion.fit_exponent, "n_boot"),
    ("analysis.stationary_window", diffusion.stationary_level, "window"),
    ("analysis.stationary_batches", diffusion.stationary_level, "n_batches"),
    ("analysis.stationary_batches", stationarity.drift, "batches"),
    ("analysis.stationary_window", local_displacement.predictions, "window"),
    ("analysis.stationary_window", local_displacement.scale_invariance, "window"),
    ("analysis.stationary_window", local_displacement.grad_sq_norm, "window"),
    ("analysis.stationarity_window", local_displacement.stationarity_ratio, "window"),
    ("analysis.spectrum_segment", spectra.fit_oscillator, "nperseg"),
    ("noise.bn_mode", noise.minibatch_noise, "bn_mode"),
    ("hessian.bn_mode", noise.bulk_noise_curvature, "bn_mode"),
    ("noise.chunk", noise.per_sample_noise, "chunk"),
    ("limiting.tensor_every", RecordingPlan, "tensor_every"),
    ("compute.compile_recording", RecordingPlan, "compile"),
    ("compute.autocast", training.limiting_run, "numerics"),
    ("compute.autocast", training.burn_in, "numerics"),
    ("compute.autocast", training.pretrain, "numerics"),
    ("plots.dpi", runs.msd, "dpi"),
    ("plots.dpi", network_vs_theory.theory_modes, "dpi"),
    ("plots.dpi", theory_engine.phase_space, "dpi"),
    ("plots.smoothing", runs.local_displacement, "smoothing"),
    ("plots.context", style.setup, "context"),
]


def _dig(cfg: dict, dotted: str):
    for key in dotted.split("."):
        cfg = cfg[key]
    return cfg


@pytest.mark.parametrize(
    "key, function, parameter", SETTINGS, ids=[f"{k}->{f.__qualname__}.{p}" for k, f, p in SETTINGS]
)
def test_a_setting_the_config_holds_has_no_default_in_the_library(key, function, parameter):
    _dig(DEFAULT, key)  # the table names real config keys
    param = inspect.signature(function).parameters[parameter]
    assert param.default is inspect.Parameter.empty, (
        f"{function.__qualname__}({parameter}=...) has a default ({param.default!r}) for the config's {key}"
    )
