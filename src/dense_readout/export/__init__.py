"""All-class maps at dataset scale: an export store, its reader, and the WSSS multi-scale option.

* :func:`export_dataset` streams a dataset (:func:`open_source`: plain folder,
  ILSVRC, COCO) through a :class:`~dense_readout.DenseReadout` into one chunked store
  (Zarr v2 format, :mod:`.store_layout`); resumable, sharded under ``torch.distributed.run``.
* :func:`open_store` reads it back (:class:`ExportStore`); zarr-python or NumPy read it too.
* :mod:`.geometry` maps cells back onto the original image's pixels.

The command line is ``dense-readout export`` (:mod:`dense_readout.commands.export`).

Example:
    >>> from dense_readout.export import ClassSelection
    >>> ClassSelection.parse("topk:5")
    ClassSelection(kind='topk', count=5, fixed=())
"""

from __future__ import annotations

from .geometry import GEOMETRY_FIELDS, cell_box, geometry_record, to_original
from .maps import ClassSelection, readout_maps
from .reader import ExportStore, open_store
from .sources import SOURCES, ExportSource, detect_source, open_source, register_source
from .store_layout import FORMAT, STATUS, StoreLayout
from .writer import ExportConfig, export_dataset

open = open_store

__all__ = [
    "FORMAT",
    "GEOMETRY_FIELDS",
    "SOURCES",
    "STATUS",
    "ClassSelection",
    "ExportConfig",
    "ExportSource",
    "ExportStore",
    "StoreLayout",
    "cell_box",
    "detect_source",
    "export_dataset",
    "geometry_record",
    "open",
    "open_source",
    "open_store",
    "readout_maps",
    "register_source",
    "to_original",
]
