"""The package's layers: no import cycles (lazy imports included), a torch-free
base that the Snakefile imports, torch-free analysis and plot stages, and a
command table whose every entry reaches a stage body."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from limiting_dynamics import cli

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "limiting_dynamics"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def relative_imports() -> list[tuple[str, str]]:
    """(module, target) of every relative import in the package's source."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    out = []
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + [node.module] if node.module else base)
                out += [(name, f"{target}.{a.name}" if not node.module else target) for a in node.names]
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports anywhere in its source (so an
    import inside a function counts: lazy imports must not hide a cycle)."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + [node.module] if node.module else base)
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    deps.add(full if full in modules else target)
            elif isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
        graph[name] = {d for d in deps if d in modules and d != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, found = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt) :] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_every_relative_import_names_a_module_of_the_package():
    """A relative import in a function runs only when the function does: check them all."""
    modules = {_module_name(p) for p in PACKAGE.rglob("*.py")}
    version = "limiting_dynamics.__version__"  # the one name a package __init__ defines
    missing = [(m, t) for m, t in relative_imports() if t not in modules and t != version]
    assert missing == []


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "limiting_dynamics.data.datasets" in graph and len(graph) > 30
    assert cycles(graph) == []


def _loaded_heavy_modules(*modules: str, then: str = "") -> list[str]:
    """torch or torchvision if importing ``modules`` (then running ``then``) loads them."""
    code = (
        f"import sys\nimport {', '.join(modules)}\n{then}\n"
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return eval(proc.stdout)


def test_the_base_the_snakefile_imports_is_torch_free():
    base = ("errors", "atomic", "provenance", "hyperparameters", "config", "data.catalog", "run_record", "figures")
    assert _loaded_heavy_modules(*(f"limiting_dynamics.{m}" for m in base)) == []


def test_analysis_and_plot_stages_do_not_load_torch():
    """About 40 of the default run's jobs only read NetCDF and draw; importing
    torch (~1.5-2 s each) would be most of their time."""
    stages = ("analysis", "comparison", "trajectory", "plot", "linear_regression")
    science = ("comparison", "diffusion", "trajectory", "geometry", "local_displacement", "replicates")
    science += ("results_tables", "spectra", "plots.runs", "plots.network_vs_theory", "plots.theory_engine")
    modules = [f"limiting_dynamics.stages.{s}" for s in stages] + [f"limiting_dynamics.{m}" for m in science]
    assert _loaded_heavy_modules("limiting_dynamics.cli", *modules) == []


def test_stamping_a_torch_free_stages_output_does_not_load_torch():
    """Provenance records the numerics of torch only where the stage loaded it already."""
    then = "limiting_dynamics.provenance.provenance_attrs()"
    assert _loaded_heavy_modules("limiting_dynamics.provenance", then=then) == []


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_reaches_its_stage_body(command):
    module = importlib.import_module(f"limiting_dynamics.stages.{cli.COMMANDS[command][0]}")
    assert callable(getattr(module, "cmd_" + command.replace("-", "_")))
