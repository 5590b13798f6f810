"""Localization scores on constructed maps whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dense_readout.errors import InputError
from dense_readout.localization import (
    MaxBoxAcc,
    PxAP,
    ScoreSummary,
    attribution_localisation,
    box_iou,
    boxes_from_map,
    energy_pointing_game,
    pointing_game,
    relevance_mass,
    relevance_rank,
    score_masks,
    summarise_scores,
    top_k_intersection,
)


def _square(size=40, top=10, left=10, side=10, value=1.0):
    saliency = np.zeros((size, size))
    saliency[top : top + side, left : left + side] = value
    return saliency


def _mask(size=40, top=10, left=10, side=10):
    mask = np.zeros((size, size), bool)
    mask[top : top + side, left : left + side] = True
    return mask


# -- pointing game ----------------------------------------------------------------------


def test_pointing_game_hit_miss_and_tolerance():
    saliency = np.zeros((2, 40, 40))
    saliency[0, 15, 15] = 1.0  # inside the mask
    saliency[1, 15, 25] = 1.0  # 6 px right of the mask's last column (19)
    mask = _mask()
    assert pointing_game(saliency, mask).tolist() == [1.0, 0.0]
    assert pointing_game(saliency, mask, tolerance=6).tolist() == [1.0, 1.0]
    assert pointing_game(saliency, mask, tolerance=5.9).tolist() == [1.0, 0.0]


def test_pointing_game_ties_count_any_maximum_and_empty_mask_is_nan():
    saliency = np.zeros((40, 40))
    saliency[0, 0] = saliency[12, 12] = 2.0  # two maxima, one inside
    assert pointing_game(saliency, _mask()).tolist() == [1.0]
    assert np.isnan(pointing_game(saliency, np.zeros((40, 40), bool))[0])


@pytest.mark.parametrize("offset", [0.0, 100.0])  # the tie is relative to the map's range
def test_pointing_game_rounding_ties_but_a_real_second_peak_does_not(offset):
    from dense_readout.localization import PEAK_TIE

    saliency = np.full((40, 40), offset)
    saliency[0, 0] = offset + 3.0  # the maximum, outside the mask
    inside = _mask()
    saliency[12, 12] = offset + 3.0 * (1 - PEAK_TIE / 10)  # inside, a rounding error below
    assert pointing_game(saliency, inside).tolist() == [1.0]
    saliency[12, 12] = offset + 3.0 * (1 - PEAK_TIE * 10)  # inside, really lower
    assert pointing_game(saliency, inside).tolist() == [0.0]
    assert pointing_game(np.full((40, 40), offset), inside).tolist() == [1.0]  # flat: all peaks


# -- energy / mass / rank ------------------------------------------------------------------


def test_energy_pointing_game_is_the_positive_share_inside():
    saliency = _square()  # 100 px of 1 inside
    saliency[0:5, 0:20] = 0.5  # 100 px of 0.5 outside
    saliency[30:40, 30:40] = -3.0  # negative evidence is ignored
    assert energy_pointing_game(saliency, _mask())[0] == pytest.approx(100 / 150)


def test_relevance_mass_uses_the_signed_map():
    saliency = _square()
    saliency[0:5, 0:20] = 0.5  # +50 outside
    saliency[30:35, 30:40] = -1.0  # -50 outside
    assert relevance_mass(saliency, _mask())[0] == pytest.approx(100 / 100)
    assert energy_pointing_game(saliency, _mask())[0] == pytest.approx(100 / 150)


def test_relevance_rank_counts_the_top_k_pixels():
    mask = _mask()  # k = 100
    saliency = np.zeros((40, 40))
    saliency[mask] = np.linspace(1.0, 2.0, 100)
    saliency[10:20, 10:12] = 0.1  # 20 mask pixels drop below ...
    saliency[0:2, 0:10] = 5.0  # ... 20 outside pixels
    assert relevance_rank(saliency, mask)[0] == pytest.approx(80 / 100)
    perfect = mask.astype(float)
    assert relevance_rank(perfect, mask)[0] == 1.0
    assert relevance_rank(1.0 - perfect, mask)[0] == 0.0


def test_attribution_localisation_follows_quantus_defaults():
    saliency = _square()  # +100 inside
    saliency[0:5, 0:20] = -0.5  # -50 outside: counts as +50 with abs (Quantus' default)
    assert attribution_localisation(saliency, _mask())[0] == pytest.approx(100 / 150)
    positive = attribution_localisation(saliency, _mask(), absolute=False, positive=True)
    assert positive[0] == 1.0 == energy_pointing_game(saliency, _mask())[0]
    signed = attribution_localisation(saliency, _mask(), absolute=False)  # 100 / 50 > 1
    assert np.isnan(signed[0])  # Quantus: NaN (with a warning)
    weighted = attribution_localisation(saliency, _mask(), weighted=True)
    assert weighted[0] == pytest.approx(100 / 150 * 100 / 1600)


def test_top_k_intersection_counts_the_k_highest_pixels():
    saliency = np.zeros((40, 40))
    saliency[_mask()] = 2.0  # 100 pixels inside
    saliency[0:2, 0:25] = 1.0  # 50 pixels outside, next in rank
    assert top_k_intersection(saliency, _mask(), k=100)[0] == 1.0
    assert top_k_intersection(saliency, _mask(), k=150)[0] == pytest.approx(100 / 150)
    influence = top_k_intersection(saliency, _mask(), k=100, concept_influence=True)
    assert influence[0] == pytest.approx(1600 / 100)
    with pytest.raises(InputError, match="k must be in"):
        top_k_intersection(saliency, _mask(), k=1601)


def test_rank_ties_follow_quantus_or_pixel_order():
    """A ReLU'd map whose zero plateau fills the top-|mask|: the first zero pixels are taken
    (Quantus' argsort(-s)); the earlier implementation took the last ones."""
    saliency = np.zeros((4, 4))
    saliency[3, 3] = 1.0
    mask = np.zeros((4, 4), bool)
    mask[0, :3] = True  # 3 plateau pixels at the start
    mask[3, 3] = True  # and the peak
    assert relevance_rank(saliency, mask)[0] == 1.0  # peak + zeros at indices 0, 1, 2
    assert relevance_rank(saliency, mask, ties="first")[0] == 1.0
    assert top_k_intersection(saliency, mask, k=4, ties="first")[0] == 1.0
    with pytest.raises(InputError, match="ties must be one of"):
        relevance_rank(saliency, mask, ties="last")


def test_every_metric_is_nan_on_an_empty_mask_and_summaries_count_it():
    saliency = np.stack([_square(), _square()])
    masks = np.stack([_mask(), np.zeros((40, 40), bool)])
    scores = score_masks(saliency, masks)
    for name, values in scores.items():
        assert not np.isnan(values[0]), name
        assert np.isnan(values[1]), name  # relevance_mass used to give 0.0 here
    summary = summarise_scores(scores)
    assert summary["relevance_mass"] == ScoreSummary(mean=1.0, scored=1, empty=1)
    assert summary["pointing_game"].mean == 1.0


def test_score_masks_runs_the_registry_on_a_batch_of_tensors():
    shifted = [_square(), _square(top=15, left=15), _square(top=25)]  # overlap 100, 25, 0 px
    saliency = torch.stack([torch.from_numpy(one) for one in shifted])
    scores = score_masks(saliency, torch.from_numpy(_mask()))
    assert set(scores) >= {
        "pointing_game",
        "energy_pointing_game",
        "relevance_mass",
        "relevance_rank",
    }
    assert scores["pointing_game"].tolist() == [1.0, 1.0, 0.0]  # any maximal pixel inside
    assert scores["energy_pointing_game"].tolist() == pytest.approx([1.0, 0.25, 0.0])
    assert scores["relevance_rank"].tolist() == pytest.approx([1.0, 0.25, 0.0])


def test_mask_metrics_are_a_package_registry_in_registration_order():
    from dense_readout.localization import MASK_METRICS, register_mask_metric
    from dense_readout.registry import Registry, UnknownNameError, registries

    assert isinstance(MASK_METRICS, Registry)
    assert registries()["localization metric"] is MASK_METRICS
    defaults = [
        "pointing_game",
        "energy_pointing_game",
        "relevance_mass",
        "relevance_rank",
        "attribution_localisation",
        "top_k_intersection",
    ]
    assert list(score_masks(_square(), _mask())) == defaults  # as before: registration order

    def inside(saliency, mask):
        return relevance_mass(saliency, mask)

    try:
        assert register_mask_metric("inside_for_test", inside) is inside
        scores = score_masks(_square(), _mask())
        assert list(scores) == [*defaults, "inside_for_test"]
        assert scores["inside_for_test"].tolist() == scores["relevance_mass"].tolist()
    finally:
        MASK_METRICS.unregister("inside_for_test")
    with pytest.raises(UnknownNameError, match="Unknown localization metric 'inside_for_test'"):
        MASK_METRICS.get("inside_for_test")
    with pytest.raises(InputError, match="Unknown localization metric"):
        score_masks(_square(), _mask(), ["inside_for_test"])


# -- boxes ---------------------------------------------------------------------------------


def test_box_iou_counts_pixels():
    assert box_iou(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 9, 9]]))[0, 0] == 1.0
    assert box_iou(np.array([[0, 0, 9, 9]]), np.array([[5, 0, 14, 9]]))[0, 0] == pytest.approx(
        50 / 150
    )
    assert box_iou(np.array([[0, 0, 4, 4]]), np.array([[10, 10, 12, 12]]))[0, 0] == 0.0


def test_boxes_from_map_single_and_multi_contour():
    saliency = _square(side=10)  # 10x10 blob
    saliency[30:34, 30:32] = 0.8  # a second, smaller blob
    multi = boxes_from_map(saliency, 0.5, multi_contour=True)
    assert sorted(map(tuple, multi.astype(int).tolist())) == [(10, 10, 19, 19), (30, 30, 31, 33)]
    largest = boxes_from_map(saliency, 0.5, multi_contour=False)
    assert largest.astype(int).tolist() == [[10, 10, 19, 19]]
    above = boxes_from_map(saliency, 0.9, multi_contour=True)  # 0.8 blob drops out
    assert above.astype(int).tolist() == [[10, 10, 19, 19]]
    wsol = boxes_from_map(saliency, 0.9, wsol_boxes=True)  # wsolevaluation's x + w
    assert wsol.astype(int).tolist() == [[10, 10, 20, 20]]


def test_max_box_acc_v2_on_known_maps():
    # image 1: perfect blob on its box -> IoU 1 at every threshold that keeps it
    # image 2: blob shifted right by half its width -> IoU 50/150 = 1/3 at best
    # image 3: two blobs, the small one on the box: only V2 (all contours) can find it
    maps = np.zeros((3, 40, 40))
    maps[0, 10:20, 10:20] = 1.0
    maps[1, 10:20, 15:25] = 1.0
    maps[2, 0:20, 20:40] = 1.0
    maps[2, 30:36, 2:8] = 1.0
    boxes = [np.array([[10, 10, 19, 19]]), np.array([[10, 10, 19, 19]]), np.array([[2, 30, 7, 35]])]
    v2 = MaxBoxAcc(thresholds=np.arange(0, 1, 0.01))
    ious = v2.update(maps, boxes)
    assert ious.shape == (3, 100)
    assert ious[0].max() == 1.0 and ious[1].max() == pytest.approx(1 / 3) and ious[2].max() == 1.0
    result = v2.compute()
    assert result.per_iou == pytest.approx({0.3: 1.0, 0.5: 2 / 3, 0.7: 2 / 3})
    assert result.v2 == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    v1 = MaxBoxAcc(thresholds=np.arange(0, 1, 0.01), multi_contour=False)
    v1.update(maps, boxes)
    assert v1.compute().per_iou[0.5] == pytest.approx(1 / 3)  # the large blob wins image 3


def test_max_box_acc_picks_the_best_threshold_of_a_graded_map():
    # a pyramid: only a high threshold isolates the 10x10 core that matches the box
    saliency = np.zeros((40, 40))
    saliency[0:40, 0:40] = 0.2
    saliency[5:25, 5:25] = 0.5
    saliency[10:20, 10:20] = 1.0
    metric = MaxBoxAcc(iou_thresholds=(0.9,), thresholds=np.arange(0, 1, 0.05))
    ious = metric.update(saliency, [np.array([[10, 10, 19, 19]])])
    result = metric.compute()
    assert result.per_iou[0.9] == 1.0
    # min-max puts the plateau at 0.375 (uint8 95): the first τ with int(τ·255) >= 95 is 0.4
    assert result.best_threshold[0.9] == pytest.approx(0.4)
    # τ = 0 keeps every pixel above the minimum: the 20x20 plateau, IoU 100/400
    assert ious[0, 0] == pytest.approx(0.25)


def test_pxap_perfect_random_and_inverted():
    mask = _mask()
    perfect = PxAP()
    perfect.update(mask.astype(float), mask)
    assert perfect.compute() == pytest.approx(1.0)
    inverted = PxAP()
    inverted.update(1.0 - mask, mask)
    # every threshold > 0 keeps only background: precision 0 until recall jumps at the end
    assert inverted.compute() == pytest.approx(100 / 1600)
    graded = PxAP(thresholds=np.arange(0, 1, 0.01))
    ranked = np.zeros((40, 40))
    ranked[mask] = 1.0
    ranked[0:10, 0:10] = 0.5  # 100 background pixels ranked between
    graded.update(ranked, mask)
    assert graded.compute() == pytest.approx(1.0)


def test_pxap_ignore_region_is_left_out():
    mask = _mask()
    saliency = mask.astype(float)
    saliency[0:10, 0:10] = 1.0  # a false positive ...
    ignore = np.zeros((40, 40), bool)
    ignore[0:10, 0:10] = True  # ... inside the ignore region
    metric = PxAP()
    metric.update(saliency, mask, ignore=ignore)
    assert metric.compute() == pytest.approx(1.0)
    unmasked = PxAP()
    unmasked.update(saliency, mask)
    assert unmasked.compute() == pytest.approx(0.5)


# -- bad input -----------------------------------------------------------------------------


def test_size_mismatch_is_an_error():
    with pytest.raises(InputError, match="Upsample the maps"):
        pointing_game(np.zeros((7, 7)), np.zeros((224, 224), bool))


def test_nan_map_is_an_error():
    saliency = _square()
    saliency[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        energy_pointing_game(saliency, _mask())


def test_box_count_mismatch_and_unknown_metric_are_errors():
    with pytest.raises(InputError, match="one per map"):
        MaxBoxAcc().update(np.zeros((2, 8, 8)), [np.array([[0, 0, 1, 1]])])
    with pytest.raises(InputError, match="Unknown localization metric"):
        score_masks(np.zeros((8, 8)), np.zeros((8, 8), bool), ["pointing"])
    with pytest.raises(InputError, match="no images"):
        MaxBoxAcc().compute()
