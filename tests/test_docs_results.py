"""Every measured number in the docs is rendered from a JSON in ``docs/results``.

A table or sentence that quotes a result sits between two markers in the Markdown::

    <!-- results: docs/results/speed.json speed.markdown_table -->
    | model | batch | ... |
    <!-- /results -->

The first names the JSON (written by the benchmark script, with its command line in
``provenance``) and a renderer ``MODULE.FUNCTION``: a function in ``benchmarks/MODULE.py``
that takes the parsed JSON and returns the Markdown between the markers. The test
re-renders every block and fails when the text in the docs differs, so a number pasted
by hand, or a JSON rewritten by a rerun without updating the docs, is caught.

To register a table (e.g. the LRP helper's speed/conservation tables in docs/lrp.md):
write ``def my_table(data: dict) -> str`` in your benchmark script (pure: JSON in,
Markdown out; no model loading at import), put the two markers around the table, and
fill it with ``python tests/test_docs_results.py --write docs/lrp.md`` (rewrites the
blocks of the docs named, or of all docs without names, from their JSON). Then add
the JSON to ``REQUIRED`` below so deleting its markers fails too.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(
    r"<!-- results: (?P<json>\S+) (?P<module>\w+)\.(?P<function>\w+) -->\n"
    r"(?P<body>.*?)\n?<!-- /results -->",
    re.DOTALL,
)
# every JSON the docs quote; a block that disappears from the docs fails the test
REQUIRED = {
    "docs/results/attack_chelsea.json",
    "docs/results/attack_cells.json",
    "docs/results/attack_timing.json",
    "docs/results/speed.json",
    "docs/results/speed_torchvision.json",
    "docs/results/compare_speed.json",
    "docs/results/compare_lite0.json",
    "docs/results/compare_lite1.json",
    "docs/results/compare_lite0_road.json",
    "docs/results/quantus_ilsvrc.json",
    "docs/results/synthetic_step_rate.json",
    "docs/results/synthetic_cpu2h_resnet18.json",
    "docs/results/synthetic_cpu2h_resnet18_test.json",
    "docs/results/synthetic_cpu2h_resnet18_fixed.json",
    "docs/results/synthetic_cpu2h_resnet18_fixed_test.json",
    "docs/results/ilsvrc_sample_model.json",
    "docs/results/lrp_speed.json",
    "docs/results/lrp_conservation_torchvision.json",
    "docs/results/lrp_conservation_timm.json",
    "docs/results/export_ilsvrc.json",
    "docs/results/export_ilsvrc_paired.json",
    "docs/results/pseudo_labels_coco.json",
}


@dataclass(frozen=True)
class Block:
    """One marked region of a Markdown file."""

    doc: Path
    line: int
    json_path: str
    renderer: str
    body: str
    span: tuple[int, int]

    @property
    def label(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"


def find_blocks(doc: Path, text: str | None = None) -> list[Block]:
    """The marked blocks of ``doc`` (or of ``text``, read as if it were ``doc``)."""
    text = doc.read_text() if text is None else text
    return [
        Block(
            doc=doc,
            line=text.count("\n", 0, m.start()) + 1,
            json_path=m["json"],
            renderer=f"{m['module']}.{m['function']}",
            body=m["body"],
            span=m.span("body"),
        )
        for m in BLOCK.finditer(text)
    ]


def renderer(name: str) -> Callable[[dict], str]:
    """``MODULE.FUNCTION`` from ``benchmarks/MODULE.py``."""
    module, function = name.split(".")
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))  # the scripts import their siblings
    return getattr(importlib.import_module(module), function)


def render(block: Block) -> str:
    data = json.loads((ROOT / block.json_path).read_text())
    return renderer(block.renderer)(data).strip("\n")


def mismatch(block: Block) -> str | None:
    """``None`` when the docs' text equals the rendering of the JSON, else a diff note."""
    if not (ROOT / block.json_path).is_file():
        return f"{block.label}: {block.json_path} does not exist; run the script that writes it."
    expected = render(block)
    if block.body.strip("\n") == expected:
        return None
    return (
        f"{block.label}: the text differs from {block.renderer}({block.json_path}); "
        f"run `python tests/test_docs_results.py --write` after rerunning the script.\n"
        f"--- docs\n{block.body}\n--- from the JSON\n{expected}"
    )


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def all_blocks() -> list[Block]:
    return [block for doc in documents() for block in find_blocks(doc)]


def write_all(only: list[str] | None = None) -> None:
    """Rewrite every block from its JSON (the ``--write [DOC...]`` command)."""
    for doc in documents():
        if only and str(doc.relative_to(ROOT)) not in only:
            continue  # other docs may be another author's work in progress
        text = doc.read_text()
        for block in reversed(find_blocks(doc, text)):  # from the end: spans stay valid
            if not (ROOT / block.json_path).is_file():
                print(f"{block.label}: skipped, {block.json_path} does not exist yet")
                continue
            start, end = block.span
            text = text[:start] + render(block) + "\n" + text[end:].lstrip("\n")
        doc.write_text(text)


BLOCKS = all_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[block.label for block in BLOCKS])
def test_docs_text_equals_its_json(block):
    problem = mismatch(block)
    assert problem is None, problem


def test_every_quoted_json_is_marked_in_the_docs():
    quoted = {block.json_path for block in BLOCKS}
    assert quoted >= REQUIRED, f"no marked block quotes {sorted(REQUIRED - quoted)}"


@pytest.mark.parametrize("path", sorted(REQUIRED))
def test_every_result_records_how_it_was_made(path):
    data = json.loads((ROOT / path).read_text())
    # written by benchmarks/_results.write_results (or a script's own top-level "command"),
    # the evaluation runner's settings, or the compare command's own run record
    command = (
        data.get("provenance", {}).get("command")
        or data.get("command")
        or data.get("settings", {})
        or data.get("config", {}).get("run", {}).get("command")
    )
    assert command, f"{path} does not record the command that wrote it"


def test_a_changed_number_is_caught():
    """The check can fail: change one digit of a rendered block and it does."""
    block = next(b for b in BLOCKS if re.search(r"\d", b.body))
    doc_text = block.doc.read_text()
    start, end = block.span
    digit = re.search(r"\d", doc_text[start:end])
    assert digit is not None
    at = start + digit.start()
    changed = doc_text[:at] + str((int(doc_text[at]) + 1) % 10) + doc_text[at + 1 :]
    (mutated,) = [b for b in find_blocks(block.doc, changed) if b.span == block.span]
    assert mismatch(block) is None and mismatch(mutated) is not None


def test_an_unmarked_edit_outside_blocks_is_not_flagged():
    """Prose around a block is free text: only the marked region is compared."""
    block = next(b for b in BLOCKS if (ROOT / b.json_path).is_file())
    text = block.doc.read_text()
    edited = "A new first line.\n" + text
    (moved,) = [b for b in find_blocks(block.doc, edited) if b.line == block.line + 1]
    assert mismatch(moved) is None


if __name__ == "__main__":
    if sys.argv[1:2] != ["--write"]:
        raise SystemExit("usage: python tests/test_docs_results.py --write [docs/x.md ...]")
    write_all(sys.argv[2:])
