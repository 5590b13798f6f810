"""MkDocs hook: nav entries for pages that other work adds are dropped while absent.

``extra.optional_pages`` in mkdocs.yml names them; every other nav entry must exist
(``mkdocs build --strict`` fails on a missing one), so a typo is still caught.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _prune(nav: list[Any], docs_dir: Path, optional: set[str]) -> list[Any]:
    kept: list[Any] = []
    for entry in nav:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            children = _prune(value, docs_dir, optional)
            if children:
                kept.append({next(iter(entry)): children})
        elif not (value in optional and not (docs_dir / value).is_file()):
            kept.append(entry)
    return kept


def on_config(config: Any) -> Any:
    """Drop the optional pages that do not exist yet from the nav."""
    optional = set(config["extra"].get("optional_pages", []))
    config["nav"] = _prune(config["nav"], Path(config["docs_dir"]), optional)
    return config
