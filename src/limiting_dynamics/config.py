"""Config checking and the expansion of hyperparameter cells.

The workflow's config is checked once before any job runs, in three steps: no
number may be NaN or infinite, then the JSON schema (types, ranges, unknown
keys), then facts the schema cannot express (batch size against the
training-set size, local paths that must exist, ordered windows). Every
failure is a :class:`ConfigError` whose one-line message names the key, the
value and what is allowed.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ConfigError
from .hyperparameters import NAMES as HYPERPARAMETERS
from .hyperparameters import Hyperparameters


def _key(path) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error) -> str:
    """A short human sentence for one jsonschema error."""
    v, s = error.validator, error.validator_value
    allowed = {
        "minimum": f"must be >= {s}",
        "maximum": f"must be <= {s}",
        "exclusiveMinimum": f"must be > {s}",
        "exclusiveMaximum": f"must be < {s}",
        "type": f"must be of type {s}",
        "enum": f"must be one of {s}",
        "minItems": f"must have at least {s} item(s)",
        "maxItems": f"must have at most {s} item(s)",
        "uniqueItems": "must not repeat a value",
        "minProperties": f"must have at least {s} entr(y/ies)",
    }
    if v == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = sorted(error.schema.get("properties", {}))
        return f"unknown key(s) {extra} (a typo?); allowed keys: {known}"
    if v == "required":
        return f"missing required key: {error.message.split(' is a required')[0]}"
    why = error.schema.get("description") if v in ("minimum", "maximum") else None  # why a bound is what it is
    return f"value {error.instance!r} is not allowed: {allowed.get(v, error.message)}" + (f" ({why})" if why else "")


def non_finite_errors(config, path=()) -> list[str]:
    """Every NaN or infinity in ``config`` (YAML ``.nan``, ``.inf``), one line each: the
    schema's number checks let them through (NaN compares false to every bound)."""
    if isinstance(config, float) and not math.isfinite(config):
        return [f"config key '{_key(path)}': value {config!r} is not allowed: must be a finite number"]
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    return [e for k, v in items for e in non_finite_errors(v, (*path, k))]


def schema_errors(config: dict, schema_path: str | Path) -> list[str]:
    """All schema violations of ``config``, one line each, most specific first."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: (-len(e.path), list(map(str, e.path))))
    return [f"config key '{_key(e.path)}': {_describe(e)}" for e in errors]


def expand_cells(cells_cfg: dict) -> list[Hyperparameters]:
    """The default cell, one-at-a-time sweeps around it, and the grid, without
    repeats, each run as ``replicates`` seeds (its own seed and the next ones).

    Order: the default cell's replicates, then sweeps in the order of
    :data:`HYPERPARAMETERS`, then the grid, every cell followed by its
    replicates. A cell reached twice (e.g. a sweep value equal to the default)
    is kept once.
    """
    default = {k: cells_cfg["default"][k] for k in HYPERPARAMETERS}
    combos = [dict(default)]
    for key in HYPERPARAMETERS:
        for value in cells_cfg["sweeps"].get(key, []):
            combos.append({**default, key: value})
    grid = cells_cfg["grid"]
    if grid:
        keys = [k for k in HYPERPARAMETERS if k in grid]
        for values in itertools.product(*(grid[k] for k in keys)):
            combos.append({**default, **dict(zip(keys, values))})
    seen, cells = set(), []
    for c in combos:
        for r in range(int(cells_cfg["replicates"])):
            hp = Hyperparameters(
                lr=float(c["lr"]),
                batch_size=int(c["batch_size"]),
                momentum=float(c["momentum"]),
                weight_decay=float(c["weight_decay"]),
                seed=int(c["seed"]) + r,
            )
            if hp not in seen:
                seen.add(hp)
                cells.append(hp)
    return cells


def default_cell(cells_cfg: dict, seed: int | None = None) -> Hyperparameters:
    """The default cell, with its own seed or ``seed``."""
    d = cells_cfg["default"]
    return Hyperparameters(
        lr=float(d["lr"]),
        batch_size=int(d["batch_size"]),
        momentum=float(d["momentum"]),
        weight_decay=float(d["weight_decay"]),
        seed=int(d["seed"] if seed is None else seed),
    )


def is_default(hp: Hyperparameters, cells_cfg: dict) -> bool:
    """Whether ``hp`` is the default cell up to its seed (one of its replicates)."""
    return hp == default_cell(cells_cfg, hp.seed)


def quadratic_cells(config: dict) -> list[Hyperparameters]:
    """The quadratic family (``cells.quadratic``): for every seed of the default
    cell's replicates, one cell per learning rate, at the family's momentum and
    weight decay and the default batch size."""
    q = config["cells"].get("quadratic") or {}
    seeds = [default_cell(config["cells"]).seed + r for r in range(int(config["cells"]["replicates"]))]
    bs = int(config["cells"]["default"]["batch_size"])
    return [
        Hyperparameters(
            lr=float(lr),
            batch_size=bs,
            momentum=float(q["momentum"]),
            weight_decay=float(q["weight_decay"]),
            seed=seed,
        )
        for lr in (q["lr"] if q else [])
        for seed in seeds
    ]


def family(hp: Hyperparameters, config: dict) -> str:
    """``"quadratic"`` for a cell of the quadratic family, else ``"spherical"``."""
    return "quadratic" if hp in quadratic_cells(config) else "spherical"


def burn_in_start(hp: Hyperparameters, config: dict) -> Hyperparameters | None:
    """The cell whose theta_0 the burn-in of ``hp`` starts from: the default
    cell of the same seed for a cell of the quadratic family, or when
    ``limiting.burn_in.chained_relaxation_times`` is set and ``hp`` is not a
    default cell itself; else ``None`` (the converged weights). The default
    cell of that seed is run too (it is added to the cells when the config
    does not list it)."""
    if is_default(hp, config["cells"]):
        return None
    if family(hp, config) == "quadratic" or config["limiting"]["burn_in"].get("chained_relaxation_times") is not None:
        return default_cell(config["cells"], hp.seed)
    return None


def all_cells(config: dict) -> list[Hyperparameters]:
    """The configured cells, the default cells their burn-ins start from, and
    the quadratic family."""
    cells = expand_cells(config["cells"])
    cells += [hp for hp in quadratic_cells(config) if hp not in cells]
    extra = []
    for hp in cells:
        start = burn_in_start(hp, config)
        if start is not None and start not in cells and start not in extra:
            extra.append(start)
    return extra + cells


def cell_settings(hp: Hyperparameters, config: dict) -> dict:
    """What differs between the two families, for one cell: recorded ``steps``,
    ``burn_in_steps``, the ``mode_window`` and ``spectrum_segment`` of the
    comparison and the eigenvector-drift ``drift_steps``."""
    if family(hp, config) == "quadratic":
        q = config["cells"]["quadratic"]
        return {k: q[k] for k in ("steps", "burn_in_steps", "mode_window", "spectrum_segment", "drift_steps")}
    chained = burn_in_start(hp, config) is not None
    return {
        "steps": config["limiting"]["steps"],
        "burn_in_steps": burn_in_steps(hp, config["limiting"]["burn_in"], chained=chained),
        "mode_window": config["analysis"]["mode_window"],
        "spectrum_segment": config["analysis"]["spectrum_segment"],
        "drift_steps": config["hessian"]["drift_steps"],
    }


def cell_id(hp: Hyperparameters) -> str:
    """A readable, filesystem-safe name that determines the cell uniquely."""
    return f"lr{hp.lr:.6g}_bs{hp.batch_size}_mom{hp.momentum:.6g}_wd{hp.weight_decay:.6g}_seed{hp.seed}"


def cells_by_id(config: dict) -> dict[str, Hyperparameters]:
    return {cell_id(hp): hp for hp in all_cells(config)}


def burn_in_steps(hp: Hyperparameters, burn_cfg: dict, chained: bool = False) -> int:
    """Burn-in length: ``relaxation_times`` (``chained_relaxation_times`` for a
    burn-in that starts from the default cell's theta_0) x ``(1-beta)/(lr wd)``,
    clipped to [min, max].

    Without weight decay the relaxation time is infinite and ``max_steps`` is used.
    """
    lo, hi = int(burn_cfg["min_steps"]), int(burn_cfg["max_steps"])
    t = hp.relaxation_steps
    if not math.isfinite(t):
        return hi
    times = burn_cfg["chained_relaxation_times"] if chained else burn_cfg["relaxation_times"]
    return int(min(max(math.ceil(times * t), lo), hi))


def noise_snapshot_steps(steps: int, points: int) -> list[int]:
    """The steps of a limiting run of ``steps`` steps, after theta_0, at which
    the gradient noise is measured too: ``points`` evenly spaced points from
    theta_0 (step 0, not listed) to the last step."""
    if points < 2:
        return []
    return sorted({max(1, round(i * steps / (points - 1))) for i in range(1, points)})


def probed(hp: Hyperparameters, config: dict) -> bool:
    """Whether the Hessian stage (where enabled), and so the per-mode
    comparison, runs for the cell: ``hessian.cells`` is ``all``, or the cell is
    a replicate of the default cell or of the quadratic family."""
    return config["hessian"]["cells"] == "all" or is_default(hp, config["cells"]) or family(hp, config) == "quadratic"


# torchvision's ImageNet weights (IMAGENET1K_V1) for the architectures it names; a
# test checks these against torchvision's own weight tables. Nothing downloads
# them: a user fetches the file elsewhere and gives its local path.
TORCHVISION_WEIGHTS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "vgg11": "https://download.pytorch.org/models/vgg11-8a719046.pth",
    "vgg11_bn": "https://download.pytorch.org/models/vgg11_bn-6002323d.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "vgg16_bn": "https://download.pytorch.org/models/vgg16_bn-6c64b313.pth",
}


def weights_suffix(arch: str) -> str:
    """``"; <where the weights come from>"`` to end a message with, or ``""``."""
    hint = weights_hint(arch)
    return f"; {hint}" if hint else ""


def weights_hint(arch: str) -> str:
    """Where torchvision's ImageNet weights for ``arch`` come from ('' for other models)."""
    url = TORCHVISION_WEIGHTS.get(arch)
    if not url:
        return ""
    return (
        f"torchvision's ImageNet weights for {arch} are {url} (fetch the file on a machine with internet and "
        f"give its local path; they fit 1000-class, 3-channel ImageNet data)"
    )


def semantic_errors(config: dict) -> list[str]:
    """Checks the schema cannot express; assumes the schema passed. Each check is
    one function of :data:`SEMANTIC_CHECKS`, run in that order (the first error is
    the one :func:`check_config` raises)."""
    from .data.catalog import expected_train_size

    facts = _Facts(expand_cells(config["cells"]), expected_train_size(config["data"]))
    return [error for check in SEMANTIC_CHECKS for error in check(config, facts)]


@dataclass(frozen=True)
class _Facts:
    """What several checks need and only one should compute: the expanded cells and
    the training-set size (``None`` where it is not known before preparing)."""

    cells: list[Hyperparameters]
    n_train: int | None


def _not_allowed(key: str, value, why: str) -> str:
    """The one wording of a config error: which key, which value, why not."""
    return f"config key '{key}': value {value} is not allowed: {why}"


def _batch_size_errors(config: dict, facts: _Facts) -> list[str]:
    """No batch larger than the training set."""
    n_train = facts.n_train
    if n_train is None:
        return []
    errors = []
    bs = config["converge"]["batch_size"]
    if bs > n_train:
        errors.append(_not_allowed("converge.batch_size", bs, f"must be <= the {n_train} training examples"))
    too_big = [hp for hp in facts.cells if hp.batch_size > n_train]
    if too_big:
        errors.append(
            f"config key 'cells' (batch_size): value {too_big[0].batch_size} is not allowed: "
            f"must be <= the {n_train} training examples of {config['data']['name']}"
        )
    return errors


def _local_file_errors(config: dict, facts: _Facts) -> list[str]:
    """A converged checkpoint and a local data set must exist where the config says."""
    from .data.catalog import LOCAL_DATASETS

    errors = []
    ckpt = config["converge"].get("checkpoint")
    if ckpt and not Path(ckpt).is_file():
        errors.append(
            _not_allowed(
                "converge.checkpoint",
                repr(ckpt),
                "no such file (give the local path of a converged checkpoint, or null to train)"
                + weights_suffix(config["model"]["arch"]),
            )
        )
    name, local = config["data"]["name"], config["data"].get("path")
    if name in LOCAL_DATASETS and not (local and Path(local).expanduser().is_dir()):
        errors.append(
            _not_allowed(
                "data.path",
                repr(local),
                f"{name} is read from a local directory (nothing is downloaded); {LOCAL_DATASETS[name]}",
            )
        )
    return errors


def _order_errors(config: dict, facts: _Facts) -> list[str]:
    """Windows with start < end; burn-in bounds in order."""
    errors = []
    for key in ("fit_window", "stationary_window", "mode_window"):
        lo, hi = config["analysis"][key]
        if not lo < hi:
            errors.append(
                _not_allowed(
                    f"analysis.{key}", [lo, hi], "must be [start, end] with start < end (fractions of the run)"
                )
            )
    # the limiting run keeps its weights at the drift steps, so they lie within its steps
    families = [("hessian.drift_steps", config["hessian"]["drift_steps"], config["limiting"]["steps"])]
    if config["cells"].get("quadratic"):
        q = config["cells"]["quadratic"]
        families.append(("cells.quadratic.drift_steps", q["drift_steps"], q["steps"]))
    for key, drift, steps in families:
        if drift and max(drift) > steps:
            errors.append(_not_allowed(key, drift, f"every step must be <= the {steps} steps of the family's runs"))
    burn = config["limiting"]["burn_in"]
    if burn["min_steps"] > burn["max_steps"]:
        errors.append(
            _not_allowed(
                "limiting.burn_in.min_steps",
                burn["min_steps"],
                f"must be <= limiting.burn_in.max_steps ({burn['max_steps']})",
            )
        )
    return errors


def _cell_errors(config: dict, facts: _Facts) -> list[str]:
    """Every cell gets its own name; no list repeats a value."""
    errors = []
    by_name: dict[str, Hyperparameters] = {}
    for hp in facts.cells:
        other = by_name.setdefault(cell_id(hp), hp)
        if other != hp:
            errors.append(
                f"config key 'cells': cells {other.as_dict()} and {hp.as_dict()} get the same name "
                f"{cell_id(hp)!r} (values must differ within 6 significant digits)"
            )
            break
    for part in ("sweeps", "grid"):
        for key, values in config["cells"][part].items():
            if len(set(values)) != len(values):
                errors.append(_not_allowed(f"cells.{part}.{key}", values, "repeats a value"))
    return errors


def _analysis_errors(config: dict, facts: _Facts) -> list[str]:
    """The Hessian, landscape and phase-space settings fit each other and the data."""
    errors = []
    hess = config["hessian"]
    held, held_text = _held_examples(config, facts.n_train)
    if held is not None and hess["n_samples"] != "all" and hess["n_samples"] > held:
        errors.append(_not_allowed("hessian.n_samples", hess["n_samples"], f"must be <= {held_text}"))
    if hess["slq_iterations"] > hess["max_iter"]:
        errors.append(
            _not_allowed(
                "hessian.slq_iterations",
                hess["slq_iterations"],
                f"must be <= hessian.max_iter ({hess['max_iter']}): the Lanczos run is the first SLQ probe",
            )
        )
    phase = config["limiting"]["phase_space"]
    if hess["enabled"] and phase["modes"] > hess["top_k"]:
        errors.append(
            _not_allowed(
                "limiting.phase_space.modes",
                phase["modes"],
                f"must be <= hessian.top_k ({hess['top_k']}), the eigenvectors computed",
            )
        )
    land = config["landscape"]
    if land["enabled"] and hess["enabled"]:
        a, b = land["modes"]
        if a == b:
            errors.append(_not_allowed("landscape.modes", land["modes"], "needs two different eigenvectors"))
        if max(a, b) > phase["modes"]:
            errors.append(
                _not_allowed(
                    "landscape.modes",
                    land["modes"],
                    f"must be <= limiting.phase_space.modes ({phase['modes']}), the recorded projections",
                )
            )
        if held is not None and land["n_samples"] > held:
            errors.append(_not_allowed("landscape.n_samples", land["n_samples"], f"must be <= {held_text}"))
    return errors


def _linear_regression_errors(config: dict, facts: _Facts) -> list[str]:
    """The lags fit in the run after the anchor; no more kept chains than chains."""
    errors = []
    lin = config["linear_regression"]
    anchor = int(lin["lag_anchor"] * lin["steps"])
    if anchor + max(lin["lags"]) > lin["steps"]:
        errors.append(
            _not_allowed(
                "linear_regression.lags",
                lin["lags"],
                f"lag_anchor * steps + max(lags) = {anchor + max(lin['lags'])} must be <= steps ({lin['steps']})",
            )
        )
    if lin["kept_chains"] > lin["chains"]:
        errors.append(
            _not_allowed("linear_regression.kept_chains", lin["kept_chains"], f"must be <= chains ({lin['chains']})")
        )
    return errors


def _held_examples(config: dict, n_train: int | None) -> tuple[int | None, str]:
    """How many training examples the Hessian and landscape stages can draw
    from (``None``: not known before preparing), and how to say it."""
    d = config["data"]
    if d["loader"] == "stream":
        subset = d.get("stream_subset")
        return subset, f"data.stream_subset ({subset}), the training images held in memory"
    return n_train, f"the {n_train} training examples"


def _stream_errors(config: dict, facts: _Facts) -> list[str]:
    """``data.loader: stream``: ImageNet only, a subset size, and no pixel
    shifts (the streamed images are cropped)."""
    d = config["data"]
    if d["loader"] != "stream":
        return []
    if d["name"] != "imagenet":
        return [
            f"config key 'data.loader': value 'stream' is not allowed: only data.name imagenet is streamed "
            f"({d['name']} is held in memory; use loader: memory)"
        ]
    subset = d.get("stream_subset")
    if not subset:
        return [
            "config key 'data.stream_subset': value None is not allowed: data.loader stream needs the number of "
            "training images held in memory for the train metrics and the Hessian, noise and landscape stages"
        ]
    errors = []
    for key, section in (
        ("converge.augment_shift", config["converge"]),
        ("limiting.augment_shift", config["limiting"]),
    ):
        if section["augment_shift"]:
            errors.append(
                f"config key '{key}': value {section['augment_shift']} is not allowed: must be 0 with "
                "data.loader stream (streamed images are randomly cropped and flipped instead)"
            )
    return errors


SEMANTIC_CHECKS = (
    _batch_size_errors,
    _local_file_errors,
    _stream_errors,
    _order_errors,
    _cell_errors,
    _analysis_errors,
    _linear_regression_errors,
)


def check_config(config: dict, schema_path: str | Path) -> None:
    """Raise :class:`ConfigError` with the first problem found, if any."""
    errors = non_finite_errors(config) or schema_errors(config, schema_path)
    if not errors:
        errors = semantic_errors(config)
    if errors:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)
