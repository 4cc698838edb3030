"""The targets table of two or more results pages side by side (run by hand).

    python bench/compare_targets.py PAGE_A PAGE_B [PAGE_C ...] [--names NAME_A NAME_B ...]

Reads the "## Targets" table that ``limiting-dynamics tables`` writes at the
top of each page and prints one Markdown table: each target, what each page
measured and whether it was met, and whether the verdict is the same on every
page. Use it to see which findings hold on several machines (or seeds, or
commits).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path


def target_name(text: str) -> str:
    """A target without its parentheses, which carry counts and ranges of the run
    (how many fits found no oscillation, the bound's range), so two runs' rows match."""
    while True:
        shorter = re.sub(r" ?\([^()]*\)", "", text)
        if shorter == text:
            return " ".join(text.split())
        text = shorter


def targets(page: Path) -> dict[str, tuple[str, str]]:
    """``{target: (measured, met)}`` from the page's targets table, keyed by :func:`target_name`."""
    rows, inside = {}, False
    for line in page.read_text().splitlines():
        if line.startswith("## "):
            inside = line.strip() == "## Targets"
            continue
        if inside and line.startswith("| ") and not line.startswith("| target |"):
            cells = [c.strip() for c in line.replace("||", "\u2016").strip().strip("|").split("|")]  # a norm ||x||
            if len(cells) >= 3:
                rows[target_name(cells[0])] = (cells[-2], cells[-1])
    if not rows:
        raise SystemExit(f"{page}: no '## Targets' table")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pages", type=Path, nargs="+")
    ap.add_argument("--names", nargs="+")
    args = ap.parse_args()
    if len(args.pages) < 2:
        ap.error("give at least two pages")
    names = args.names or [chr(ord("A") + i) for i in range(len(args.pages))]
    if len(names) != len(args.pages):
        ap.error(f"{len(args.pages)} pages but {len(names)} names")
    tables = [targets(page) for page in args.pages]
    keys = list(dict.fromkeys(k for t in tables for k in t))
    print("| target | " + " | ".join(f"{n} | met" for n in names) + " | same verdict |")
    print("|---|" + "---|---|" * len(names) + "---|")
    for key in keys:
        cells = [t.get(key, ("(absent)", "")) for t in tables]
        same = len({ok for _, ok in cells}) == 1
        print(f"| {key} | " + " | ".join(f"{m} | {ok}" for m, ok in cells) + f" | {'yes' if same else '**no**'} |")


if __name__ == "__main__":
    main()
