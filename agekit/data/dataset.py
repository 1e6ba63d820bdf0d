"""In-memory face tensors for training and evaluation, from a pack or straight from the JPEG folder.

Both loaders return a `FaceTensors` whose images are uint8 (N, 3, S, S) RGB, decoded once; rows follow
the split manifest's order (sorted file names), so `load_pack(p, "test")` and
`load_folder(root, m, "test", S)` list the same files with the same labels.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from agekit.data.pack import SPLIT_CODES, PackError, decode_image, read_pack
from agekit.data.split import SPLITS, SplitManifest, load_manifest
from agekit.data.utkface import MalformedName, parse_filename, read_face, resolve_data_root
from agekit.labels import TASKS

ALL_SPLITS = "all"  # load every split a pack holds


@dataclass
class FaceTensors:
    """A decoded set of faces with their labels.

    images: uint8 (N, 3, S, S) RGB; age (years), gender, ethnicity: int64 (N,); files: N names;
    manifest_hash: sha256 of the split manifest the rows came from; skipped: (file, reason) for files
    of the split that could not be read and are therefore missing from the tensors.
    """

    images: torch.Tensor
    age: torch.Tensor
    gender: torch.Tensor
    ethnicity: torch.Tensor
    files: list[str]
    manifest_hash: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.files)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N,3,S,S), got {self.images.dtype} {tuple(self.images.shape)}")
        for name in ("images", *TASKS):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows but there are {n} files")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def targets(self) -> dict[str, torch.Tensor]:
        """{'age': years, 'gender': codes, 'ethnicity': codes}, each int64 (N,)."""
        return {task: getattr(self, task) for task in TASKS}

    def images_digest(self) -> str:
        """sha256 (first 16 hex digits) of the decoded pixels: tells two sets of the same files apart when their
        crops differ (a pack rebuilt by another version of the face path)."""
        return hashlib.sha256(self.images.contiguous().numpy().tobytes()).hexdigest()[:16]

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor | slice) -> FaceTensors:
        """The rows at `indices` (ints, a boolean mask or a slice); `skipped` is carried over unchanged."""
        if isinstance(indices, slice):
            index = torch.arange(len(self))[indices]
        else:
            index = torch.as_tensor(np.asarray(indices) if not isinstance(indices, torch.Tensor) else indices)
            if index.dtype == torch.bool:
                index = index.nonzero().flatten()
            index = index.long().reshape(-1)
        files = [self.files[i] for i in index.tolist()]
        return FaceTensors(self.images[index], self.age[index], self.gender[index], self.ethnicity[index],
                           files, self.manifest_hash, list(self.skipped))


def concat_faces(sets: Sequence[FaceTensors]) -> FaceTensors:
    """Several sources' faces as one set (rows in the given order). The images must share one size; the
    result keeps the first set's manifest_hash (the primary source's split, the one a ModelCard records)."""
    if not sets:
        raise ValueError("concat_faces needs at least one set of faces")
    sizes = {tuple(s.images.shape[2:]) for s in sets}
    if len(sizes) > 1:
        raise ValueError(f"cannot combine faces of different sizes {sorted(sizes)}; build the packs at one --size")
    return FaceTensors(torch.cat([s.images for s in sets]),
                       *(torch.cat([getattr(s, t) for s in sets]) for t in TASKS),
                       files=[f for s in sets for f in s.files], manifest_hash=sets[0].manifest_hash,
                       skipped=[x for s in sets for x in s.skipped])


def _decode_all(count: int, size: int, decode: Callable[[int], np.ndarray], workers: int
                ) -> tuple[np.ndarray, list[str | None]]:
    """Decode `count` images with `decode(i) -> (S,S,3)` into one (count,3,S,S) array; errors per row."""
    images = np.zeros((count, 3, size, size), dtype=np.uint8)
    errors: list[str | None] = [None] * count

    def work(i: int) -> None:
        try:
            pixels = decode(i)
            if pixels.shape != (size, size, 3):
                raise ValueError(f"decoded to {pixels.shape}, expected ({size}, {size}, 3)")
            images[i] = pixels.transpose(2, 0, 1)
        except Exception as exc:  # noqa: BLE001 — one bad image must not sink the whole load
            errors[i] = f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(work, range(count)))
    return images, errors


def _tensors(images: np.ndarray, errors: list[str | None], files: Sequence[str], labels: dict[str, np.ndarray],
             manifest_hash: str, skipped: list[tuple[str, str]]) -> FaceTensors:
    ok = np.array([e is None for e in errors], dtype=bool)
    skipped = skipped + [(f, e) for f, e in zip(files, errors) if e is not None]
    return FaceTensors(
        torch.from_numpy(images[ok] if not ok.all() else images),
        *(torch.from_numpy(np.ascontiguousarray(labels[t][ok], dtype=np.int64)) for t in TASKS),
        files=[f for f, good in zip(files, ok) if good], manifest_hash=manifest_hash, skipped=skipped,
    )


def load_pack(path: str | os.PathLike[str], split: str = ALL_SPLITS, workers: int = 2,
              expected_manifest_hash: str | None = None) -> FaceTensors:
    """Decode one split ('train', 'val', 'test' or 'all') of a pack file into memory.

    Raises PackError when the file is not a pack, or when `expected_manifest_hash` is given and the pack
    was built from another manifest.
    """
    if split != ALL_SPLITS and split not in SPLIT_CODES:
        raise ValueError(f"unknown split {split!r}; choose from {[*SPLITS, ALL_SPLITS]}")
    pack = read_pack(path)
    if expected_manifest_hash is not None and pack.manifest_hash != expected_manifest_hash:
        raise PackError(f"pack {str(path)!r} was built from manifest {pack.manifest_hash[:12]}…, not "
                        f"{expected_manifest_hash[:12]}…; rebuild it with python -m agekit.data pack")
    rows = np.arange(len(pack)) if split == ALL_SPLITS else np.flatnonzero(pack.split == SPLIT_CODES[split])
    images, errors = _decode_all(len(rows), pack.size, lambda i: decode_image(pack.image_bytes(rows[i])), workers)
    labels = {t: getattr(pack, t)[rows] for t in TASKS}
    files = [pack.files[i] for i in rows]
    return _tensors(images, errors, files, labels, pack.manifest_hash, list(map(tuple, pack.skipped)))


def load_folder(root: str | os.PathLike[str] | None = None, manifest: SplitManifest | str | os.PathLike[str] | None = None,
                split: str = "test", size: int = 128, workers: int = 2) -> FaceTensors:
    """Decode one split ('train', 'val', 'test' or 'all') of the manifest from the UTKFace folder, resized to S x S.

    root: the folder (None: AGEKIT_UTKFACE); manifest: a SplitManifest, a manifest path or None for the
    shipped one. Unreadable or missing files are listed in `.skipped`, never silently dropped.
    """
    root = resolve_data_root(root)
    if not isinstance(manifest, SplitManifest):
        manifest = load_manifest(manifest)
    if split == ALL_SPLITS:
        rows = manifest.frame[manifest.frame["split"].isin(list(SPLITS))]
    elif split in SPLITS:
        rows = manifest.rows(split)
    else:
        raise ValueError(f"unknown split {split!r}; choose from {[*SPLITS, ALL_SPLITS]}")
    files = rows["file"].tolist()
    images, errors = _decode_all(len(files), size, lambda i: read_face(root / files[i], size), workers)
    labels = {t: rows[t].to_numpy(np.int64) for t in TASKS}
    return _tensors(images, errors, files, labels, manifest.hash, [])


def load_files(root: str | os.PathLike[str] | None, files: Sequence[str], size: int = 128,
               workers: int = 2) -> FaceTensors:
    """Decode the named files of the UTKFace folder, resized to S x S, with labels parsed from the names.

    For any subset (a sample, or files the manifest excludes such as extra copies); root None reads
    AGEKIT_UTKFACE. Malformed names and unreadable files are listed in `.skipped`. manifest_hash is "":
    the rows do not come from a split manifest.
    """
    root = resolve_data_root(root)
    records, skipped = [], []
    for file in files:
        try:
            records.append(parse_filename(file))
        except MalformedName as err:
            skipped.append((file, str(err)))
    names = [r.file for r in records]
    images, errors = _decode_all(len(names), size, lambda i: read_face(root / names[i], size), workers)
    labels = {t: np.array([getattr(r, t) for r in records], dtype=np.int64) for t in TASKS}
    return _tensors(images, errors, names, labels, "", skipped)
