"""Regenerate the tables in docs/ that are generated from the code.

    python docs/generate_tables.py            # print the generated tables
    python docs/generate_tables.py --write    # rewrite them in place, between their markers
    python docs/generate_tables.py --check    # print a diff and exit 1 when a table is stale

A generated table lives between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in its
file; everything outside the markers is left alone. Tables:

- ``metrics`` in docs/metrics.md: ``trainer.objectives.METRICS`` (name, direction,
  description), in the order it is declared.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
if str(ROOT) not in sys.path:  # `python docs/generate_tables.py` puts docs/ first, not the root
    sys.path.insert(0, str(ROOT))


def _cell(text: str) -> str:
    """Text safe in a Markdown table cell: `|` would end the cell, `*` start emphasis."""
    return re.sub(r"([\\|*])", r"\\\1", " ".join(text.split()))


def metrics_table() -> str:
    """The table of metric names and optimisation directions, from the code."""
    from trainer.objectives import METRICS

    rows = ["| metric | direction | what it measures |", "|---|---|---|"]
    for name, spec in METRICS.items():
        rows.append(f"| `{name}` | {spec.direction} | {_cell(spec.description)} |")
    return "\n".join(rows) + "\n"


#: marker name -> (file, renderer)
TABLES: dict[str, tuple[Path, Callable[[], str]]] = {
    "metrics": (DOCS / "metrics.md", metrics_table),
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_table(text: str, name: str, table: str) -> str:
    """``text`` with the block between ``name``'s markers replaced by ``table``."""
    begin, end = markers(name)
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"expected one {begin} ... {end} pair")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{table}{end}{tail}"


def updated() -> dict[Path, tuple[str, str]]:
    """For every file holding a generated table: (current text, text with fresh tables)."""
    out: dict[Path, tuple[str, str]] = {}
    for name, (path, render) in TABLES.items():
        old = out[path][0] if path in out else path.read_text()
        new = out[path][1] if path in out else old
        out[path] = (old, replace_table(new, name, render()))
    return out


def stale() -> list[str]:
    """Unified diffs of every file whose generated tables differ from the code."""
    diffs = []
    for path, (old, new) in updated().items():
        if old != new:
            rel = path.relative_to(ROOT).as_posix()
            diffs.append("".join(difflib.unified_diff(
                old.splitlines(keepends=True), new.splitlines(keepends=True),
                f"a/{rel}", f"b/{rel}")))
    return diffs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="rewrite the tables in place")
    mode.add_argument("--check", action="store_true",
                      help="print a diff and exit 1 when a table is out of date")
    args = p.parse_args(argv)
    if args.check:
        diffs = stale()
        sys.stdout.write("".join(diffs))
        if diffs:
            print("generated tables are stale: run python docs/generate_tables.py --write",
                  file=sys.stderr)
        return 1 if diffs else 0
    if args.write:
        for path, (old, new) in updated().items():
            if old != new:
                path.write_text(new)
                print(f"wrote {path.relative_to(ROOT).as_posix()}")
        return 0
    for name, (path, render) in TABLES.items():
        print(f"{name} ({path.relative_to(ROOT).as_posix()}):\n{render()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
