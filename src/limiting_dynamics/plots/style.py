"""The look every figure shares and how it is saved: seaborn theme, panel
grids, and atomic saving with the provenance in the file's metadata."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from .. import __version__  # noqa: E402
from ..atomic import atomic_path  # noqa: E402

HP_LABELS = {
    "lr": "learning rate $\\eta$",
    "batch_size": "batch size $S$",
    "momentum": "momentum $\\beta$",
    "weight_decay": "weight decay $\\lambda$",
    "seed": "seed",
}


def setup(context: str) -> None:
    sns.set_theme(context=context, style="ticks", palette="colorblind")


def save(fig, path: str | Path, dpi: int) -> None:
    """Save atomically (the format follows the suffix) with the provenance in
    the file's metadata (PNG ``Software``, PDF/SVG ``Creator``) and close."""
    from ..provenance import git_revision, torch_version

    fmt = Path(path).suffix.lstrip(".")
    made_by = f"limiting-dynamics {__version__} (git {git_revision()}, torch {torch_version()})"
    with atomic_path(path) as tmp:
        fig.savefig(
            tmp, dpi=dpi, bbox_inches="tight", format=fmt, metadata={"Software" if fmt == "png" else "Creator": made_by}
        )
    plt.close(fig)


def grid(n: int, ncols: int = 3, size=(4.0, 3.2)):
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size[0] * ncols, size[1] * nrows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat
