"""Training-time augmentation: photo_degrade_uint8 (what cutting a face out of a real photo does to it)."""

from __future__ import annotations

import torch

from agekit.data.transforms import augment_uint8, photo_degrade_uint8


def checkerboard(batch: int = 6, size: int = 64) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    board = (((yy // 2) + (xx // 2)) % 2 * 200 + 28).to(torch.uint8)
    return board.expand(batch, 3, size, size).contiguous()


def detail(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute horizontal pixel difference per image (high for a sharp checkerboard)."""
    x = images.float()
    return (x[..., 1:] - x[..., :-1]).abs().mean(dim=(1, 2, 3))


def test_strength_zero_is_the_identity():
    images = checkerboard()
    assert photo_degrade_uint8(images, torch.Generator().manual_seed(0), strength=0.0) is images


def test_seeded_and_shape_preserving():
    images = checkerboard()
    a = photo_degrade_uint8(images, torch.Generator().manual_seed(3), strength=0.7)
    b = photo_degrade_uint8(images, torch.Generator().manual_seed(3), strength=0.7)
    c = photo_degrade_uint8(images, torch.Generator().manual_seed(4), strength=0.7)
    assert a.dtype == torch.uint8 and a.shape == images.shape
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_full_strength_degrades_every_image():
    images = checkerboard(batch=8)
    out = photo_degrade_uint8(images, torch.Generator().manual_seed(0), strength=1.0)
    # Blur (sigma >= 0.3) plus resolution loss and JPEG always take away fine detail of a 2-px checkerboard.
    assert (detail(out) < 0.9 * detail(images)).all()


def test_composes_with_the_geometric_augmentation():
    g = torch.Generator().manual_seed(0)
    out = photo_degrade_uint8(augment_uint8(checkerboard(), g), g, strength=0.5)
    assert out.shape == (6, 3, 64, 64) and out.dtype == torch.uint8
