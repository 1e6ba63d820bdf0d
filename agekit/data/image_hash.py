"""Perceptual image hashes (pHash, dHash) and a vectorised search for near-identical pairs.

A perceptual hash is a 64-bit fingerprint that changes little when an image is re-encoded, resized or
slightly recoloured; the number of differing bits (Hamming distance) between two hashes measures how
different two pictures look. Implemented with PIL + numpy + scipy only (no `imagehash` dependency).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from PIL import Image
from scipy.fft import dctn

HASH_BITS = 64
THUMB_SIZE = 32  # side of the grayscale thumbnail the pHash DCT runs on, in pixels


def gray_thumbnail(image: Image.Image, size: int = THUMB_SIZE) -> np.ndarray:
    """(size, size) uint8 luma thumbnail of `image` (area-averaged, so JPEG noise mostly cancels out)."""
    return np.asarray(image.convert("L").resize((size, size), Image.Resampling.BOX), dtype=np.uint8)


def _pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, 64) bool -> (N,) uint64, first bit most significant."""
    return np.packbits(bits.astype(np.uint8), axis=1).view(">u8").reshape(-1).astype(np.uint64)


def phash_from_thumbnails(thumbs: np.ndarray) -> np.ndarray:
    """64-bit DCT hashes of a (N, 32, 32) stack of luma thumbnails -> (N,) uint64.

    Bit k is set when the k-th of the 8x8 lowest-frequency DCT coefficients exceeds their median
    (the classic pHash recipe).
    """
    thumbs = np.asarray(thumbs, dtype=np.float32)
    if thumbs.ndim != 3 or thumbs.shape[1:] != (THUMB_SIZE, THUMB_SIZE):
        raise ValueError(f"expected (N, {THUMB_SIZE}, {THUMB_SIZE}) thumbnails, got {thumbs.shape}")
    low = dctn(thumbs, type=2, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(thumbs), HASH_BITS)
    return _pack_bits(low > np.median(low, axis=1, keepdims=True))


def phash(image: Image.Image) -> int:
    """64-bit perceptual (DCT) hash of one image, as a Python int."""
    return int(phash_from_thumbnails(gray_thumbnail(image)[None])[0])


def dhash(image: Image.Image) -> int:
    """64-bit difference hash: bit set where a pixel of the 9x8 luma thumbnail is brighter than its right neighbour."""
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    return int(_pack_bits((small[:, 1:] > small[:, :-1]).reshape(1, HASH_BITS))[0])


def hamming_distance(a: int | np.ndarray, b: int | np.ndarray) -> int | np.ndarray:
    """Number of differing bits between 64-bit hashes (scalars or broadcastable uint64 arrays)."""
    diff = np.bitwise_xor(np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64))
    count = np.bitwise_count(diff)
    return int(count) if count.ndim == 0 else count.astype(np.int64)


def _chunks(n: int, chunk: int) -> Iterator[tuple[int, int]]:
    for start in range(0, n, chunk):
        yield start, min(start + chunk, n)


def near_pairs(hashes: np.ndarray, max_distance: int, chunk: int = 256) -> np.ndarray:
    """All index pairs (i, j), i < j, whose hashes differ in at most `max_distance` bits.

    Brute force over N^2/2 pairs, vectorised in row chunks so memory stays about chunk * N * 8 bytes
    (50 MB for 24k images). Returns an (M, 2) int64 array sorted by (i, j).
    """
    hashes = np.asarray(hashes, dtype=np.uint64).reshape(-1)
    found: list[np.ndarray] = []
    for start, stop in _chunks(len(hashes), chunk):
        dist = np.bitwise_count(hashes[start:stop, None] ^ hashes[None, start:])
        rows, cols = np.nonzero(dist <= max_distance)
        keep = cols > rows  # columns start at `start`, so this is j > i
        found.append(np.stack([rows[keep] + start, cols[keep] + start], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return np.concatenate(found).astype(np.int64)


def thumbnail_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 luma thumbnails after matching their mean brightness (0..255)."""
    fa, fb = a.astype(np.float32), b.astype(np.float32)
    return float(np.abs((fa - fa.mean()) - (fb - fb.mean())).mean())
