"""Patch-level analysis of the pre-pooling grid (paper A.8, Figs. 9–10).

* :func:`correspondence`: cosine similarity of every cell of one image with every
  cell of another, and the most similar pairs (Fig. 9); :func:`correspondence_figure`.
* A searchable patch index over a dataset, on FAISS (the ``patches`` extra):
  :func:`build_index` (resumable, shardable over ``torch.distributed.run``),
  :class:`PatchIndex` (open and search), :func:`query_image` (a cell or box of an
  image), :func:`contact_sheet` (the retrieved patches, each outlined in its image),
  :func:`write_index_map` (a UMAP of the vectors as an offline page).

Everything works with a bare backbone (no head) as well as with a classifier.

Example:
    >>> import timm, torch
    >>> from dense_readout.patches import correspondence
    >>> model = timm.create_model("test_resnet", num_classes=0).eval()
    >>> result = correspondence(model, torch.rand(3, 96, 96), torch.rand(3, 96, 96), top=4)
    >>> len(result.pairs), tuple(result.similarity.shape)
    (4, (9, 9))
"""

from .contact_sheet import contact_sheet
from .correspondence import Correspondence, Pair, correspondence
from .figures import correspondence_figure, save_correspondence_figure
from .grid import GridExtractor, cell_boxes, normalise_rows
from .index_build import build_index
from .index_map import write_index_map
from .index_merge import INDEX_KINDS, merge_index
from .index_query import Hit, PatchIndex, QueryResult, query_image

__all__ = [
    "INDEX_KINDS",
    "Correspondence",
    "GridExtractor",
    "Hit",
    "Pair",
    "PatchIndex",
    "QueryResult",
    "build_index",
    "cell_boxes",
    "contact_sheet",
    "correspondence",
    "correspondence_figure",
    "merge_index",
    "normalise_rows",
    "query_image",
    "save_correspondence_figure",
    "write_index_map",
]
