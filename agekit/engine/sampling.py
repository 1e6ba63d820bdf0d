"""What each epoch sees: the images resized once onto the device, sampling and class weights from the labels,
the epoch's order of images, each rank's shard of it and the seeds that make a resumed run repeat itself."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from agekit.data.transforms import resize_uint8
from agekit.labels import NUM_OUTPUTS, get_age_bins


def images_on_device(images: torch.Tensor, size: int, device: torch.device, chunk: int = 512) -> torch.Tensor:
    """Resize a uint8 (N,3,H,W) set once to (N,3,size,size) on `device` (chunked to bound float memory)."""
    return torch.cat([resize_uint8(images[i:i + chunk].to(device), size) for i in range(0, len(images), chunk)])


def stratum_weights(targets: Mapping[str, torch.Tensor], strata: str, age_bins: str) -> torch.Tensor:
    """Per-image sampling weight 1 / (size of its stratum): age bin, or age bin x ethnicity. (N,) float."""
    bins = torch.as_tensor(get_age_bins(age_bins).bin_of(targets["age"].cpu().numpy()))
    # unknown ethnicity (-1) is a stratum of its own within each age bin
    ethnicity = targets["ethnicity"].cpu() + 1
    stratum = bins * (NUM_OUTPUTS["ethnicity"] + 1) + ethnicity if strata == "age_bin_ethnicity" else bins
    counts = torch.bincount(stratum)
    return 1.0 / counts[stratum].double()


def class_weight_tensors(targets: Mapping[str, torch.Tensor], tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Inverse-frequency cross-entropy weights (mean 1 over classes) for gender / ethnicity."""
    weights = {}
    for task in tasks:
        if task == "age":
            continue
        labels = targets[task].cpu()
        counts = torch.bincount(labels[labels >= 0], minlength=NUM_OUTPUTS[task]).double().clamp_min(1)
        inverse = counts.sum() / counts
        weights[task] = (inverse / inverse.mean()).float()
    return weights


def epoch_indices(n: int, generator: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """This epoch's order of the n training images: a permutation, or n weighted draws with replacement."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's equal-length slice of the (identical on every rank) epoch order."""
    usable = len(indices) // world_size * world_size
    return indices[:usable][rank::world_size]


def seed_for(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (seed, epoch, rank, ...)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return value
