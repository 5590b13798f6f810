"""Print (or write into docs/lrp.md) the LRP family table generated from the registry.

The table lists every record of ``dense_readout.lrp.families.FAMILIES``: which model
modules a family covers, whether it is supported, its default composite, its block
forwards and its rules. ``docs/lrp.md`` holds the output between the markers
``<!-- lrp-families:start -->`` and ``<!-- lrp-families:end -->``;
``tests/test_lrp_families.py`` fails if the two differ.

Usage:

    python benchmarks/lrp_families_table.py            # print the table
    python benchmarks/lrp_families_table.py --write    # replace it in docs/lrp.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

START, END = "<!-- lrp-families:start -->", "<!-- lrp-families:end -->"
DOC = Path(__file__).resolve().parents[1] / "docs" / "lrp.md"


def replace_table(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table}{END}{tail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"replace the table in {DOC}")
    args = parser.parse_args()
    from dense_readout.lrp.families import family_table

    table = family_table()
    if args.write:
        DOC.write_text(replace_table(DOC.read_text(encoding="utf-8"), table), encoding="utf-8")
        print(f"wrote the family table ({table.count(chr(10)) - 2} families) into {DOC}")
    else:
        print(table, end="")


if __name__ == "__main__":
    main()
