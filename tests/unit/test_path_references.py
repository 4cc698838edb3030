"""Every repository path named in code comments, docstrings, CI scripts and the
report captions exists (tests/integration/test_docs.py does the same for the
Markdown docs).

Scanned: the comments and docstrings of the Python files under src/, tests/ and
bench/; the comments of config/*.yaml, workflow/**/*.smk, workflow/profiles/**,
Snakefile and pyproject.toml; all of .ci/run, .ci/*.sh and workflow/report/*.rst.

A path is a token that starts with a top-level entry (src/, tests/, config/, ...,
README.md, Snakefile, ...) or a file name with a source extension (.py, .smk,
.yaml, .md, ...), bare or with a partial directory (``stages/hessian.py``): a
bare or partial name must end some file's path in the repository. A placeholder
(``{cell}``, ``*``, ``<name>``) is matched by the part before it, a suffix such
as ``::test_name``, ``:123`` or ``#anchor`` is dropped. Paths under results/ are
outputs: only their first component after results/ is checked, against the
directories and files the workflow's rules write (the ``"results/<name>`` strings
of workflow/rules/*.smk and the Snakefile), unless the path exists as is. Other
outputs the repository ignores (.gitignore: bench/*.json, report.html) need not
exist, nor the files of other packages in NOT_REPO.

Also: no file cites the paper notes or the shared folder outside the repository
(the two names are in FORBIDDEN; this file is not scanned for them).
"""

from __future__ import annotations

import ast
import fnmatch
import io
import re
import tokenize
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SKIP_DIRS = {".git", ".venv", ".snakemake", ".ruff_cache", ".pytest_cache", "__pycache__", "results"}
TOP_DIRS = ("src", "tests", "docs", "config", "workflow", "bench", "results", ".ci")
TOP_FILES = ("README.md", "CHANGELOG.md", "Snakefile", "pyproject.toml")
EXTENSIONS = ("py", "smk", "yaml", "yml", "md", "rst", "sh", "toml")
# the paper's notes and the shared folder beside the checkout: neither is in the repository
FORBIDDEN = ("PAPER" + ".md", ".." + "/shared")

# files of other packages that comments name
NOT_REPO = {"torch/version.py"}

# a run of path characters not glued to a preceding path (an absolute path, ../x, a URL, a.b/c)
TOKEN = re.compile(r"(?<![\w./~$:-])[\w.{}<>*/-]+(?:::[\w\[\]-]+)?")
TOP = re.compile(
    r"^(?:(?:"
    + "|".join(re.escape(d) for d in TOP_DIRS)
    + r")/|(?:"
    + "|".join(re.escape(f) for f in TOP_FILES)
    + r")(?![\w.]))"
)
NAMED_FILE = re.compile(r"^[\w.{}<>*/-]*[\w}>*]\.(?:" + "|".join(EXTENSIONS) + r")$")
PLACEHOLDER = re.compile(r"[{*<\[]")


def _files(root: Path = REPO) -> list[Path]:
    """Every file of the working tree, less the caches, the virtual environment and results/."""
    out = []
    for path in root.iterdir():
        if path.is_dir():
            if path.name not in SKIP_DIRS and not path.name.endswith(".egg-info"):
                out.extend(_files(path))
        elif path.is_file():
            out.append(path)
    return out


FILES = _files()
REL_FILES = sorted(str(p.relative_to(REPO)) for p in FILES)


# --- where the paths are named: (line number, text) pieces of a file ------------------------


def _hash_comments(text: str) -> list[tuple[int, str]]:
    """``# ...`` comments of a YAML/TOML/shell file: a '#' at a line's start or after a
    space, outside quotes."""
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        for m in re.finditer(r"(?:^|(?<=\s))#", line):
            before = line[: m.start()]
            if before.count('"') % 2 == 0 and before.count("'") % 2 == 0:
                out.append((n, line[m.end() :]))
                break
    return out


def _python_comments(text: str) -> list[tuple[int, str]]:
    try:
        return [
            (tok.start[0], tok.string)
            for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type == tokenize.COMMENT
        ]
    except (tokenize.TokenError, SyntaxError):
        return _hash_comments(text)


def _docstrings(text: str) -> list[tuple[int, str]]:
    """The docstrings of a Python module, one piece per line (a path does not span lines)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return []
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not node.body or not isinstance(node.body[0], ast.Expr):
            continue
        doc = node.body[0].value
        if isinstance(doc, ast.Constant) and isinstance(doc.value, str):
            out.extend((doc.lineno + i, line) for i, line in enumerate(doc.value.splitlines()))
    return out


def _lines(text: str) -> list[tuple[int, str]]:
    return list(enumerate(text.splitlines(), 1))


def _sources() -> dict[str, list[tuple[int, str]]]:
    """Every scanned file (relative path) with the pieces of it that are scanned."""
    out = {}
    for path, rel in zip(FILES, (str(p.relative_to(REPO)) for p in FILES)):
        top = rel.split("/", 1)[0]
        if path.suffix == ".py" and top in ("src", "tests", "bench"):
            text = path.read_text()
            out[rel] = _python_comments(text) + _docstrings(text)
        elif (path.suffix == ".smk" and top == "workflow") or rel == "Snakefile":
            out[rel] = _python_comments(path.read_text())
        elif (
            (top == "config" and "/" not in rel[len("config/") :] and path.suffix == ".yaml")
            or rel.startswith("workflow/profiles/")
            or rel == "pyproject.toml"
        ):
            out[rel] = _hash_comments(path.read_text())
        elif rel == ".ci/run" or (top == ".ci" and path.suffix == ".sh"):
            out[rel] = _lines(path.read_text())
        elif rel.startswith("workflow/report/") and path.suffix == ".rst" and rel.count("/") == 2:
            out[rel] = _lines(path.read_text())
    return out


# --- which tokens are paths, and whether they exist -------------------------------------------


def _result_names() -> set[str]:
    """The first component after results/ of every output the workflow's rules name."""
    texts = [p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk")]
    texts.append((REPO / "Snakefile").read_text())
    return {m for t in texts for m in re.findall(r"""["']results/([\w.-]+)""", t)}


RESULT_NAMES = _result_names()


def _clean(token: str) -> str:
    token = token.split("::", 1)[0]
    token = re.sub(r":\d+(?:-\d+)?$", "", token)  # a line number
    token = token.split("#", 1)[0]
    return token.rstrip(".,;:-")


def path_tokens(text: str) -> list[str]:
    """The tokens of text that name a repository path, cleaned of suffixes."""
    out = []
    for m in TOKEN.finditer(text):
        token = _clean(m.group())
        if ".." in token.split("/"):
            continue
        if TOP.match(token) or NAMED_FILE.match(token):
            out.append(token)
    return out


def _ignored_patterns() -> list[str]:
    """The .gitignore patterns of files (outputs and caches), less results/ (checked apart)."""
    lines = (REPO / ".gitignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and ln[0] not in "#!" and not ln.startswith("results/")]


IGNORED = _ignored_patterns()


def _exists(token: str) -> bool:
    if token in NOT_REPO or (REPO / token).exists():
        return True
    if token.startswith("results/"):
        first = token[len("results/") :].split("/", 1)[0]
        first = first[: m.start()] if (m := PLACEHOLDER.search(first)) else first + "/"
        return any((name + "/").startswith(first) for name in RESULT_NAMES)
    if any(fnmatch.fnmatch(token, pat) or fnmatch.fnmatch(Path(token).name, pat) for pat in IGNORED):
        return True
    placeholder = PLACEHOLDER.search(token)
    if TOP.match(token):
        if not placeholder:
            return False
        parent, _, stem = token[: placeholder.start()].rpartition("/")
        return (REPO / parent).is_dir() and any(p.name.startswith(stem) for p in (REPO / parent).iterdir())
    # a file name alone or under a partial directory: some file's path ends with it
    if placeholder:
        head = token[: placeholder.start()]
        return any(("/" + head) in ("/" + rel) for rel in REL_FILES)
    return any(rel == token or rel.endswith("/" + token) for rel in REL_FILES)


def dangling(sources: dict[str, list[tuple[int, str]]]) -> list[str]:
    """``file:line -> path`` for every named path that does not exist."""
    out = []
    for rel, pieces in sorted(sources.items()):
        for line, text in sorted(pieces):
            out.extend(f"{rel}:{line} -> {tok}" for tok in path_tokens(text) if not _exists(tok))
    return out


def test_path_tokens_recognised():
    """The scanner finds the kinds of reference it should, and leaves the rest alone."""
    text = (
        "see tests/unit/test_spectra.py::test_top, src/limiting_dynamics/x.py:12, "
        "`results/{cell}/theta0.pt`, common.smk, stages/hessian.py and README.md#install; "
        "not /etc/slurm/slurm.conf, ../x/y.py, https://example.org/a.py, 1.5, e.g., x/y"
    )
    assert path_tokens(text) == [
        "tests/unit/test_spectra.py",
        "src/limiting_dynamics/x.py",
        "results/{cell}/theta0.pt",
        "common.smk",
        "stages/hessian.py",
        "README.md",
    ]
    assert _exists("tests/unit/test_*.py") and _exists("results/runs/{cell}/theta0.pt")
    assert not _exists("results/nowhere/x.nc") and not _exists("tests/test_readme.py")
    assert not _exists("no_such_module.py") and _exists("stages/hessian.py")
    assert dangling({"x.py": [(3, "see tests/nowhere.py and tests/conftest.py")]}) == ["x.py:3 -> tests/nowhere.py"]


def test_named_paths_exist():
    sources = _sources()
    assert len(sources) > 50, f"only {len(sources)} files scanned: did the layout change?"
    missing = dangling(sources)
    assert not missing, "named paths that do not exist:\n" + "\n".join(missing)


def test_nothing_outside_the_repository_cited():
    me = Path(__file__).resolve()
    cites = []
    for path in FILES:
        if path.resolve() == me:
            continue
        for n, line in enumerate(path.read_bytes().decode("utf-8", "replace").splitlines(), 1):
            cites.extend(f"{path.relative_to(REPO)}:{n} -> {name}" for name in FORBIDDEN if name in line)
    assert not cites, "cites a file outside the repository:\n" + "\n".join(cites)
