"""GlaS metrics on hand-made masks whose values are worked out by hand, plus real GlaS masks.

Coordinates below are (row, col); "rows 0..9" is inclusive. Distances are between pixel centres.
"""
import csv
import math

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.spatial.distance import cdist

from src_model.metrics import (
    aggregate,
    evaluate_image,
    label_objects,
    object_scores,
    pixel_dice,
    pixel_iou,
    pooled_dice,
)


def box(shape, r0, r1, c0, c1, value=1, out=None):
    """Mask with rows r0..r1 and cols c0..c1 (inclusive) set to ``value``."""
    m = np.zeros(shape, np.int32) if out is None else out
    m[r0:r1 + 1, c0:c1 + 1] = value
    return m


def check(res, **expected):
    for key, value in expected.items():
        assert res[key] == pytest.approx(value, abs=1e-9), key


def test_identical_masks_are_perfect():
    gt = box((20, 20), 1, 5, 1, 5, 1)
    box(gt.shape, 10, 17, 8, 12, 2, out=gt)
    res = evaluate_image(gt > 0, gt)
    check(res, dice=1, iou=1, f1=1, precision=1, recall=1, object_dice=1, object_hausdorff=0)
    assert (res["tp_objects"], res["fp_objects"], res["fn_objects"]) == (2, 0, 0)


def test_disjoint_squares():
    # G rows/cols 2..5, S rows/cols 12..15: no overlap -> TP 0, FP 1, FN 1, Dice 0.
    # S is G's only (hence closest) partner: the far corners (2,2) and (12,12) are 10*sqrt(2)
    # apart, and so are (5,5) and (15,15): H = 10*sqrt(2) on both sides.
    gt = box((20, 20), 2, 5, 2, 5)
    pred = box((20, 20), 12, 15, 12, 15)
    check(evaluate_image(pred, gt), dice=0, iou=0, f1=0, precision=0, recall=0, object_dice=0,
          object_hausdorff=10 * math.sqrt(2))


def test_half_overlap():
    # G rows 0..3 cols 0..3 (16 px); S the same square two columns right: overlap 4x2 = 8 px.
    # Dice 2*8/32 = 1/2, IoU 8/24 = 1/3. S covers 8/16 = 50% of G -> TP ("at least 50%").
    # Object Dice (1/2 + 1/2)/2; Hausdorff = the 2-column shift.
    gt = box((8, 10), 0, 3, 0, 3)
    pred = box((8, 10), 0, 3, 2, 5)
    check(evaluate_image(pred, gt), dice=0.5, iou=1 / 3, f1=1, precision=1, recall=1,
          object_dice=0.5, object_hausdorff=2)


def test_shifted_square_hausdorff_is_the_shift():
    # 10x10 square moved by (3, 4): H = |(3, 4)| = 5. Overlap 7x6 = 42 px < 50 px = half of G,
    # so S is a false positive and G a false negative. Dice = 2*42/200 = 0.42 everywhere.
    gt = box((30, 30), 5, 14, 5, 14)
    pred = box((30, 30), 8, 17, 9, 18)
    check(evaluate_image(pred, gt), dice=0.42, iou=42 / 158, f1=0, precision=0, recall=0,
          object_dice=0.42, object_hausdorff=5)


def test_object_inside_gland_but_under_half_of_it_is_false_positive():
    # S (3x3 = 9 px) lies wholly inside G (10x10 = 100 px) but covers 9% of G: the challenge
    # measures the overlap against the ground-truth object's area, so FP 1 and FN 1.
    gt = box((12, 12), 0, 9, 0, 9)
    pred = box((12, 12), 4, 6, 4, 6)
    check(evaluate_image(pred, gt), f1=0, precision=0, recall=0)


def test_gland_split_into_two_pieces():
    # G rows 0..9 cols 0..9 (100 px). Prediction: piece A cols 0..6 (70 px), empty col 7,
    # piece B cols 8..9 (20 px), two 8-connected objects.
    # F1: A covers 70% of G -> TP; B's partner is G too but covers 20% -> FP. FN 0.
    #   F1 = 2/(2+1) = 2/3, precision 1/2, recall 1. Pixel Dice 2*90/190.
    # Object Dice: G side: S*(G) = A, Dice 2*70/170 = 14/17 (weight 1).
    #   S side: A -> 14/17 (weight 70/90), B -> 2*20/120 = 1/3 (weight 20/90).
    # Hausdorff: H(G, A) = 3 (col 9 to col 6), H(G, B) = 8 (col 0 to col 8).
    #   G side 3; S side (70*3 + 20*8)/90 = 370/90.
    gt = box((10, 12), 0, 9, 0, 9)
    pred = box((10, 12), 0, 9, 0, 6)
    box(pred.shape, 0, 9, 8, 9, out=pred)
    res = evaluate_image(pred, gt)
    check(res, dice=180 / 190, f1=2 / 3, precision=0.5, recall=1,
          object_dice=0.5 * (14 / 17 + (70 / 90) * (14 / 17) + (20 / 90) / 3),
          object_hausdorff=0.5 * (3 + 370 / 90))
    assert (res["tp_objects"], res["fp_objects"], res["fn_objects"]) == (1, 1, 0)


def test_two_glands_merged_into_one_prediction():
    # G1 cols 0..4 (50 px), G2 cols 6..8 (30 px), rows 0..9; S rows 0..9 cols 0..8 (90 px).
    # S's partner is G1 (overlap 50 > 30), covered 100% -> TP; G2 unmatched -> FN.
    #   F1 = 2/3, precision 1, recall 1/2. Pixel Dice 2*80/170.
    # Object Dice: G side (50/80)*(2*50/140) + (30/80)*(2*30/120); S side 2*50/140.
    # Hausdorff: H(G1, S) = 4 (col 8 to col 4), H(G2, S) = 6 (col 0 to col 6).
    #   G side (50*4 + 30*6)/80 = 4.75; S side 4.
    gt = box((10, 10), 0, 9, 0, 4, 1)
    box(gt.shape, 0, 9, 6, 8, 2, out=gt)
    pred = box((10, 10), 0, 9, 0, 8)
    check(evaluate_image(pred, gt), dice=160 / 170, f1=2 / 3, precision=1, recall=0.5,
          object_dice=0.5 * ((50 / 80) * (5 / 7) + (30 / 80) * 0.5 + 5 / 7),
          object_hausdorff=0.5 * (4.75 + 4))


def test_empty_prediction_and_empty_image():
    gt = box((20, 30), 2, 6, 3, 9)
    empty = np.zeros_like(gt)
    # Nothing predicted: every score 0, Hausdorff the image diagonal sqrt(20^2 + 30^2).
    check(evaluate_image(empty, gt), dice=0, iou=0, f1=0, precision=0, recall=0, object_dice=0,
          object_hausdorff=math.sqrt(1300))
    check(evaluate_image(empty, gt, empty_hausdorff=7.0), object_hausdorff=7)
    # Nothing anywhere: perfect by convention.
    check(evaluate_image(empty, empty), dice=1, iou=1, f1=1, precision=1, recall=1, object_dice=1,
          object_hausdorff=0)


def test_object_dice_and_hausdorff_weight_by_area():
    # G1 = S1 = rows/cols 0..9 (100 px). G2 rows/cols 20..21 (4 px), S2 rows 20..22 cols 25..27
    # (9 px): G2 and S2 overlap nothing.
    # Object Dice: G side 100/104 * 1 + 4/104 * 0; S side 100/109 * 1 + 9/109 * 0.
    #   (an unweighted mean would give 0.5.)
    # Hausdorff: the closest partner of G2 is S2 and vice versa: farthest pair (22,27)-(21,21)
    #   gives sqrt(1 + 36) = sqrt(37); G1/S1 contribute 0.
    # F1: S1 TP, S2 FP, G2 FN -> 2/(2+1+1).
    gt = box((30, 30), 0, 9, 0, 9, 1)
    box(gt.shape, 20, 21, 20, 21, 2, out=gt)
    pred = box((30, 30), 0, 9, 0, 9)
    box(pred.shape, 20, 22, 25, 27, out=pred)
    check(evaluate_image(pred, gt), f1=0.5, object_dice=0.5 * (100 / 104 + 100 / 109),
          object_hausdorff=0.5 * (4 / 104 + 9 / 109) * math.sqrt(37))


def test_unmatched_gland_takes_partner_closest_in_hausdorff_not_in_pixels():
    # G rows/cols 10..11 (4 px). S_a: bar row 13, cols 0..39 (40 px), 2 px below G but long;
    # S_b rows 10..11 cols 16..17 (4 px), G moved 6 columns. No overlaps.
    # H(G, S_a) = |(13,39)-(11,11)| = sqrt(4 + 784) = sqrt(788); H(G, S_b) = 6.
    # G side picks S_b: 6. S side: (40*sqrt(788) + 4*6)/44. F1 0 (nothing overlaps).
    gt = box((40, 40), 10, 11, 10, 11)
    pred = box((40, 40), 13, 13, 0, 39)
    box(pred.shape, 10, 11, 16, 17, out=pred)
    check(evaluate_image(pred, gt), f1=0,
          object_hausdorff=0.5 * (6 + (40 * math.sqrt(788) + 24) / 44))


def test_hausdorff_matches_brute_force_on_irregular_shapes():
    # Exact pairwise distances between all pixels as an independent reference, on shapes with
    # holes and concavities (where boundary-only shortcuts go wrong).
    rng = np.random.default_rng(0)
    for _ in range(5):
        a = ndi.binary_opening(rng.random((40, 50)) < 0.55, iterations=1)
        a = ndi.label(a)[0] == 1 + np.argmax(np.bincount(ndi.label(a)[0].ravel())[1:])
        b = np.zeros_like(a)
        b[rng.integers(0, 30):, rng.integers(0, 40):][:8, :9] = True
        b[2:8, 44:48] = True  # second piece: b is one instance made of two parts
        b &= ~a
        pa, pb = np.argwhere(a), np.argwhere(b)
        d = cdist(pa, pb)
        expected = max(d.min(1).max(), d.min(0).max())
        res = object_scores(b.astype(np.int32), a.astype(np.int32))
        assert res["object_hausdorff"] == pytest.approx(expected)


def test_ring_around_gland_is_far_in_hausdorff():
    # A predicted ring (rows/cols 0..20, 1 px wide) around the gland G (rows/cols 2..18), which
    # fills its hole but for a 1-px gap: no overlap. h(ring -> G) = |(0,0)-(2,2)| = 2*sqrt(2);
    # h(G -> ring) = |(10,10)-(0,10)| = 10: the centre of G is farthest from the ring (on G's
    # boundary the largest distance is 2*sqrt(2), so a boundary-only shortcut gives 2.83).
    gt = box((21, 21), 2, 18, 2, 18)
    pred = box((21, 21), 0, 20, 0, 20)
    pred[1:20, 1:20] = 0
    check(evaluate_image(pred, gt), f1=0, object_hausdorff=10.0)


def test_gland_matched_at_most_once():
    # Predicted instance map: two touching halves (ids 1, 2) of G (rows/cols 0..3, 16 px). Each
    # covers exactly 8/16 = 50% of G, but G can only be matched once: TP 1, FP 1 -> F1 2/3.
    gt = box((4, 6), 0, 3, 0, 3)
    pred = box((4, 6), 0, 3, 0, 1, 1)
    box(pred.shape, 0, 3, 2, 3, 2, out=pred)
    check(evaluate_image(pred, gt), f1=2 / 3, precision=0.5, recall=1)


def _reference_object_hausdorff(s, g):
    """Challenge formula with brute-force pairwise distances (tiny images only)."""
    def haus(a, b):
        d = cdist(np.argwhere(a), np.argwhere(b))
        return max(d.min(1).max(), d.min(0).max())

    def side(x, y):
        total = 0.0
        for i in range(1, x.max() + 1):
            xi = x == i
            over = np.bincount(y[xi], minlength=y.max() + 1)[1:]
            if over.max() > 0:
                h = haus(xi, y == 1 + np.argmax(over))
            else:
                h = min(haus(xi, y == j) for j in range(1, y.max() + 1))
            total += xi.sum() * h
        return total / (x > 0).sum()

    return 0.5 * (side(g, s) + side(s, g))


def test_object_hausdorff_matches_brute_force_on_random_scenes():
    # Many small objects, most without overlap, so the closest-partner search and its pruning
    # are exercised against exhaustive search.
    rng = np.random.default_rng(1)
    for _ in range(4):
        g = ndi.label(ndi.gaussian_filter(rng.random((48, 48)), 2) > 0.53)[0]
        s = ndi.label(ndi.gaussian_filter(rng.random((48, 48)), 2) > 0.53, structure=np.ones((3, 3)))[0]
        assert g.max() > 3 and s.max() > 3
        res = object_scores(s, g)
        assert res["object_hausdorff"] == pytest.approx(_reference_object_hausdorff(s, g))


def test_label_objects_connectivity_instances_and_min_size():
    diag = np.eye(3, dtype=bool)
    assert label_objects(diag).max() == 1  # 8-connectivity by default
    assert label_objects(diag, connectivity=1).max() == 3
    touching = np.array([[1, 1, 2, 2]])
    assert label_objects(touching).max() == 2  # several ids: an instance map, kept apart
    assert label_objects(touching > 0).max() == 1  # binary: one component
    specks = np.zeros((6, 6), np.uint8)
    specks[0, 0] = 255
    specks[3:6, 3:6] = 255
    lab = label_objects(specks, min_size=2)
    assert lab.max() == 1 and lab[0, 0] == 0 and (lab[3:, 3:] == 1).all()
    with pytest.raises(ValueError):
        label_objects(np.full((4, 4), 0.7))


def test_pixel_metrics_and_pooled_aggregate():
    gt = box((8, 10), 0, 3, 0, 3)
    half = box((8, 10), 0, 3, 2, 5)
    small = box((8, 10), 6, 7, 6, 7)
    assert pixel_dice(half, gt) == pytest.approx(0.5)
    assert pixel_iou(half, gt) == pytest.approx(1 / 3)
    assert pixel_dice(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    # Image 1: Dice 1/2 (8 of 16+16 px); image 2: identical 4-px squares, Dice 1.
    # Mean over images 3/4; pooled 2*(8+4)/(32+8) = 0.6. Objects: TP 1+1 -> F1 1 either way.
    agg = aggregate([evaluate_image(half, gt), evaluate_image(small, small)])
    check(agg, dice=0.75, dice_pooled=0.6, iou=(1 / 3 + 1) / 2, iou_pooled=12 / 28, f1=1, f1_pooled=1,
          n_images=2)
    with pytest.raises(ValueError):
        aggregate([])


def test_pooled_dice_pools_pixels_over_regions():
    gt = box((8, 10), 0, 3, 0, 3)
    half = box((8, 10), 0, 3, 2, 5)
    small = box((8, 10), 6, 7, 6, 7)
    # 2 * (8 + 4) / ((16 + 16) + (4 + 4)) = 0.6, as dice_pooled of aggregate() above
    assert pooled_dice([(half, gt), (small, small)]) == pytest.approx(0.6)
    assert pooled_dice([(half * 255, gt)]) == pytest.approx(pixel_dice(half, gt))  # any value > 0 is foreground
    empty = np.zeros((4, 5), np.uint8)
    assert pooled_dice([(empty, empty)]) == 1.0 and pooled_dice([]) == 1.0
    assert pooled_dice([(empty, empty), (half, gt)]) == pytest.approx(0.5)  # an empty region adds nothing
    with pytest.raises(ValueError, match="shapes differ"):
        pooled_dice([(half, gt[:4])])


def _real_masks(glas_dir):
    from PIL import Image

    with open(glas_dir / "split.csv") as f:
        ids = [r["id"] for r in csv.DictReader(f) if r["subset"] == "testA"][:2]
    assert len(ids) == 2, f"{glas_dir / 'split.csv'} lists fewer than two testA images"
    return [np.array(Image.open(glas_dir / "masks" / f"{i}.png")) for i in ids]


def test_real_glas_masks(glas_dir):
    for gt in _real_masks(glas_dir):
        n = int(gt.max())
        check(evaluate_image(gt > 0, gt), dice=1, f1=1, object_dice=1, object_hausdorff=0)
        # Each gland shrunk by 2 px on its own: fewer pixels, same glands.
        pred = np.zeros(gt.shape, bool)
        for k in range(1, n + 1):
            pred |= ndi.binary_erosion(gt == k, iterations=2)
        res = evaluate_image(pred, gt)
        assert 0.9 < res["dice"] < 1
        assert res["f1"] == 1 and res["tp_objects"] == n
        assert 0.9 < res["object_dice"] < 1
        assert 1 <= res["object_hausdorff"] < 10


def test_postprocess_drops_specks_and_fills_small_holes():
    from src_model.postprocess import PostprocessConfig, clean_mask

    mask = np.zeros((60, 60), bool)
    mask[10:40, 10:40] = True
    mask[20:23, 20:23] = False          # a 9-pixel hole inside the gland
    mask[50:52, 50:52] = True           # a 4-pixel speck
    out = clean_mask(mask, PostprocessConfig(min_size=20, fill_holes=True))
    assert out[20:23, 20:23].all() and not out[50:, 50:].any()
    assert out[10:40, 10:40].all() and out.sum() == 900
    assert np.array_equal(clean_mask(mask, PostprocessConfig()), mask)  # off by default


def test_split_touching_separates_two_glands_joined_by_a_neck():
    from src_model.postprocess import PostprocessConfig, split_touching, to_instances

    mask = np.zeros((60, 120), bool)
    yy, xx = np.ogrid[:60, :120]
    mask |= (yy - 30) ** 2 + (xx - 30) ** 2 <= 20 ** 2
    mask |= (yy - 30) ** 2 + (xx - 90) ** 2 <= 20 ** 2
    mask[28:33, 30:90] = True                          # a 5-px neck joins the two discs
    mask[2:6, 110:114] = True                          # a small separate object, too flat to seed
    lab = split_touching(mask, h=4)
    assert lab[30, 30] != lab[30, 90] and lab[30, 30] > 0 and lab[30, 90] > 0
    assert (lab > 0).sum() == mask.sum()               # no foreground pixel is dropped
    assert lab[3, 111] > 0
    assert len(np.unique(to_instances(mask, PostprocessConfig()))) - 1 == 2  # off: components only
    gt = np.zeros((60, 120), np.uint8)
    gt[(yy - 30) ** 2 + (xx - 30) ** 2 <= 20 ** 2] = 1
    gt[(yy - 30) ** 2 + (xx - 90) ** 2 <= 20 ** 2] = 2
    assert evaluate_image(lab, gt, pred_instances=True)["f1"] > evaluate_image(mask, gt)["f1"]
