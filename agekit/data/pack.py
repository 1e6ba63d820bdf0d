"""Compact face pack: every image of a split manifest resized, encoded and stored in one safetensors file.

Layout (no pickle anywhere):

- tensors: ``data`` uint8 (total_bytes,) — the encoded images back to back; ``offsets`` int64 (N+1,) —
  image i is data[offsets[i]:offsets[i+1]]; ``age``, ``gender``, ``ethnicity`` int64 (N,); ``split``
  uint8 (N,) with codes SPLIT_CODES;
- metadata (strings): format, format_version, manifest_hash, size (pixels), codec, quality, resample,
  files (JSON list, same order as the tensors), skipped (JSON list of [file, reason]).

Faces are resized from 200x200 with Lanczos (utkface.resize_face) before encoding, so a pack differs
from `load_folder(..., size)` only by the codec's loss. `measure_codecs` produced the table that chose
the default codec (WebP) and quality; see the notes / README.
"""

from __future__ import annotations

import io
import json
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file
from tqdm import tqdm

from agekit.data.split import SPLITS, SplitManifest
from agekit.data.utkface import read_face

PACK_FORMAT = "agekit-face-pack"
PACK_VERSION = 1
SPLIT_CODES: dict[str, int] = {name: code for code, name in enumerate(SPLITS)}  # train 0, val 1, test 2
CODECS: dict[str, str] = {"webp": "WEBP", "jpeg": "JPEG"}  # our name -> PIL format name
DEFAULT_CODEC, DEFAULT_QUALITY = "webp", 90


class PackError(ValueError):
    """A pack file that is missing, not an agekit pack, or built for another manifest."""


def encode_image(pixels: np.ndarray, codec: str = DEFAULT_CODEC, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode an (H, W, 3) uint8 RGB image with `codec` ('webp' or 'jpeg') at `quality` (1..100)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose from {sorted(CODECS)}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1..100, got {quality}")
    buffer = io.BytesIO()
    options = {"method": 6} if codec == "webp" else {"optimize": True}  # slowest, smallest encoders
    Image.fromarray(pixels, "RGB").save(buffer, CODECS[codec], quality=quality, **options)
    return buffer.getvalue()


def decode_image(data: bytes | memoryview) -> np.ndarray:
    """Decode encoded image bytes into an (H, W, 3) uint8 RGB array."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


@dataclass(frozen=True)
class PackContents:
    """A pack read from disk, still encoded (decode with dataset.load_pack)."""

    path: Path
    data: np.ndarray  # uint8 (total_bytes,)
    offsets: np.ndarray  # int64 (N+1,)
    age: np.ndarray  # int64 (N,), years
    gender: np.ndarray  # int64 (N,)
    ethnicity: np.ndarray  # int64 (N,)
    split: np.ndarray  # uint8 (N,), SPLIT_CODES
    files: list[str]
    manifest_hash: str
    size: int  # image side, pixels
    codec: str
    quality: int
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return len(self.files)

    def image_bytes(self, index: int) -> memoryview:
        """Encoded bytes of image `index`."""
        return memoryview(self.data)[int(self.offsets[index]):int(self.offsets[index + 1])]


@dataclass(frozen=True)
class PackSummary:
    """What write_pack wrote."""

    path: Path
    images: int
    file_bytes: int  # size of the pack file on disk
    skipped: list[tuple[str, str]]
    seconds: float


FaceReader = Callable[[Path, int], np.ndarray]  # (image path, side px) -> (side, side, 3) uint8 RGB face


def _encode_one(args: tuple[FaceReader, Path, int, str, int]) -> bytes | str:
    reader, path, size, codec, quality = args
    try:
        return encode_image(reader(path, size), codec, quality)
    except Exception as exc:  # noqa: BLE001 — unreadable image: reported in `skipped`, not fatal
        return f"{type(exc).__name__}: {exc}"


def write_pack(root: Path, manifest: SplitManifest, out: str | os.PathLike[str], size: int = 128,
               codec: str = DEFAULT_CODEC, quality: int = DEFAULT_QUALITY, splits: Sequence[str] = SPLITS,
               workers: int = 2, progress: bool = True, reader: FaceReader = read_face) -> PackSummary:
    """Resize, encode and store the manifest's `splits` from the image folder `root` in one safetensors file.
    `reader` turns an image file into the face (default: a UTKFace chip resized; AAF: the app's face path)."""
    started = time.perf_counter()
    unknown = [s for s in splits if s not in SPLIT_CODES]
    if unknown or not splits:
        raise ValueError(f"unknown splits {unknown or list(splits)}; choose from {list(SPLITS)}")
    if not 16 <= size <= 1024:
        raise ValueError(f"size must be 16..1024 pixels, got {size}")
    encode_image(np.zeros((8, 8, 3), np.uint8), codec, quality)  # fail fast on a bad codec/quality
    rows = manifest.frame[manifest.frame["split"].isin(list(splits))]
    jobs = [(reader, Path(root) / f, size, codec, quality) for f in rows["file"]]
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        encoded = list(tqdm(pool.map(_encode_one, jobs), total=len(jobs), desc=f"encode {codec} {size}px",
                            unit="img", disable=not progress))
    ok = np.array([isinstance(e, bytes) for e in encoded], dtype=bool)
    skipped = [(f, e) for f, e in zip(rows["file"], encoded) if not isinstance(e, bytes)]
    blobs = [e for e in encoded if isinstance(e, bytes)]
    kept = rows[ok]
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    tensors = {
        "data": np.frombuffer(b"".join(blobs), dtype=np.uint8).copy(),
        "offsets": offsets,
        "age": kept["age"].to_numpy(np.int64),
        "gender": kept["gender"].to_numpy(np.int64),
        "ethnicity": kept["ethnicity"].to_numpy(np.int64),
        "split": kept["split"].map(SPLIT_CODES).to_numpy(np.uint8),
    }
    metadata = {
        "format": PACK_FORMAT, "format_version": str(PACK_VERSION), "manifest_hash": manifest.hash,
        "size": str(size), "codec": codec, "quality": str(quality), "resample": "lanczos",
        "files": json.dumps(kept["file"].tolist()), "skipped": json.dumps(skipped),
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    partial.replace(out)  # a crash never leaves a half-written pack under the real name
    return PackSummary(out, len(blobs), out.stat().st_size, skipped, time.perf_counter() - started)


def read_pack(path: str | os.PathLike[str]) -> PackContents:
    """Open a pack file without decoding its images. Raises PackError with what to do when it is unusable."""
    path = Path(path)
    if not path.is_file():
        raise PackError(f"pack {str(path)!r} not found — build it with: python -m agekit.data pack PATH --out {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = handle.metadata() or {}
            if meta.get("format") != PACK_FORMAT:
                raise PackError(f"{str(path)!r} is a safetensors file but not an agekit face pack")
            if meta.get("format_version") != str(PACK_VERSION):
                raise PackError(f"{str(path)!r} has pack format version {meta.get('format_version')}, this agekit "
                                f"reads version {PACK_VERSION}; rebuild it with python -m agekit.data pack")
            arrays = {name: handle.get_tensor(name)
                      for name in ("data", "offsets", "age", "gender", "ethnicity", "split")}
    except (SafetensorError, OSError) as err:
        raise PackError(f"{str(path)!r} is not a readable safetensors pack: {err}") from None
    files = json.loads(meta["files"])
    if len(arrays["offsets"]) != len(files) + 1 or any(len(arrays[k]) != len(files)
                                                       for k in ("age", "gender", "ethnicity", "split")):
        raise PackError(f"{str(path)!r} is corrupt: tensor lengths do not match its file list")
    return PackContents(path, files=files, manifest_hash=meta["manifest_hash"], size=int(meta["size"]),
                        codec=meta["codec"], quality=int(meta["quality"]),
                        skipped=[tuple(s) for s in json.loads(meta.get("skipped", "[]"))], **arrays)


def _psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def measure_codecs(root: Path, files: Sequence[str], sizes: Sequence[int] = (64, 96, 128),
                   settings: Sequence[tuple[str, int]] = (("jpeg", 85), ("jpeg", 95), ("webp", 80), ("webp", 90),
                                                          ("webp", 95)),
                   progress: bool = True) -> pd.DataFrame:
    """Bytes per image, PSNR (dB) against the unencoded resize, and decode time for codec x quality x size.

    One row per (codec, quality, size): mean_bytes, psnr_db (mean over images), decode_ms (per image,
    one thread).
    """
    rows = []
    for size in sizes:
        references = [read_face(Path(root) / f, size) for f in files]
        for codec, quality in tqdm(settings, desc=f"codecs {size}px", disable=not progress):
            blobs = [encode_image(r, codec, quality) for r in references]
            started = time.perf_counter()
            decoded = [decode_image(b) for b in blobs]
            decode_ms = (time.perf_counter() - started) * 1000 / max(len(blobs), 1)
            rows.append({
                "codec": codec, "quality": quality, "size": size,
                "mean_bytes": float(np.mean([len(b) for b in blobs])),
                "psnr_db": float(np.mean([_psnr(r, d) for r, d in zip(references, decoded)])),
                "decode_ms": decode_ms,
            })
    return pd.DataFrame(rows)
