"""Command-line entry points, one per workflow stage: ``limiting-dynamics STAGE ...``.

This module holds the command table, the parser and the dispatch only; each
stage's body is ``cmd_<stage>`` in :mod:`limiting_dynamics.stages` beside the
science it runs, imported when its command runs (so torch loads only for the
stages that train or differentiate). Every stage reads its settings as one
JSON object (``--params``), writes its outputs atomically, and turns expected
failures into a one-line message on stderr and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .figures import FIGURES

EXIT_ERROR = 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after a checkpoint; rerunning continues


# subcommand -> (module of stages/ holding its cmd_<subcommand>, help, options). An option is required unless marked:
# "name+" one or more values, "name*" zero or more (default None), "name?" optional
# (default None); "threads" is the torch thread count (default 1).
COMMANDS = {
    "prepare-data": ("data", "prepare a data set into a compact .npz file", "params out threads"),
    "converge": (
        "training",
        "train to convergence (or load weights) -> theta_0 checkpoint",
        "data params out-checkpoint out-history resume? checkpoint-every threads",
    ),
    "burn-in": (
        "training",
        "unrecorded steps at a cell's hyperparameters -> the cell's theta_0 state",
        "data checkpoint params out diverged-record resume? checkpoint-every threads",
    ),
    "limiting-run": (
        "training",
        "limiting run of one hyperparameter cell from its burn-in state",
        "data checkpoint hessian? params out out-snapshots? diverged-record resume? checkpoint-every threads",
    ),
    "export-trajectory": ("trajectory", "raw record -> NetCDF trajectory", "raw params out"),
    "combine-trajectories": ("trajectory", "all cell trajectories -> one NetCDF over cells", "inputs+ cells+ out"),
    "analyze-cell": ("analysis", "diffusion exponent and stationary level of one cell", "trajectory params out"),
    "summarize": (
        "analysis",
        "per-cell analyses -> summary CSV and NetCDF, and the spread between seeds",
        "inputs+ out-csv out-nc out-replicates",
    ),
    "matched-exponents": (
        "analysis",
        "c of every run over windows of lr t / (1 - beta) and of rotation angle common to its family",
        "inputs+ params out",
    ),
    "hessian": (
        "hessian",
        "top eigenpairs, spectral density and trace of the Hessian at theta_0",
        "data checkpoint params out resume? checkpoint-every threads",
    ),
    "eigenvector-drift": (
        "hessian",
        "how the Hessian eigenvectors of theta_0 hold along the run (at the weights it kept)",
        "data checkpoint snapshots hessian params out threads",
    ),
    "gradient-noise": (
        "noise",
        "minibatch (and per-sample) gradient noise at theta_0 and at the run's snapshots for one S",
        "data checkpoint snapshots? hessian? params out threads",
    ),
    "compare-cell": (
        "comparison",
        "theory vs experiment for one cell (phase space, lag-MSD)",
        "trajectory hessian noise drift? params out",
    ),
    "landscape": (
        "landscape",
        "train/test loss on the plane of two Hessian eigenvectors around theta_0",
        "data checkpoint hessian trajectory params out resume? checkpoint-every threads",
    ),
    "predict": (
        "analysis",
        "predictions and consistency checks of the stationary local displacement and per-mode comparisons per cell",
        "analyses+ noise* comparisons* out-csv out-modes? out-nc?",
    ),
    "results-tables": (
        "analysis",
        "the measured results as markdown tables (spread between seeds, targets)",
        "summary predictions modes matched? params out",
    ),
    "linreg-cell": (
        "linear_regression",
        "linear regression on digits: SGD chains vs theory for one cell",
        "params out",
    ),
    "linreg-summary": (
        "linear_regression",
        "linear-regression cells -> comparison tables",
        "inputs+ out-csv out-continuous",
    ),
    "plot": ("plot", "draw one figure", "inputs+ params out"),
}

OPTION_HELP = {
    ("limiting-run", "hessian"): "Hessian file whose eigenvectors the phase space is projected on",
    ("converge", "resume"): "checkpoint file of this job: resumed from when it exists, written every "
    "--checkpoint-every epochs and on SIGTERM/SIGINT, removed on success",
    ("converge", "checkpoint-every"): "epochs between checkpoints (0: only on a signal)",
    ("burn-in", "resume"): "checkpoint file of this job (as for converge)",
    ("burn-in", "checkpoint-every"): "steps between checkpoints (0: only on a signal)",
    ("limiting-run", "resume"): "checkpoint file of this job (as for converge)",
    ("hessian", "resume"): "checkpoint file of this job: written after the Lanczos run and each SLQ probe, every "
    "--checkpoint-every products and on SIGTERM/SIGINT, removed on success",
    ("hessian", "checkpoint-every"): "Hessian-vector products between checkpoints (0: only on a signal and after each "
    "part)",
    ("landscape", "resume"): "checkpoint file of this job (finished rows of the grid)",
    ("landscape", "checkpoint-every"): "rows between checkpoints (0: only on a signal)",
    ("limiting-run", "checkpoint-every"): "steps between checkpoints (0: only on a signal)",
    ("limiting-run", "out-snapshots"): "file for the weights at the steps where the noise stage measures the noise "
    "and the eigenvector-drift stage takes the Hessian",
    ("gradient-noise", "snapshots"): "weights along the limiting run (limiting-run --out-snapshots): noise there too",
    ("eigenvector-drift", "snapshots"): "weights along the limiting run (limiting-run --out-snapshots): the Hessian "
    "at each of its drift steps",
    ("predict", "comparisons"): "compare-cell outputs (adds their summary columns)",
    ("predict", "out-modes"): "per-mode theory-vs-experiment table (CSV)",
    ("predict", "out-nc"): "both tables as one NetCDF file, with provenance attributes",
    ("plot", "inputs"): "the figure's input files as ROLE=PATH, a role of several files repeated ('none': a "
    "figure that reads no file)",
}


class _Version(argparse.Action):
    """``--version``: the package, torch and its CUDA build, read when asked (torch is not imported)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from .provenance import version_line

        print(version_line(), flush=True)  # on stdout, like argparse's own "version" action
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="limiting-dynamics", description=__doc__)
    ap.add_argument("--version", action=_Version, nargs=0, help="print the package, torch and CUDA build versions")
    sub = ap.add_subparsers(dest="command", required=True)
    for command, (_module, help_, options) in COMMANDS.items():
        s = sub.add_parser(command, help=help_)
        if command == "plot":
            s.add_argument("figure", choices=list(FIGURES), help="a figure of src/limiting_dynamics/figures.py")
        for opt in options.split():
            name = opt.rstrip("+*?")
            kw = {"help": OPTION_HELP.get((command, name))}
            if opt == "threads":
                kw.update(type=int, default=1)
            elif opt == "checkpoint-every":
                kw.update(type=int, default=0)
            elif opt.endswith("+"):
                kw.update(nargs="+", required=True)
            elif opt.endswith("*"):
                kw.update(nargs="*", default=None)
            elif opt.endswith("?"):
                kw.update(default=None)
            else:
                kw.update(required=True)
            s.add_argument(f"--{name}", **kw)
    return ap


def main(argv: list[str] | None = None) -> int:
    from .errors import Interrupted, LimitingDynamicsError

    args = build_parser().parse_args(argv)
    try:
        module = importlib.import_module(f".stages.{COMMANDS[args.command][0]}", __package__)
        getattr(module, "cmd_" + args.command.replace("-", "_"))(args)
    except Interrupted as exc:
        print(f"limiting-dynamics {args.command}: interrupted: {exc}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except (LimitingDynamicsError, OSError) as exc:
        print(f"limiting-dynamics {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
