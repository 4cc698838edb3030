"""The targets table of two results pages side by side (run by hand).

    python bench/compare_targets.py PAGE_A PAGE_B [--names NAME_A NAME_B]

Reads the "## Targets" table that ``limiting-dynamics tables`` writes at the
top of each page and prints one Markdown table: each target, what each page
measured and whether it was met, and whether the verdict is the same. Use it
to see which findings hold on two machines (or seeds, or commits).
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
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--names", nargs=2, default=("A", "B"))
    args = ap.parse_args()
    a, b = targets(args.a), targets(args.b)
    na, nb = args.names
    print(f"| target | {na} | met | {nb} | met | same verdict |")
    print("|---|---|---|---|---|---|")
    for key in list(a) + [k for k in b if k not in a]:
        ma, oka = a.get(key, ("(absent)", ""))
        mb, okb = b.get(key, ("(absent)", ""))
        print(f"| {key} | {ma} | {oka} | {mb} | {okb} | {'yes' if oka == okb else '**no**'} |")


if __name__ == "__main__":
    main()
