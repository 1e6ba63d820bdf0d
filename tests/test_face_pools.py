"""agekit.faces.pools: the strided-view max pooling equals nn.MaxPool2d exactly, and MTCNN with it finds the same
faces, bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from agekit.faces.pools import StridedMaxPool2d, replace_max_pools


@pytest.mark.parametrize("kernel,stride", [(2, 2), (3, 2), (3, 3), (2, 1)])
@pytest.mark.parametrize("ceil_mode", [True, False])
def test_strided_pool_equals_max_pool2d(kernel: int, stride: int, ceil_mode: bool) -> None:
    reference = nn.MaxPool2d(kernel, stride, ceil_mode=ceil_mode)
    pool = StridedMaxPool2d.from_module(reference)
    generator = torch.Generator().manual_seed(0)
    for height in range(kernel, kernel + 12):
        for width in (kernel, kernel + 1, 17, 24, 25):
            x = torch.randn(2, 3, height, width, generator=generator)
            expected = reference(x)
            got = pool(x)
            assert got.shape == expected.shape and torch.equal(got, expected), (height, width)


def test_unsupported_pooling_is_refused() -> None:
    with pytest.raises(ValueError, match="padding, dilation"):
        StridedMaxPool2d.from_module(nn.MaxPool2d(3, 2, padding=1))
    with pytest.raises(ValueError, match="square kernels"):
        StridedMaxPool2d.from_module(nn.MaxPool2d((2, 3), 2))
    with pytest.raises(ValueError, match="smaller than the pooling kernel"):
        StridedMaxPool2d(3, 2)(torch.zeros(1, 1, 2, 5))


EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_mtcnn_finds_the_same_faces_bit_for_bit() -> None:
    from facenet_pytorch import MTCNN

    reference = MTCNN(keep_all=True, min_face_size=20, device="cpu").eval()
    fast = MTCNN(keep_all=True, min_face_size=20, device="cpu").eval()
    assert replace_max_pools(fast) == 6  # P-Net 1, R-Net 2, O-Net 3
    assert not any(isinstance(m, nn.MaxPool2d) for m in fast.modules())
    found = 0
    for path in sorted(EXAMPLES.glob("*.jpg")):
        image = Image.open(path).convert("RGB")
        image.thumbnail((640, 640))
        expected, got = reference.detect(image, landmarks=True), fast.detect(image, landmarks=True)
        for e, g in zip(expected, got):
            assert (e is None and g is None) or np.array_equal(np.asarray(e, np.float32), np.asarray(g, np.float32))
        found += 0 if expected[0] is None else len(expected[0])
    assert found >= 5  # the example photos hold faces, so the comparison covered all three stages
