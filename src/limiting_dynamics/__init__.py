"""Limiting dynamics of SGD: the science behind the Snakemake workflow.

Layers, each importing only from the ones above it:

- base (torch-free; what the Snakefile imports): :mod:`.errors`, :mod:`.atomic`
  (complete-or-absent writes), :mod:`.provenance`, :mod:`.hyperparameters`,
  :mod:`.config` (schema and semantic checks, the cells), :mod:`.data.catalog`;
- data and models: :mod:`.data` (images, batch sources, prepared data sets),
  :mod:`.models` (ResNet and VGG families);
- training: :mod:`.recording` (per-step norms and projections),
  :mod:`.training` (convergence, burn-in, limiting runs), :mod:`.checkpoints`,
  :mod:`.run_record`;
- measurements: :mod:`.hessian`, :mod:`.noise`, :mod:`.landscape`;
- results and analysis (torch-free): :mod:`.trajectory` (NetCDF format),
  :mod:`.result_files`, :mod:`.diffusion`, :mod:`.geometry`, :mod:`.spectra`,
  :mod:`.local_displacement`, :mod:`.replicates`, :mod:`.results_tables`;
- theory (torch-free): :mod:`.theory`, :mod:`.linear_regression`,
  :mod:`.comparison`;
- figures: :mod:`.plots`;
- the command line: :mod:`.cli` (command table) and :mod:`.stages` (one body
  per workflow stage, beside the science it runs).

Every module is usable on its own from a notebook.
"""

__version__ = "0.1.0"
