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


# ----------------------------------------------------------------------------------------------------------------------
# Split batches (data-parallel training): W processes on shares of one global batch, DDP averaging their gradients,
# must give the global batch's loss and gradient. The collective (a sum over processes) is emulated: a first pass
# records every process's counts in call order, a second pass hands each call the sum over the processes.
# ----------------------------------------------------------------------------------------------------------------------


def _split_losses(loss_of_share, shares: list[dict], world_size: int) -> list[torch.Tensor]:
    from ovmlc.core.losses import split_batch

    recorded: list[list[torch.Tensor]] = [[] for _ in shares]

    def recording(process):
        def reduce(count):
            recorded[process].append(count.clone())
            return count

        return reduce

    for process, share in enumerate(shares):
        with split_batch(world_size, recording(process), share["sample_weight"]):
            loss_of_share(share)
    assert len({len(calls) for calls in recorded}) == 1, "every process makes the same collective calls"
    sums = [torch.stack(calls).sum(dim=0) for calls in zip(*recorded)]

    def summed():
        calls = iter(sums)
        return lambda count: next(calls)

    losses = []
    for share in shares:
        with split_batch(world_size, summed(), share["sample_weight"]):
            losses.append(loss_of_share(share))
    return losses


def _losses_under_test():
    from ovmlc.core.losses import asymmetric_loss, l1_distillation, masked_bce_with_logits

    def mkt_like(logits, labels, mask, features):  # ranking + distillation, as MKT stage 1 combines them
        return ranking_loss(logits, labels, mask) + 0.5 * l1_distillation(features, features.detach() * 0.5 + 1.0)

    return {
        "bce": lambda logits, labels, mask, features: masked_bce_with_logits(logits, labels, mask),
        "asl": lambda logits, labels, mask, features: asymmetric_loss(logits, labels, mask, gamma_neg=4, clip=0.05),
        "ranking": lambda logits, labels, mask, features: ranking_loss(logits, labels, mask),
        "mkt": mkt_like,
    }


@pytest.mark.parametrize("name", ["bce", "asl", "ranking", "mkt"])
@pytest.mark.parametrize(("world_size", "num_real"), [(2, 8), (2, 6), (4, 8), (4, 5)])
def test_split_batch_losses_and_averaged_gradients_equal_the_global_batch(name, world_size, num_real):
    """A global batch of 8 (the epoch's last one holds `num_real` real images, the rest repeats accelerate appends)
    split over `world_size` processes: the mean of the processes' losses and gradients equals one process's loss and
    gradient on the real images. Annotation is uneven across shares, and one share has no image with a positive."""
    from ovmlc.training.loop import padding_weight

    loss_fn = _losses_under_test()[name]
    generator = torch.Generator().manual_seed(world_size * 10 + num_real)
    num_images, num_labels, global_batch = 8, 6, 8
    inputs = torch.randn(num_images, 5, generator=generator, dtype=torch.float64)
    labels = (torch.rand(num_images, num_labels, generator=generator) < 0.4).to(torch.float64)
    mask = (torch.rand(num_images, num_labels, generator=generator) < 0.7).to(torch.float64)
    labels[:2] = 0.0  # the first share(s) hold images without any positive (dropped by the ranking loss)
    mask[0] = 0.0  # and an image without any annotated entry
    # Padding repeats the epoch's first images (accelerate's even batches): positions >= num_real.
    padded = torch.cat([torch.arange(num_real), torch.arange(global_batch - num_real) % num_real])
    weight = torch.randn(5, num_labels, generator=generator, dtype=torch.float64, requires_grad=True)

    def forward(rows):
        logits = inputs[rows] @ weight  # [b, C]
        return loss_fn(logits, labels[rows], mask[rows], inputs[rows] @ weight[:, :3])

    reference = forward(torch.arange(num_real))
    (reference_grad,) = torch.autograd.grad(reference, weight)

    local = global_batch // world_size
    # batch_index 1 of an epoch of 8 + num_real samples: the last, padded batch.
    shares = [
        {
            "rows": padded[process * local : (process + 1) * local],
            "sample_weight": padding_weight(8 + num_real, global_batch, 1, local, process),
        }
        for process in range(world_size)
    ]
    losses = _split_losses(lambda share: forward(share["rows"]), shares, world_size)
    averaged = torch.stack(losses).mean()  # what accelerator.reduce(loss, "mean") logs
    (averaged_grad,) = torch.autograd.grad(averaged, weight)  # what DDP's gradient average gives
    torch.testing.assert_close(averaged, reference, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(averaged_grad, reference_grad, rtol=1e-10, atol=1e-12)


def test_without_split_batch_the_losses_divide_by_their_own_counts():
    """Outside `split_batch` (one process, inference) nothing is reduced across processes: the same as before."""
    from ovmlc.core.losses import batch_mean, masked_bce_with_logits

    logits, labels = torch.tensor([[2.0, -1.0]]), torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, :1], labels[:, :1])
    torch.testing.assert_close(masked_bce_with_logits(logits, labels, mask), expected)
    assert batch_mean(torch.tensor(3.0), torch.tensor(0.0)).item() == 3.0  # count clamped to 1


@pytest.mark.parametrize(("num_samples", "batch_size", "world_size"), [(48, 10, 2), (13, 8, 4), (5, 8, 2), (16, 8, 2)])
def test_padding_weight_marks_exactly_the_repeats_accelerate_appends(num_samples, batch_size, world_size):
    """Through accelerate's own batch sharding (split_batches, even batches): the samples with weight 1 over all
    processes and batches are every sample of the epoch exactly once."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler, SequentialSampler

    from ovmlc.training.loop import padding_weight

    counted = []
    for process in range(world_size):
        sampler = BatchSampler(SequentialSampler(range(num_samples)), batch_size, drop_last=False)
        shard = BatchSamplerShard(sampler, world_size, process, split_batches=True, even_batches=True)
        for batch_index, indices in enumerate(shard):
            weight = padding_weight(num_samples, batch_size, batch_index, len(indices), process)
            weight = torch.ones(len(indices)) if weight is None else weight
            counted += [index for index, kept in zip(indices, weight.tolist()) if kept == 1.0]
    assert sorted(counted) == list(range(num_samples))
