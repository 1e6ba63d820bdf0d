"""Batch preprocessing shared by training, evaluation and serving, plus GPU-friendly augmentation."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from agekit.card import ModelCard

# ITU-R BT.601 luma weights, the same PIL uses for mode "L".
_LUMA = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)


def resize_uint8(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 (B,3,H,W) batch to (B,3,size,size) with antialiasing, staying uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def to_model_input(images: torch.Tensor, card: ModelCard) -> torch.Tensor:
    """uint8 RGB (B,3,H,W) in 0..255 → normalised float (B,in_chans,S,S) as the model in `card` expects."""
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected a uint8 (B,3,H,W) RGB batch, got {images.dtype} {tuple(images.shape)}")
    x = resize_uint8(images, card.input_size).float().div_(255.0)
    if card.in_chans == 1:
        x = (x * _LUMA.to(x.device)).sum(dim=1, keepdim=True)
    mean = torch.tensor(card.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(card.std, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def augment_uint8(images: torch.Tensor, generator: torch.Generator | None = None,
                  max_scale: float = 0.12, max_shift: float = 0.08, max_rotate_deg: float = 10.0,
                  jitter: float = 0.2) -> torch.Tensor:
    """Random flip, scale, shift, small rotation and brightness/contrast jitter on a uint8 (B,3,H,W) batch.

    Runs as one batched affine warp on whatever device `images` lives on (no per-image Python loop).
    """
    b, device = images.shape[0], images.device

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu").to(device) * 2 - 1

    x = images.float()
    angle = uniform(b) * math.radians(max_rotate_deg)
    scale = 1 + uniform(b) * max_scale
    flip = torch.where(torch.rand(b, generator=generator).to(device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos * flip, -sin, uniform(b) * max_shift], dim=1),
        torch.stack([sin * flip, cos, uniform(b) * max_shift], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    brightness = 1 + uniform(b, 1, 1, 1) * jitter
    contrast = 1 + uniform(b, 1, 1, 1) * jitter
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * contrast + mean * brightness
    return x.round_().clamp_(0, 255).to(torch.uint8)


def photo_degrade_uint8(images: torch.Tensor, generator: torch.Generator | None = None, strength: float = 1.0,
                        min_side: int = 44, max_blur_sigma: float = 1.5, gamma_range: tuple[float, float] = (0.6, 1.6),
                        jpeg_quality: tuple[int, int] = (30, 95)) -> torch.Tensor:
    """What cutting a face out of a real photo does to it, on a uint8 (B,3,S,S) batch: each of resolution loss
    (down to `min_side` px, log-uniform, and back up), Gaussian blur (sigma up to `max_blur_sigma` px), exposure
    (gamma in `gamma_range`) and JPEG re-encoding (quality in `jpeg_quality`) is applied to an image with
    probability `strength`. The ranges mirror the wild evaluation's renderer (a 40 px face is a ~48 px crop).
    """
    from torchvision.io import decode_jpeg, encode_jpeg
    from torchvision.transforms.v2.functional import gaussian_blur

    if strength <= 0:
        return images
    b, size, device = images.shape[0], images.shape[-1], images.device

    def draw(low: float, high: float) -> torch.Tensor:
        return low + torch.rand(b, generator=generator) * (high - low)

    apply = torch.rand(4, b, generator=generator) < strength
    sides = torch.exp(draw(math.log(min(min_side, size)), math.log(size))).round().int().tolist()
    sigmas, gammas = draw(0.3, max_blur_sigma).tolist(), draw(*gamma_range).tolist()
    qualities = draw(jpeg_quality[0], jpeg_quality[1] + 1).int().clamp_(max=jpeg_quality[1]).tolist()
    out = []
    for i, image in enumerate(images.cpu()):
        x = image.float()
        if apply[0, i] and sides[i] < size:
            small = F.interpolate(x[None], size=(sides[i], sides[i]), mode="bilinear", antialias=True)
            x = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)[0]
        if apply[1, i]:
            kernel = 2 * math.ceil(3 * sigmas[i]) + 1
            x = gaussian_blur(x, [kernel, kernel], [sigmas[i], sigmas[i]])
        if apply[2, i]:
            x = 255.0 * (x / 255.0).clamp_(0, 1) ** gammas[i]
        image = x.round_().clamp_(0, 255).to(torch.uint8)
        if apply[3, i]:
            image = decode_jpeg(encode_jpeg(image, quality=qualities[i]))
        out.append(image)
    return torch.stack(out).to(device)
