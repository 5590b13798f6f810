"""What every benchmark JSON in ``docs/results`` carries: how it was made, and where.

The docs quote numbers only from these files (``tests/test_docs_results.py`` checks
it), so each file records the exact command, the versions, the thread count and the
machine with its load: a reader can rerun the command and compare like with like.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["provenance", "write_results"]


def provenance(threads: int | None = None) -> dict[str, Any]:
    """The command line, versions, threads and machine of this process."""
    import torch

    import dense_readout

    return {
        "command": " ".join(shlex.quote(part) for part in ["python", *sys.argv]),
        "date_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "dense_readout": getattr(dense_readout, "__version__", "unknown"),
        },
        "threads": threads if threads is not None else torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            # other jobs share the machine: absolute times are read with this in mind
            "load_average_1min": round(os.getloadavg()[0], 2),
        },
    }


def write_results(path: str | Path, payload: dict[str, Any], threads: int | None = None) -> Path:
    """Write ``payload`` plus :func:`provenance` as indented JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {**payload, "provenance": provenance(threads)}
    partial = path.with_suffix(path.suffix + ".partial")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    partial.replace(path)  # a kill never leaves half a file
    print(f"wrote {path}")
    return path
