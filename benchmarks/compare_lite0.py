"""Renderers for docs/compare.md: the table and sentences quoted from ``compare_lite0.json``.

``docs/results/compare_lite0.json`` is the ``results.json`` that ``dense-readout compare``
wrote (its command is inside, under ``config.run.command``); these pure functions turn it
into the Markdown between the ``<!-- results: ... -->`` markers of docs/compare.md, and
``tests/test_docs_results.py`` re-renders them, so no number in that page is pasted by hand.

    python tests/test_docs_results.py --write docs/compare.md
"""

from __future__ import annotations

from dense_readout.compare.bench.report import markdown_table as _markdown_table

__all__ = ["command_block", "markdown_table", "what_ran"]


def command_block(data: dict) -> str:
    """The command that wrote the JSON, as the docs show it."""
    return f"```bash\n{data['config']['run']['command']}\n```"


def markdown_table(data: dict) -> str:
    """One row per method, every metric with its bootstrap 95 % interval."""
    return _markdown_table(data)


def _count(data: dict, method: str, metric: str) -> int:
    return int(data.get("images", {}).get(method, {}).get(metric, 0))


def what_ran(data: dict) -> str:
    """How many images each axis got, from the counts in the JSON (not from the command)."""
    run = data["config"]["run"]
    fast = run["methods"]
    slow = run.get("slow_methods", [])
    first = fast[0]
    skipped = len(data.get("skipped", []))
    parts = [
        f"{len(fast)} methods on the ILSVRC sample ({run['images']:,} images, {skipped} skipped "
        "because their boxes fall outside the crop)",
        f"localization and cost on **{_count(data, first, 'pointing_game'):,}** images",
        f"faithfulness (deletion/insertion, {data['config']['config']['steps']} steps) and "
        f"sanity (MPRT, random logit) on the first **{_count(data, first, 'deletion_auc'):,}**",
        f"ROAD on the first **{_count(data, first, 'road_combined'):,}**",
    ]
    for name in slow:
        parts.append(
            f"`{name}` on the first **{_count(data, name, 'pointing_game'):,}** with every axis"
        )
    threads = int(run["threads"])
    return "; ".join(parts) + f" ({threads} thread{'' if threads == 1 else 's'} per process)."
