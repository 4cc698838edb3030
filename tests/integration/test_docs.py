"""Every command and repository path in the README and docs/ works when copied.

The fenced ``bash``/``sh``/``console`` blocks of README.md and docs/*.md run as
written in bash, in a copy of the workflow with the default config, except that
the costly commands are replaced by what checks them: ``snakemake ...`` runs as a
dry run (``-n``), ``limiting-dynamics STAGE`` with ``--help``, ``python`` and
``bash`` scripts and ``pytest`` paths must exist, and ``pip`` and ``ruff`` do
nothing (CI installs and lints anyway). A block preceded by a
``<!-- not-tested: why -->`` comment is skipped. Every repository path named in
backticks and every relative link (with its #anchor) must exist.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import run_path

REPO = Path(__file__).resolve().parents[2]
COMMAND_DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PATH_DOCS = [*COMMAND_DOCS, REPO / "config" / "README.md", REPO / "bench" / "README.md", REPO / "CHANGELOG.md"]
SHELLS = {"bash", "sh", "console", "shell"}
REPO_PATH = re.compile(r"^(?:config|workflow|docs|src|tests|bench)/[\w./-]*$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")

# Stand-ins for the commands a check must not run for real; each fails the block with a message.
PRELUDE = r"""
set -euo pipefail
fail() { echo "FAILED: $*" >&2; exit 1; }
exists() { [[ -e "$REPO/$1" || -e "$1" ]] || fail "no such path: $1"; }
snakemake() {
  local args=() skip=0 a out
  for a in "$@"; do  # a report needs finished results: plan the run instead
    if [[ $skip == 1 ]]; then skip=0; continue; fi
    if [[ $a == --report || $a == --cores ]]; then skip=1; continue; fi
    [[ $a == -n || $a == --dry-run ]] || args+=("$a")
  done
  # the same plan in another block is checked once (each dry run costs seconds of startup)
  local done="$CHECKED/$(printf '%s ' "${args[@]}" "$(cat my.yaml 2>/dev/null)" | sha1sum | cut -c1-16)"
  [[ -e $done ]] && return 0
  out=$(command snakemake "${args[@]}" -n --quiet 2>&1) || { printf '%s\n' "$out" >&2; fail "snakemake $*"; }
  : >"$done"
}
limiting-dynamics() { command limiting-dynamics "$1" --help >/dev/null || fail "limiting-dynamics $1"; }
python() { [[ ${1:-} == *.py ]] || fail "python $* (only scripts are checked)"; exists "$1"; }
bash() { exists "$1"; }
pytest() { local a; for a in "$@"; do [[ $a == tests* ]] && exists "$a"; done; return 0; }
pip() { :; }
ruff() { :; }
cp() {  # sources under results/ come from the (dry) run; the destination must exist
  local a; for a in "$@"; do [[ $a == results/* || $a == -* ]] || exists "$a"; done; return 0
}
"""


@dataclass
class Block:
    doc: str
    line: int
    code: str
    tested: bool

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}"


def shell_blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(2):
            i += 1 if not m else _skip_fence(lines, i)
            continue
        indent, lang, start = len(m.group(1)), m.group(2), i
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        body = [ln[indent:] for ln in lines[i + 1 : end]]
        i = end + 1
        if lang not in SHELLS:
            continue
        if lang == "console":
            body = [ln[2:] for ln in body if ln.startswith("$ ")]
        prev = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        rel = str(path.relative_to(REPO))
        blocks.append(Block(rel, start + 1, "\n".join(body), not prev.startswith("<!-- not-tested")))
    return blocks


def _skip_fence(lines: list[str], i: int) -> int:
    """Length of an unlabelled fenced block starting at line i."""
    return next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```") - i + 1


BLOCKS = [b for doc in COMMAND_DOCS for b in shell_blocks(doc)]


def _run(block: Block, root: Path) -> subprocess.CompletedProcess:
    work = root / f"{block.doc.replace('/', '_')}_{block.line}"
    work.mkdir()
    shutil.copy(REPO / "Snakefile", work / "Snakefile")
    for d in ("workflow", "config"):
        shutil.copytree(REPO / d, work / d)
    env = {
        **os.environ,
        "REPO": str(REPO),
        "CHECKED": str(root),
        "PATH": run_path(),
    }
    return subprocess.run(
        ["bash", "-c", PRELUDE + block.code], cwd=work, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    """Every tested block, run two at a time (each dry run spends seconds building the default's DAG)."""
    root = tmp_path_factory.mktemp("docs")
    tested = [b for b in BLOCKS if b.tested]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(map(str, tested), pool.map(lambda b: _run(b, root), tested)))


def test_docs_have_commands():
    assert len(BLOCKS) >= 5, "no shell blocks found: did the fence syntax change?"
    skipped = [str(b) for b in BLOCKS if not b.tested]
    assert len(skipped) <= 4, f"too many blocks marked not-tested: {skipped}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.tested], ids=str)
def test_command_block_runs(block: Block, outcomes):
    proc = outcomes[str(block)]
    assert proc.returncode == 0, f"{block} failed:\n{block.code}\n--- stderr ---\n{proc.stderr[-3000:]}"


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown file."""
    out = set()
    for ln in path.read_text().splitlines():
        if ln.startswith("#"):
            title = ln.lstrip("#").strip().lower().replace("`", "")
            out.add(re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", title)))
    return out


def _prose(text: str) -> str:
    """The text outside fenced blocks (their commands are run, not parsed)."""
    return re.sub(r"^\s*```.*?^\s*```\s*$", "", text, flags=re.S | re.M)


@pytest.mark.parametrize("doc", PATH_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_paths_and_links_exist(doc: Path):
    text = _prose(doc.read_text())
    missing = []
    for span in re.findall(r"`([^`\n]+)`", text):
        for token in span.split():
            token = token.rstrip(".,;:)")
            if REPO_PATH.match(token) and ".." not in token and not (REPO / token).exists():
                missing.append(token)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            missing.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            missing.append(target)
    assert not missing, f"{doc.relative_to(REPO)} names what does not exist: {missing}"
