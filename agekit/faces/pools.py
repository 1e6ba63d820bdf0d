"""An exact, faster stand-in for the max pooling in facenet-pytorch's MTCNN on the CPU.

PyTorch's CPU `max_pool2d` on contiguous NCHW tensors always computes argmax indices too and does not vectorise
across a row: it was 30 % of the app's face detection time on a 1920x1280 photo with 5 faces (torch.profiler; 13
pools per photo in P-Net's pyramid and R-/O-Net's batches). The element-wise maximum of the k x k strided views of
the input is the same result, bit for bit (max is exact), and vectorised: `replace_max_pools(mtcnn)` swaps it into
the three nets. Detection on that photo: 136 → 109 ms on the idle machine, identical boxes, scores and landmarks
(tests/test_face_pools.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class StridedMaxPool2d(nn.Module):
    """MaxPool2d(kernel_size, stride, padding=0, dilation=1) as the maximum of k x k strided views.

    ceil_mode as in nn.MaxPool2d: the last window may run past the input's edge (the missing cells count as -inf),
    but a window never starts outside the input.
    """

    def __init__(self, kernel_size: int, stride: int, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.ceil_mode = kernel_size, stride, ceil_mode

    @classmethod
    def from_module(cls, pool: nn.MaxPool2d) -> StridedMaxPool2d:
        """The same pooling as `pool`; raises ValueError for settings this class does not reproduce."""
        def single(value: int | tuple[int, ...]) -> int:
            values = set(value) if isinstance(value, tuple) else {value}
            if len(values) != 1:
                raise ValueError(f"{pool}: only square kernels and equal strides are supported")
            return values.pop()
        if single(pool.padding) != 0 or single(pool.dilation) != 1 or pool.return_indices:
            raise ValueError(f"{pool}: padding, dilation and return_indices are not supported")
        return cls(single(pool.kernel_size), single(pool.stride), pool.ceil_mode)

    def output_size(self, size: int) -> int:
        """Pooled length of an input length, by nn.MaxPool2d's rule (padding 0)."""
        span = size - self.kernel_size
        if span < 0:
            raise ValueError(f"input size {size} is smaller than the pooling kernel {self.kernel_size}")
        out = (math.ceil(span / self.stride) if self.ceil_mode else span // self.stride) + 1
        if self.ceil_mode and (out - 1) * self.stride >= size:  # the last window would start past the edge
            out -= 1
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.kernel_size, self.stride
        h, w = x.shape[-2:]
        out_h, out_w = self.output_size(h), self.output_size(w)
        pad_h, pad_w = max(0, (out_h - 1) * s + k - h), max(0, (out_w - 1) * s + k - w)
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h), value=float("-inf"))
        # separable: the maximum over the k columns of each window, then over its k rows
        cols = None
        for j in range(k):
            view = x[..., j:j + (out_w - 1) * s + 1:s]
            cols = view if cols is None else torch.maximum(cols, view)
        result = None
        for i in range(k):
            view = cols[..., i:i + (out_h - 1) * s + 1:s, :]
            result = view if result is None else torch.maximum(result, view)
        return result


def replace_max_pools(model: nn.Module) -> int:
    """Swap every nn.MaxPool2d inside `model` for the equivalent StridedMaxPool2d, in place; returns how many."""
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.MaxPool2d):
                setattr(parent, name, StridedMaxPool2d.from_module(child))
                swapped += 1
    return swapped
