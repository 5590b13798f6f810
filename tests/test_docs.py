"""Every ```python block in README.md and docs/*.md runs.

Blocks of one file run in order in one namespace, in a temporary working
directory. A block whose first line is ``# needs-data`` is skipped when the real
data is absent and gets ``DATA_ROOT`` (a Path) otherwise.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from conftest import DATA_ROOT, REPO

FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _blocks(page: Path) -> list[str]:
    return FENCE.findall(page.read_text(encoding="utf-8"))


def test_docs_have_examples():
    assert sum(len(_blocks(page)) for page in PAGES) >= 5, "docs lost their runnable examples"


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p)], ids=lambda p: p.name)
def test_page_examples_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}", "DATA_ROOT": DATA_ROOT}
    for index, block in enumerate(_blocks(page)):
        if block.startswith("# needs-data") and not DATA_ROOT.is_dir():
            continue
        code = compile(block, f"{page.name}[python block {index + 1}]", "exec")
        exec(code, namespace)
    os.chdir(REPO)
