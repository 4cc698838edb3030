import copy

import pytest
from conftest import SCHEMA, TINY

from limiting_dynamics.config import (
    ConfigError,
    all_cells,
    burn_in_start,
    burn_in_steps,
    cell_id,
    cell_settings,
    check_config,
    expand_cells,
    family,
    noise_snapshot_steps,
    non_finite_errors,
    probed,
    quadratic_cells,
)
from limiting_dynamics.hyperparameters import Hyperparameters


def _set(cfg, dotted, value):
    keys = dotted.split(".")
    node = cfg
    for k in keys[:-1]:
        node = node[k]
    if value is _DELETE:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value
    return cfg


_DELETE = object()


BAD = [
    ("cells.default.momentum", -0.1, "'cells.default.momentum': value -0.1 is not allowed: must be >= 0"),
    ("cells.default.lr", -1e-3, "'cells.default.lr': value -0.001 is not allowed: must be > 0"),
    ("cells.default.lr", "fast", "'cells.default.lr': value 'fast' is not allowed: must be of type number"),
    ("cells.default.batch_size", 0, "'cells.default.batch_size': value 0 is not allowed: must be >= 2"),
    (
        "cells.default.batch_size",
        64.5,
        "'cells.default.batch_size': value 64.5 is not allowed: must be of type integer",
    ),
    (
        "cells.default.batch_size",
        5000,
        "'cells' (batch_size): value 5000 is not allowed: must be <= the 1438 training examples",
    ),
    ("converge.batch_size", 5000, "'converge.batch_size': value 5000 is not allowed: must be <= the 1438"),
    ("cells.default.weight_decay", -1e-4, "'cells.default.weight_decay': value -0.0001 is not allowed: must be >= 0"),
    ("cells.sweeps.lr", [0.1, 0.1], "'cells.sweeps.lr': value [0.1, 0.1] is not allowed: must not repeat a value"),
    ("cells.sweeps.momentum", [0.5, 1.5], "'cells.sweeps.momentum.1': value 1.5 is not allowed: must be < 1"),
    ("cells.default.lrr", 0.1, "'cells.default': unknown key(s) ['lrr'] (a typo?)"),
    (
        "data.name",
        "mnist",
        "'data.name': value 'mnist' is not allowed: must be one of ['digits', 'cifar10', 'imagenet']",
    ),
    ("data.test_fraction", 1.0, "'data.test_fraction': value 1.0 is not allowed: must be < 1"),
    ("model.arch", "vgg", "'model.arch': value 'vgg' is not allowed: must be one of"),
    ("limiting.steps", 5, "'limiting.steps': value 5 is not allowed: must be >= 10"),
    ("limiting.sampling", "random", "'limiting.sampling': value 'random' is not allowed: must be one of"),
    ("analysis.fit_window", [0.1, 1.5], "'analysis.fit_window.1': value 1.5 is not allowed: must be <= 1"),
    (
        "limiting.burn_in.min_steps",
        10_000,
        "'limiting.burn_in.min_steps': value 10000 is not allowed: must be <= limiting.burn_in.max_steps",
    ),
    (  # the run keeps its weights at the drift steps: none beyond its last step
        "hessian.drift_steps",
        [2, 100_000],
        "'hessian.drift_steps': value [2, 100000] is not allowed: every step must be <= the",
    ),
    (
        "cells.quadratic.drift_steps",
        [5, 100_000],
        "'cells.quadratic.drift_steps': value [5, 100000] is not allowed: every step must be <= the",
    ),
    ("plots.dpi", 10, "'plots.dpi': value 10 is not allowed: must be >= 50"),
    ("analysis", _DELETE, "'<top level>': missing required key: 'analysis'"),
    (
        "linear_regression.samplings",
        ["shuffle"],
        "'linear_regression.samplings.0': value 'shuffle' is not allowed: must be one of",
    ),
    (
        "linear_regression.momenta",
        [],
        "'linear_regression.momenta': value [] is not allowed: must have at least 1 item(s)",
    ),
    ("linear_regression.weight_decay", 0.0, "'linear_regression.weight_decay': value 0.0 is not allowed: must be > 0"),
    (
        "linear_regression.lags",
        [1, 100],
        "'linear_regression.lags': value [1, 100] is not allowed: "
        "lag_anchor * steps + max(lags) = 120 must be <= steps (40)",
    ),
    (
        "linear_regression.kept_chains",
        99,
        "'linear_regression.kept_chains': value 99 is not allowed: must be <= chains (16)",
    ),
    ("hessian.bn_mode", "frozen", "'hessian.bn_mode': value 'frozen' is not allowed: must be one of ['eval', 'train']"),
    (
        "hessian.n_samples",
        5000,
        "'hessian.n_samples': value 5000 is not allowed: must be <= the 1438 training examples",
    ),
    ("linear_regression.lag_anchor", 1.0, "'linear_regression.lag_anchor': value 1.0 is not allowed: must be < 1"),
    # worded in full, as the user reads them
    (  # learning rate zero
        "cells.default.lr",
        0,
        "config key 'cells.default.lr': value 0 is not allowed: must be > 0",
    ),
    (  # learning rate as text
        "cells.default.lr",
        "fast",
        "config key 'cells.default.lr': value 'fast' is not allowed: must be of type number",
    ),
    (  # fractional batch size
        "cells.default.batch_size",
        2.5,
        "config key 'cells.default.batch_size': value 2.5 is not allowed: must be of type integer",
    ),
    (  # momentum one
        "cells.default.momentum",
        1.0,
        "config key 'cells.default.momentum': value 1.0 is not allowed: must be < 1",
    ),
    (  # negative weight decay
        "cells.default.weight_decay",
        -0.1,
        "config key 'cells.default.weight_decay': value -0.1 is not allowed: must be >= 0",
    ),
    (  # negative seed
        "cells.sweeps.seed",
        [1, -2],
        "config key 'cells.sweeps.seed.1': value -2 is not allowed: must be >= 0",
    ),
    (  # empty grid
        "cells.grid",
        {"lr": []},
        "config key 'cells.grid.lr': value [] is not allowed: must have at least 1 item(s)",
    ),
    (  # repeated sweep value
        "cells.sweeps.lr",
        [0.02, 0.02],
        "config key 'cells.sweeps.lr': value [0.02, 0.02] is not allowed: must not repeat a value",
    ),
    (  # two cells with one name
        "cells.sweeps.lr",
        [0.0500000001],
        "config key 'cells': cells {'lr': 0.05, 'batch_size': 32, 'momentum': 0.9, 'weight_decay': 0.005, "
        "'seed': 0} and {'lr': 0.0500000001, 'batch_size': 32, 'momentum': 0.9, 'weight_decay': 0.005, "
        "'seed': 0} get the same name 'lr0.05_bs32_mom0.9_wd0.005_seed0' (values must differ within 6 "
        "significant digits)",
    ),
    (  # typo in a key
        "limiting.stpes",
        100,
        "config key 'limiting': unknown key(s) ['stpes'] (a typo?); allowed keys: ['augment_shift', 'burn_in', "
        "'eval_every', 'label_noise', 'phase_space', 'sampling', 'steps', 'tensor_every']",
    ),
    ("limiting.steps", _DELETE, "config key 'limiting': missing required key: 'steps'"),
    (  # batch larger than the data
        "cells.sweeps.batch_size",
        [5000],
        "config key 'cells' (batch_size): value 5000 is not allowed: must be <= the 1438 training examples of digits",
    ),
    (  # unknown device
        "compute.device",
        "gpu",
        "config key 'compute.device': value 'gpu' is not allowed: must be one of ['auto', 'cpu', 'cuda']",
    ),
    (  # converged weights path missing
        "converge.checkpoint",
        "/nonexistent/resnet.pt",
        "config key 'converge.checkpoint': value '/nonexistent/resnet.pt' is not allowed: no such file (give the "
        "local path of a converged checkpoint, or null to train)",
    ),
    (  # CIFAR-10 without a local directory
        "data",
        {**TINY["data"], "name": "cifar10", "path": "/no/cifar"},
        "config key 'data.path': value '/no/cifar' is not allowed: cifar10 is read from a local directory (nothing is "
        "downloaded); download 'CIFAR-10 python version' (cifar-10-python.tar.gz) from "
        "https://www.cs.toronto.edu/~kriz/cifar.html on a machine with internet, unpack it and set data.path to the "
        "cifar-10-batches-py directory",
    ),
    (  # fit window reversed
        "analysis.fit_window",
        [0.9, 0.1],
        "config key 'analysis.fit_window': value [0.9, 0.1] is not allowed: must be [start, end] with start < end "
        "(fractions of the run)",
    ),
    (  # more phase-space modes than eigenvectors
        "limiting.phase_space.modes",
        5,
        "config key 'limiting.phase_space.modes': value 5 is not allowed: must be <= hessian.top_k (3), the "
        "eigenvectors computed",
    ),
    (  # SLQ probes longer than the Lanczos run that is the first of them
        "hessian.slq_iterations",
        31,
        "config key 'hessian.slq_iterations': value 31 is not allowed: must be <= hessian.max_iter (30): the "
        "Lanczos run is the first SLQ probe",
    ),
]


def _numeric_keys(node, path=()):
    """Dotted paths of every number in a config (list items by index), booleans aside."""
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _numeric_keys(v, (*path, key))]
    if isinstance(node, list):
        return [k for i, v in enumerate(node) for k in _numeric_keys(v, (*path, i))]
    return [path] if isinstance(node, (int, float)) and not isinstance(node, bool) else []


def _default_config() -> dict:
    import yaml
    from conftest import REPO

    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


NUMERIC_KEYS = _numeric_keys(_default_config())


BATCH_SIZES = [
    ("cells.default.batch_size", 1, "cells.default.batch_size"),
    ("cells.sweeps.batch_size", [32, 1], "cells.sweeps.batch_size.1"),
    ("cells.grid", {"batch_size": [1]}, "cells.grid.batch_size.0"),
    ("converge.batch_size", 1, "converge.batch_size"),
]


def test_tiny_config_is_valid():
    check_config(copy.deepcopy(TINY), SCHEMA)


def test_repository_default_config_is_valid():
    import yaml
    from conftest import REPO

    check_config(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), SCHEMA)


def test_sweeps_and_grid_expand_without_repeats():
    cells = {
        "default": {"lr": 0.1, "batch_size": 64, "momentum": 0.9, "weight_decay": 0.0, "seed": 0},
        "sweeps": {"lr": [0.1, 0.2], "momentum": [0.8]},
        "grid": {"lr": [0.1, 0.3], "seed": [0, 1]},
        "replicates": 1,
    }
    got = expand_cells(cells)
    assert got[0] == Hyperparameters(0.1, 64, 0.9, 0.0, 0)
    assert len(got) == len(set(got)) == 1 + 1 + 1 + 3  # default, lr=0.2, mom=0.8, grid minus default
    assert Hyperparameters(0.3, 64, 0.9, 0.0, 1) in got


def test_cell_id_is_readable_and_unique():
    a = cell_id(Hyperparameters(1e-4, 256, 0.9, 1e-4, 0))
    assert a == "lr0.0001_bs256_mom0.9_wd0.0001_seed0"
    assert a != cell_id(Hyperparameters(1e-4, 256, 0.9, 1e-4, 1))


def test_burn_in_follows_relaxation_time_and_clips():
    cfg = {"relaxation_times": 2.0, "min_steps": 10, "max_steps": 1000}
    assert burn_in_steps(Hyperparameters(0.05, 64, 0.9, 5e-3, 0), cfg) == 800
    assert burn_in_steps(Hyperparameters(0.5, 64, 0.9, 0.5, 0), cfg) == 10
    assert burn_in_steps(Hyperparameters(0.05, 64, 0.9, 0.0, 0), cfg) == 1000


@pytest.mark.parametrize(
    "key,value,message", BAD, ids=[f"{k}=<deleted>" if v is _DELETE else f"{k}={v!r}" for k, v, _ in BAD]
)
def test_bad_config_names_key_value_and_rule(key, value, message):
    cfg = _set(copy.deepcopy(TINY), key, value)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, SCHEMA)
    text = str(err.value)
    assert "\n" not in text
    assert message in text


NON_FINITE = (float("nan"), float("inf"), float("-inf"))
# one number per section of the config, and one inside a list: the cases of check_config below
SECTION_KEYS = list({p[0]: p for p in reversed(NUMERIC_KEYS)}.values()) + [
    next(p for p in NUMERIC_KEYS if isinstance(p[-1], int))
]


def _dotted(path) -> str:
    return ".".join(map(str, path))


def test_every_number_of_the_config_is_checked_for_nan_and_infinity():
    """All numbers of the default config made non-finite at once (NaN, inf, -inf in
    turn): the check names each of them, in order, in the words the user reads."""
    cfg = _default_config()
    expected = []
    for i, path in enumerate(NUMERIC_KEYS):
        value = NON_FINITE[i % 3]
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        expected.append(f"config key '{_dotted(path)}': value {value!r} is not allowed: must be a finite number")
    assert non_finite_errors(cfg) == expected


@pytest.mark.parametrize("value", NON_FINITE, ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("path", SECTION_KEYS, ids=[_dotted(p) for p in SECTION_KEYS])
def test_a_non_finite_number_stops_the_config_check_before_the_schema(path, value):
    cfg = _default_config()
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as err:
        check_config(cfg, SCHEMA)
    assert str(err.value) == f"config key '{_dotted(path)}': value {value!r} is not allowed: must be a finite number"


@pytest.mark.parametrize("key,value,where", BATCH_SIZES, ids=[k for k, _, _ in BATCH_SIZES])
def test_batch_size_the_network_cannot_train_on_is_rejected(key, value, where):
    cfg = _set(copy.deepcopy(TINY), key, value)
    with pytest.raises(ConfigError) as err:
        check_config(cfg, SCHEMA)
    assert str(err.value) == (
        f"config key '{where}': value 1 is not allowed: must be >= 2 "
        "(BatchNorm in train mode needs at least 2 examples per batch)"
    )


@pytest.mark.parametrize("key", ["hessian.batch_size", "linear_regression.batch_size"])
def test_batch_sizes_without_batchnorm_statistics_may_be_one(key):
    """The Hessian's chunk (eval mode) and least squares have no batch statistics."""
    check_config(_set(copy.deepcopy(TINY), key, 1), SCHEMA)


# Each semantic bound reached exactly is allowed (BAD holds the case one past it);
# values are in the tiny config's terms (1438 digits training examples, lag anchor
# int(0.5 * 40) = 20, 16 chains, burn-in max_steps 20).
AT_THE_EDGE = [
    ("converge.batch_size", 1438),
    ("cells.default.batch_size", 1438),
    ("hessian.n_samples", 1438),
    ("limiting.burn_in.min_steps", 20),
    ("linear_regression.lags", [1, 20]),
    ("linear_regression.kept_chains", 16),
]


@pytest.mark.parametrize("key,value", AT_THE_EDGE, ids=[f"{k}={v!r}" for k, v in AT_THE_EDGE])
def test_a_bound_reached_exactly_is_allowed(key, value):
    check_config(_set(copy.deepcopy(TINY), key, value), SCHEMA)


def _two_seeds(chained: bool) -> dict:
    cfg = copy.deepcopy(TINY)
    cfg["cells"]["replicates"] = 2
    cfg["cells"]["default"]["seed"] = 3
    cfg["cells"]["sweeps"]["lr"] = [0.02]
    cfg["hessian"]["cells"] = "default"
    cfg["limiting"]["burn_in"]["chained_relaxation_times"] = 0.05 if chained else None
    return cfg


DEFAULT = [Hyperparameters(0.05, 32, 0.9, 0.005, s) for s in (3, 4)]
SWEPT = [Hyperparameters(0.02, 32, 0.9, 0.005, s) for s in (3, 4)]
QUADRATIC = [Hyperparameters(0.001, 32, 0.99, 0.0005, s) for s in (3, 4)]

# cell -> (family, the cell its burn-in starts from with chained burn-ins, without, probed by the Hessian)
CELLS = [
    (DEFAULT[0], "spherical", None, None, True),
    (DEFAULT[1], "spherical", None, None, True),
    (SWEPT[1], "spherical", DEFAULT[1], None, False),
    (QUADRATIC[0], "quadratic", DEFAULT[0], DEFAULT[0], True),
    (QUADRATIC[1], "quadratic", DEFAULT[1], DEFAULT[1], True),
]


@pytest.mark.parametrize("hp,fam,chained_start,plain_start,is_probed", CELLS, ids=[cell_id(c[0]) for c in CELLS])
def test_each_cell_has_its_family_start_and_probe(hp, fam, chained_start, plain_start, is_probed):
    """Replicates count seeds up from the default's; the quadratic family has one cell
    per lr and seed and always starts from the default cell of its seed; a swept cell
    starts there only with chained burn-ins; hessian.cells: default probes the default
    cell's replicates and the quadratic family."""
    chained, plain = _two_seeds(True), _two_seeds(False)
    assert quadratic_cells(chained) == QUADRATIC
    assert set(all_cells(chained)) == set(all_cells(plain)) == {*DEFAULT, *SWEPT, *QUADRATIC}
    assert family(hp, chained) == fam
    assert burn_in_start(hp, chained) == chained_start
    assert burn_in_start(hp, plain) == plain_start
    assert probed(hp, chained) is is_probed
    settings = cell_settings(hp, chained)
    steps = chained["cells"]["quadratic"]["steps"] if fam == "quadratic" else chained["limiting"]["steps"]
    assert settings["steps"] == steps


def test_a_chained_cell_whose_seed_has_no_default_cell_adds_that_cell_first():
    """A grid cell of seed 7 (and its replicate, 8) burns in from the default cell of
    its own seed, which the config does not list: it is run, before the cells."""
    cfg = _two_seeds(True)
    cfg["cells"]["grid"] = {"lr": [0.02], "seed": [7]}
    cells = all_cells(cfg)
    added = [Hyperparameters(0.05, 32, 0.9, 0.005, s) for s in (7, 8)]
    assert cells[:2] == added and len(cells) == len(set(cells)) == 2 + 2 + 2 + 2 + 2
    assert burn_in_start(Hyperparameters(0.02, 32, 0.9, 0.005, 8), cfg) == added[1]
    assert all_cells(_two_seeds(False)) == expand_cells(cfg["cells"])[:4] + QUADRATIC


@pytest.mark.parametrize(
    "steps, points, expected",
    [(2500, 3, [1250, 2500]), (2500, 2, [2500]), (2500, 1, []), (2500, 0, []), (3, 5, [1, 2, 3])],
)
def test_noise_points_are_evenly_spaced_after_theta0(steps, points, expected):
    assert noise_snapshot_steps(steps, points) == expected


@pytest.mark.parametrize("n_errors, suffix", [(1, ""), (2, " (and 1 more)"), (3, " (and 2 more)")])
def test_the_first_problem_is_raised_with_a_count_of_the_rest(n_errors, suffix):
    """Windows the wrong way round, one to three of them: the first is named, the rest counted."""
    cfg = copy.deepcopy(TINY)
    for key in ("fit_window", "stationary_window", "mode_window")[:n_errors]:
        cfg["analysis"][key] = [0.9, 0.1]
    with pytest.raises(ConfigError) as err:
        check_config(cfg, SCHEMA)
    assert str(err.value) == (
        "config key 'analysis.fit_window': value [0.9, 0.1] is not allowed: "
        "must be [start, end] with start < end (fractions of the run)" + suffix
    )


@pytest.mark.parametrize(
    "overlay, burn_in",
    [("quadratic_lr_scan.yaml", 6000), ("quadratic_burn_in.yaml", 18000)],
)
def test_a_quadratic_overlay_is_valid_and_plans_only_its_cells(overlay, burn_in):
    """A quadratic-family overlay on top of the default: valid, the default cell and one
    quadratic cell per learning rate, three seeds each, nothing else, burned in as it says."""
    import yaml
    from conftest import REPO
    from snakemake.utils import update_config

    from limiting_dynamics.config import all_cells, cell_settings, quadratic_cells

    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / "config" / overlay).read_text()))
    check_config(cfg, SCHEMA)
    lrs = cfg["cells"]["quadratic"]["lr"]
    assert sorted(hp.lr for hp in quadratic_cells(cfg)) == sorted(lrs * 3)
    assert len(all_cells(cfg)) == 3 * (len(lrs) + 1) and {hp.seed for hp in all_cells(cfg)} == {0, 1, 2}
    assert {cell_settings(hp, cfg)["burn_in_steps"] for hp in quadratic_cells(cfg)} == {burn_in}
