"""The pairwise ranking loss against a literal transcription of BiAM's `ranking_lossT` (copied by MKT and QKS)."""

from __future__ import annotations

import pytest
import torch

from ovmlc.core.losses import ranking_loss


def reference_ranking_loss_t(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """BiAM / MKT `ranking_lossT` on labels in {+1, -1, 0}, after the training loop dropped the images without a
    positive: keep the columns annotated somewhere in the batch; per image, hinge 1 + s_neg - s_pos over every
    (positive, negative) pair, summed and divided by (number of pairs with a positive hinge + 1e-8); mean over images.
    """
    keep_images = torch.clamp(labels, 0, 1).sum(1) > 0  # the engines drop these before calling the loss
    logits, labels = logits[keep_images], labels[keep_images]
    columns = torch.nonzero(labels.abs().sum(0) > 0).view(-1)
    labels, logits = labels[:, columns], logits[:, columns]
    positive = torch.clamp(labels, 0.0, 1.0)
    negative = torch.clamp(-labels, 0.0, 1.0)
    mask = positive.unsqueeze(1) * negative.unsqueeze(-1)  # [B, neg j, pos k]
    hinge = torch.clamp(mask * (1 + (logits * negative).unsqueeze(-1) - (logits * positive).unsqueeze(1)), 0)
    violations = torch.sign(hinge).sum(1).sum(1)
    return torch.mean(hinge.sum(1).sum(1) / (violations + 1e-8))


def as_inputs(signed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """{+1, -1, 0} labels -> ovmlc's (labels in {0, 1}, label_mask with 0 = unannotated)."""
    return (signed > 0).to(torch.float64), (signed != 0).to(torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ranking_loss_matches_biam_ranking_loss_t(seed):
    generator = torch.Generator().manual_seed(seed)
    signed = torch.randint(-1, 2, (24, 15), generator=generator).to(torch.float64)
    signed[0] = -1  # no positive: dropped
    signed[1] = torch.tensor([1.0] + [0.0] * 14)  # a positive but no negative: counts as 0
    signed[:, 7] = 0  # a column unannotated in the whole batch
    logits = (torch.randn(24, 15, generator=generator, dtype=torch.float64) * 0.8).requires_grad_()
    signed[2] = torch.where(signed[2] != 0, torch.tensor(-1.0), signed[2])
    signed[2, 3] = 1.0
    with torch.no_grad():
        logits[2] = -5.0
        logits[2, 3] = 5.0  # its only positive outranks every negative by more than the margin: no violation
    labels, mask = as_inputs(signed)
    ours = ranking_loss(logits, labels, mask)
    expected = reference_ranking_loss_t(logits, signed)
    # The reference divides by (count + 1e-8): a relative difference below 1e-8 when an image has a violation.
    torch.testing.assert_close(ours, expected, rtol=1e-7, atol=1e-12)
    (ours_grad,) = torch.autograd.grad(ours, logits)
    (expected_grad,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(ours_grad, expected_grad, rtol=1e-7, atol=1e-12)


def test_ranking_loss_is_reduced_per_image_not_over_the_batch():
    """Image 0 has one violating pair (hinge 2), image 1 three (hinges 1, 3, 0.5): per image (2/1 + 4.5/3) / 2 = 1.75;
    pooled over the batch (the earlier reduction) it would be 6.5 / 4 = 1.625."""
    logits = torch.tensor([[0.0, 1.0, -9.0, -9.0], [0.0, 0.0, 2.0, -0.5]])
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])
    # Image 0: pos 0.0 vs negs 1.0 (hinge 2), -9, -9 (none). Image 1: pos 0.0 vs 0.0 (1), 2.0 (3), -0.5 (0.5).
    assert ranking_loss(logits, labels).item() == pytest.approx(1.75)
    assert ranking_loss(logits, labels).item() != pytest.approx(6.5 / 4)


def test_ranking_loss_without_any_positive_is_zero_with_a_gradient_path():
    logits = torch.randn(3, 4, requires_grad=True)
    loss = ranking_loss(logits, torch.zeros(3, 4))
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0
