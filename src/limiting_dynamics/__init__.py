"""Limiting dynamics of SGD: the science behind the Snakemake workflow.

Each module holds one part of the pipeline and is usable on its own from a
notebook: :mod:`data` (prepared data sets), :mod:`models` (ResNet family),
:mod:`recording` (cheap per-step norms), :mod:`training` (convergence and
limiting runs), :mod:`trajectory` (NetCDF export), :mod:`diffusion`
(exponent fits and summaries), :mod:`plots` (figures).
"""

__version__ = "0.1.0"
