"""The paper's other experiments: the synthetic single-label multi-object study
(:mod:`.synthetic`, :mod:`.synthetic_train`) and the MS-COCO frozen-backbone
linear probe (:mod:`.coco`)."""
