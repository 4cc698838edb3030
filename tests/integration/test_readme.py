"""The README's two commands are the ones CI and users run, and the README stays a front door."""

from conftest import REPO

TEST_COMMAND = 'pip install -e ".[test]" && pytest'


RUN_COMMAND = 'pip install -e ".[test]" && snakemake --workflow-profile workflow/profiles/workstation'


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert TEST_COMMAND in readme and RUN_COMMAND in readme
    assert ci.strip().splitlines()[-1] == TEST_COMMAND


def test_readme_is_short():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move details to docs/"
