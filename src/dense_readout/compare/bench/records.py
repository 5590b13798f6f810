"""Per-image records as JSON lines: appended per batch, fsynced, resumable after SIGKILL.

A record file starts with a header line holding the run's settings fingerprint.
Each batch appends its rows (one per image and method), then a marker line
``{"batch": b, "done": true, "skipped": [...]}``; lines after the last marker (a
batch cut off by a kill, possibly half a line) are dropped when the file is
opened again, so a batch is either fully in the file or recomputed.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "rank0-of-1.jsonl"
    >>> records = RecordFile(path, "abc")
    >>> records.write_batch(0, [{"position": 0, "method": "cam", "loc": 0.5}])
    >>> records.close()
    >>> with open(path, "a") as handle:
    ...     _ = handle.write('{"position": 1, "meth')  # a kill mid-line
    >>> again = RecordFile(path, "abc")
    >>> sorted(again.done), [row["loc"] for row in again.rows]
    ([0], [0.5])
    >>> again.close()
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ...errors import DenseReadoutError

__all__ = ["RecordFile", "read_all_records", "read_records"]


def _parse(lines: list[str]) -> tuple[dict | None, list[dict], set[int], list[dict], int]:
    """Header, rows and done batches up to the last complete marker; its byte length."""
    header, rows, done, skipped = None, [], set(), []
    pending: list[dict] = []
    length = kept = 0
    for line in lines:
        length += len(line.encode())
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            break
        if not line.endswith("\n"):
            break
        if header is None and "fingerprint" in entry:
            header, kept = entry, length
        elif entry.get("done"):
            rows.extend(pending)
            pending = []
            done.add(int(entry["batch"]))
            skipped.extend(entry.get("skipped", []))
            kept = length
        else:
            pending.append(entry)
    return header, rows, done, skipped, kept


def read_records(path: Path) -> tuple[dict | None, list[dict], set[int], list[dict]]:
    """``(header, rows, done batches, skipped items)`` of one record file (complete batches only)."""
    if not path.is_file():
        return None, [], set(), []
    with open(path, encoding="utf-8") as handle:
        header, rows, done, skipped, _ = _parse(handle.readlines())
    return header, rows, done, skipped


def read_all_records(directory: Path, world_size: int) -> dict[str, Any]:
    """Rows and skipped items of every rank of a run, sorted by (position, method order)."""
    rows: list[dict] = []
    skipped: list[dict] = []
    for rank in range(world_size):
        _, part, _, missed = read_records(Path(directory) / f"rank{rank}-of-{world_size}.jsonl")
        rows.extend(part)
        skipped.extend(missed)
    rows.sort(key=lambda row: row["position"])  # stable: method order kept within an image
    skipped.sort(key=lambda item: item["position"])
    return {"rows": rows, "skipped": skipped}


class RecordFile:
    """One process's record file, opened for appending (resumed when ``resume``)."""

    def __init__(self, path: Path, fingerprint: str, resume: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        self.done: set[int] = set()
        header, kept = None, 0
        if resume and self.path.is_file():
            with open(self.path, encoding="utf-8") as handle:
                header, self.rows, self.done, _, kept = _parse(handle.readlines())
            if header is not None and header["fingerprint"] != fingerprint:
                raise DenseReadoutError(
                    f"{self.path} belongs to a run with other settings; use the same arguments "
                    f"to resume, or another --out directory (or --no-resume) to start afresh."
                )
        if header is None:
            self.rows, self.done, kept = [], set(), 0
        if kept:
            os.truncate(self.path, kept)  # drop a batch cut off by a kill
        self.handle = open(self.path, "a" if kept else "w", encoding="utf-8")  # noqa: SIM115
        if header is None:
            self._write([{"fingerprint": fingerprint}])

    def _write(self, entries: list[dict]) -> None:
        for entry in entries:
            self.handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def write_batch(self, number: int, rows: list[dict], skipped: list[dict] | None = None) -> None:
        """Append a batch's rows and its completion marker (flushed and fsynced)."""
        self._write([*rows, {"batch": number, "done": True, "skipped": skipped or []}])
        self.rows.extend(rows)
        self.done.add(number)

    def close(self) -> None:
        """Close the file (everything written is already on disk)."""
        self.handle.close()
