"""mIoU on confusion cases small enough to work out by hand."""

import math

import pytest
import torch

from prune.metrics import IGNORE_INDEX, ConfusionMatrix, confusion_matrix, iou_per_class, mean_iou


def test_confusion_matrix_counts_target_rows_pred_columns_and_skips_ignore():
    target = torch.tensor([[0, 0, 1, IGNORE_INDEX]])
    pred = torch.tensor([[0, 1, 1, 0]])
    assert confusion_matrix(pred, target, 3).tolist() == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_iou_by_hand_and_absent_class_left_out_of_the_mean():
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 1, FP 1 -> 1/2; class 2 absent from both -> NaN
    matrix = torch.tensor([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    ious = iou_per_class(matrix)
    assert ious[:2].tolist() == [0.5, 0.5]
    assert math.isnan(ious[2])
    assert mean_iou(matrix) == pytest.approx(0.5)


def test_class_predicted_but_absent_from_ground_truth_counts_as_zero():
    target = torch.tensor([0, 0, 0, 0])
    pred = torch.tensor([0, 0, 0, 2])
    matrix = confusion_matrix(pred, target, 3)
    # class 0: 3/4; class 2: 0 (a false positive only); class 1 absent -> excluded
    assert mean_iou(matrix) == pytest.approx((0.75 + 0.0) / 2)


def test_perfect_prediction_scores_one():
    target = torch.randint(0, 4, (2, 5, 5), generator=torch.Generator().manual_seed(0))
    matrix = ConfusionMatrix(4)
    matrix.update(target.clone(), target)
    scores = matrix.scores()
    assert scores.miou == 1.0 and scores.pixel_accuracy == 1.0 and scores.pixels == 50


def test_update_upsamples_quarter_resolution_logits_to_the_label():
    logits = torch.zeros(1, 2, 2, 2)
    logits[0, 0, :, 0] = 1.0  # left half predicts class 0
    logits[0, 1, :, 1] = 1.0  # right half predicts class 1
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    target[0, :, 4:] = 1
    matrix = ConfusionMatrix(2)
    matrix.update(logits, target)
    assert matrix.matrix.tolist() == [[32, 0], [0, 32]]


def test_accumulates_over_batches_not_averaging_per_batch():
    matrix = ConfusionMatrix(2)
    matrix.update(torch.tensor([[0, 0, 0, 0]]), torch.tensor([[0, 0, 0, 0]]))  # batch IoU 1.0 for class 0
    matrix.update(torch.tensor([[0]]), torch.tensor([[1]]))  # class 0: FP; class 1: FN
    # class 0: 4 / (4 + 1) ; class 1: 0 / 1
    assert matrix.scores().miou == pytest.approx((0.8 + 0.0) / 2)
    assert matrix.scores().iou == (0.8, 0.0)


def test_target_outside_class_range_is_refused():
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), 3)
