"""The paper's other experiments.

* Synthetic single-label multi-object scenes (paper 4.4, A.2): the 20 symbol
  classes (:mod:`.synthetic_symbols`), the scene generator and its on-disk form
  (:mod:`.synthetic`), training recipes (:mod:`.synthetic_recipes`), data
  (:mod:`.synthetic_data`), metrics (:mod:`.synthetic_metrics`), the training
  loop (:mod:`.synthetic_train`, which re-exports the names of the three before
  it) and figures (:mod:`.figures`).
* The MS-COCO frozen-backbone linear probe (paper 4.3, A.1): annotations
  (:mod:`.coco_annotations`), the feature cache (:mod:`.coco_features`) and the
  probe (:mod:`.coco`, which re-exports both).
"""
