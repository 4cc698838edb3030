"""Mutation score of a module against its unit tests (run by hand; slow).

A small mutation tester in the spirit of mutmut, written here because mutmut
3.x does not run on this package's src layout. For one module it lists every
site where a one-token change alters behaviour, draws a seeded sample of them,
and for each mutant rewrites the module in place, runs the given tests
(``pytest -x``, one process) and restores the file. A mutant is *killed* when
the tests fail or run past ``timeout`` (three times the clean run plus 10 s);
otherwise it *survived*. The score is killed / sampled, with its binomial
standard error.

Mutations (one per mutant):

- arithmetic: ``+ <-> -``, ``* <-> /``, ``** -> *``, ``// -> /``;
- comparison: ``< <-> <=``, ``> <-> >=``, ``== <-> !=``, ``is <-> is not``,
  ``in <-> not in``;
- boolean: ``and <-> or``, ``not x -> x``;
- numbers: an int ``n -> n + 1``, a float ``x -> 2 x`` (``0.0 -> 1.0``);
- ``return X -> return None`` where X is not already None.

Docstrings, annotations and ``if __name__`` blocks are not mutated. The module
is rewritten with ``ast.unparse`` (comments and layout change; behaviour only
through the one mutation).

Usage (the checkout's own ``src`` goes first on the path, so a second checkout,
e.g. a ``git worktree`` of an older commit, is scored with its own tests)::

    python bench/mutation_score.py --checkout /work/old --module theory \\
        --tests tests/unit/test_theory.py --sample 40 --seed 0
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

SWAP_BINOP = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.Pow: ast.Mult,
    ast.FloorDiv: ast.Div,
}
SWAP_CMP = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
}
SWAP_BOOL = {ast.And: ast.Or, ast.Or: ast.And}


def _skipped_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes never mutated: docstrings, annotations, ``if __name__`` blocks."""
    skip: set[int] = set()

    def cover(node):
        for sub in ast.walk(node):
            skip.add(id(sub))

    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            if isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                cover(body[0])
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.returns is not None:
                cover(node.returns)
            for arg in node.args.args + node.args.kwonlyargs + node.args.posonlyargs:
                if arg.annotation is not None:
                    cover(arg.annotation)
        if isinstance(node, ast.AnnAssign):
            cover(node.annotation)
        if isinstance(node, ast.If) and "__name__" in ast.unparse(node.test):
            cover(node)
    return skip


def mutation_sites(tree: ast.Module) -> list[tuple[int, int, str]]:
    """Every (node index in ``ast.walk`` order, operand index, description) that can be mutated."""
    skip = _skipped_nodes(tree)
    sites = []
    for index, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        line = getattr(node, "lineno", 0)
        if isinstance(node, (ast.BinOp, ast.AugAssign)) and type(node.op) in SWAP_BINOP:
            sites.append((index, 0, f"line {line}: {type(node.op).__name__} -> {SWAP_BINOP[type(node.op)].__name__}"))
        elif isinstance(node, ast.Compare):
            for k, op in enumerate(node.ops):
                if type(op) in SWAP_CMP:
                    sites.append((index, k, f"line {line}: {type(op).__name__} -> {SWAP_CMP[type(op)].__name__}"))
        elif isinstance(node, ast.BoolOp):
            sites.append((index, 0, f"line {line}: {type(node.op).__name__} -> {SWAP_BOOL[type(node.op)].__name__}"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            sites.append((index, 0, f"line {line}: not x -> x"))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            sites.append((index, 0, f"line {line}: number {node.value!r}"))
        elif isinstance(node, ast.Return) and node.value is not None:
            if not (isinstance(node.value, ast.Constant) and node.value.value is None):
                sites.append((index, 0, f"line {line}: return X -> return None"))
    return sites


def mutate(source: str, site: tuple[int, int, str]) -> str:
    """The module's source with one site mutated."""
    tree = ast.parse(source)
    index, k, _ = site
    nodes = list(ast.walk(tree))
    node = nodes[index]
    parents = {id(child): parent for parent in nodes for child in ast.iter_child_nodes(parent)}
    if isinstance(node, (ast.BinOp, ast.AugAssign)):
        node.op = SWAP_BINOP[type(node.op)]()
    elif isinstance(node, ast.Compare):
        node.ops[k] = SWAP_CMP[type(node.ops[k])]()
    elif isinstance(node, ast.BoolOp):
        node.op = SWAP_BOOL[type(node.op)]()
    elif isinstance(node, ast.UnaryOp):
        parent = parents[id(node)]
        for field, value in ast.iter_fields(parent):
            if value is node:
                setattr(parent, field, node.operand)
            elif isinstance(value, list) and any(v is node for v in value):
                setattr(parent, field, [node.operand if v is node else v for v in value])
    elif isinstance(node, ast.Constant):
        node.value = (
            node.value + 1
            if isinstance(node.value, int) and not isinstance(node.value, bool)
            else (node.value * 2 if node.value else 1.0)
        )
    elif isinstance(node, ast.Return):
        node.value = ast.Constant(value=None)
    return ast.unparse(ast.fix_missing_locations(tree))


def run_tests(checkout: Path, tests: list[str], timeout: float) -> tuple[str, float]:
    """'pass', 'fail' or 'timeout', and the seconds taken."""
    env = dict(os.environ, PYTHONPATH=str(checkout / "src"), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-n", "0", "-p", "no:cacheprovider", *tests]
    start = time.monotonic()
    try:
        done = subprocess.run(cmd, cwd=checkout, env=env, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - start
    return ("pass" if done.returncode == 0 else "fail"), time.monotonic() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--module", required=True, help="module under src/limiting_dynamics, e.g. theory")
    ap.add_argument("--tests", nargs="+", required=True, help="test files, relative to the checkout")
    ap.add_argument("--sample", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, help="JSON file for the per-mutant outcomes")
    args = ap.parse_args()

    path = args.checkout / "src" / "limiting_dynamics" / f"{args.module}.py"
    original = path.read_text()
    sites = mutation_sites(ast.parse(original))
    sample = random.Random(args.seed).sample(sites, min(args.sample, len(sites)))
    try:  # the clean run on the unparsed module: a mutant differs from it by its mutation only
        path.write_text(ast.unparse(ast.parse(original)))
        clean, seconds = run_tests(args.checkout, args.tests, timeout=1800)
    finally:
        path.write_text(original)
    if clean != "pass":
        sys.exit(f"the tests do not pass on the unmutated (unparsed) module ({clean}); fix that first")
    timeout = 3 * seconds + 10
    print(f"{args.module}: {len(sites)} sites, {len(sample)} sampled, clean run {seconds:.1f} s", flush=True)
    outcomes = []
    try:
        for site in sample:
            path.write_text(mutate(original, site))
            outcome, took = run_tests(args.checkout, args.tests, timeout)
            outcomes.append({"mutant": site[2], "outcome": outcome, "seconds": round(took, 1)})
            print(f"  {outcome:8s} {took:6.1f} s  {site[2]}", flush=True)
    finally:
        path.write_text(original)
    killed = sum(o["outcome"] != "pass" for o in outcomes)
    n = len(outcomes)
    score = killed / n
    stderr = math.sqrt(score * (1 - score) / n)
    timeouts = sum(o["outcome"] == "timeout" for o in outcomes)
    print(f"{args.module}: killed {killed}/{n} = {score:.2f} +- {stderr:.2f} (timeouts {timeouts})")
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "module": args.module,
                    "sites": len(sites),
                    "killed": killed,
                    "sampled": n,
                    "tests": args.tests,
                    "outcomes": outcomes,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
