"""The plot stage (torch-free): one figure of the registry (:mod:`limiting_dynamics.figures`).

``limiting-dynamics plot FIGURE --inputs ROLE=PATH ...`` opens each file as its
role says (:data:`READERS`) and calls the figure's plotting function with the
opened inputs by role, the ``plots`` settings the figure names, ``path`` and
``dpi``."""

from __future__ import annotations

import importlib

import pandas as pd
import xarray as xr

from ..errors import FigureError
from ..figures import FIGURES
from ..plots import style
from ..result_files import open_result
from .common import params

READERS = {  # figures.READS
    "dataset": xr.load_dataset,
    "hessian": lambda f: open_result(f, "hessian"),
    "table": pd.read_csv,
    "table_by_cell": lambda f: pd.read_csv(f, index_col="cell"),
}


def drawing(name: str):
    """The plotting function of figure ``name`` (imports its module of :mod:`limiting_dynamics.plots`)."""
    module, function = FIGURES[name].draw.rsplit(".", 1)
    return getattr(importlib.import_module(f"..plots.{module}", __package__), function)


def files_by_role(name: str, pairs: list[str]) -> dict[str, list[str]]:
    """``ROLE=PATH`` pairs (``none``: no file) as each role's files, checked against the figure's roles."""
    roles = FIGURES[name].inputs
    given: dict[str, list[str]] = {}
    for pair in [] if pairs == ["none"] else pairs:
        role, _, path = pair.partition("=")
        if role not in roles or not path:
            raise FigureError(
                f"figure {name}: --inputs takes ROLE=PATH with ROLE one of {sorted(roles) or 'none (no inputs)'}, "
                f"got {pair!r}"
            )
        given.setdefault(role, []).append(path)
    missing = sorted(set(roles) - set(given))
    if missing:
        raise FigureError(f"figure {name}: no input file given for role(s) {missing}")
    several = sorted(r for r, spec in roles.items() if not spec.many and len(given[r]) > 1)
    if several:
        raise FigureError(f"figure {name}: role(s) {several} take one file each, got {[given[r] for r in several]}")
    return given


def cmd_plot(a) -> None:
    figure = FIGURES[a.figure]
    p = params(a)
    inputs = {}
    for role, files in files_by_role(a.figure, a.inputs).items():
        spec = figure.inputs[role]
        opened = [READERS[spec.read](f) for f in files]
        inputs[role] = opened if spec.many else opened[0]
    style.setup(p["context"])
    settings = {k: p[k] for k in figure.settings}
    drawing(a.figure)(**inputs, **settings, path=a.out, dpi=int(p["dpi"]))
