"""Box AP@0.5 and pointing accuracy against hand-computed values."""

import numpy as np
import pytest

from ovmlc.evaluation.box_metrics import (
    LocalizationAccumulator,
    average_precision_from_matches,
    box_average_precision,
    box_iou_numpy,
    point_in_boxes,
)


def test_iou_numpy():
    iou = box_iou_numpy(np.array([[0, 0, 2, 2]]), np.array([[1, 1, 3, 3], [0, 0, 2, 2], [0, 0, 0, 0]]))
    assert np.allclose(iou, [[1 / 7, 1.0, 0.0]])


def test_average_precision_is_the_area_under_the_monotone_precision_curve():
    # Ranked hits T F T F with 3 ground-truth boxes: precision 1, 1/2, 2/3, 1/2; recall 1/3, 1/3, 2/3, 2/3.
    # Envelope at the recall steps: 1 at 1/3, 2/3 at 2/3; the third box is never found.
    assert average_precision_from_matches(np.array([1, 0, 1, 0]), 3) == pytest.approx(1 / 3 + (2 / 3) * (1 / 3))
    # A later, higher precision lifts the earlier point: F T T -> precision 0, 1/2, 2/3 → envelope 2/3 everywhere.
    assert average_precision_from_matches(np.array([0, 1, 1]), 2) == pytest.approx(2 / 3)
    assert average_precision_from_matches(np.array([], dtype=bool), 2) == 0.0
    assert average_precision_from_matches(np.array([1]), 0) is None


def test_box_average_precision_matches_each_box_once_at_iou_half():
    truth = {0: np.array([[0, 0, 10, 10]]), 1: np.array([[0, 0, 10, 10], [20, 20, 30, 30]])}
    images = np.array([0, 0, 1, 1, 2])
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95])
    boxes = np.array(
        [
            [0, 0, 10, 10],  # image 0: hit
            [1, 1, 10, 10],  # image 0: duplicate of a matched box -> false positive
            [20, 20, 31, 30],  # image 1: IoU 10/11 with the second box -> hit
            [5, 0, 15, 10],  # image 1: IoU 1/3 -> false positive
            [0, 0, 10, 10],  # image 2 has no box of the label -> false positive (ranked first)
        ]
    )
    # Ranked: F(0.95) T(0.9) F(0.8) T(0.7) F(0.6); 3 boxes. Precision at hits: 1/2, 2/4 → envelope 1/2, 1/2.
    assert box_average_precision(images, scores, boxes, truth) == pytest.approx(0.5 * (1 / 3) + 0.5 * (1 / 3))
    # At a stricter threshold the IoU-10/11 detection still counts, at 0.95 it does not.
    assert box_average_precision(images, scores, boxes, truth, iou_threshold=0.95) == pytest.approx(0.5 / 3)
    assert box_average_precision(np.array([], int), np.array([]), np.zeros((0, 4)), {}) is None


def test_pointing_and_the_accumulated_report():
    assert point_in_boxes((5, 10), np.array([[0, 0, 5, 10]]))  # borders count
    assert not point_in_boxes((5.1, 10), np.array([[0, 0, 5, 10]]))
    accumulator = LocalizationAccumulator(["star", "red", "square"])
    # Image 0: a star box (hit at 0.9, its top region points inside); red's top region misses its box.
    accumulator.add_image(
        [(0, 0.9, [0, 0, 10, 10]), (1, 0.8, [20, 20, 30, 30])],
        top_boxes=np.array([[0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 1, 1]]),
        ground_truth={0: np.array([[0, 0, 10, 10]]), 1: np.array([[0, 0, 10, 10]])},
    )
    # Image 1: a square box found (unseen label), no star or red box.
    accumulator.add_image(
        [(2, 0.5, [10, 10, 20, 20]), (0, 0.7, [0, 0, 5, 5])],
        top_boxes=np.array([[0, 0, 5, 5], [0, 0, 1, 1], [10, 10, 20, 20]]),
        ground_truth={2: np.array([[10, 10, 20, 20]])},
    )
    report = accumulator.compute(unseen=[False, False, True])
    per_label = report["per_label"]
    assert per_label["star"]["box_ap"] == pytest.approx(1.0)  # the false positive of image 1 ranks below the hit
    assert per_label["red"]["box_ap"] == 0.0 and per_label["red"]["pointing"] == 0.0
    assert per_label["square"] == {"box_ap": 1.0, "pointing": 1.0, "num_boxes": 1, "num_images": 1, "unseen": True}
    assert report["box_ap"] == {"all": pytest.approx(2 / 3), "seen": 0.5, "unseen": 1.0}
    assert report["pointing"] == {"all": pytest.approx(2 / 3), "seen": 0.5, "unseen": 1.0}
    assert report["labels_with_boxes"] == {"all": 3, "seen": 2, "unseen": 1}
    assert report["num_images"] == 2
    empty = LocalizationAccumulator(["a"]).compute()
    assert empty["box_ap"]["all"] is None and empty["per_label"]["a"]["box_ap"] is None
