"""The test-face pack shipped inside the repository: UTKFace's test split, small enough to commit.

The 2,216 test faces of the shipped split manifest, resized to 128 px (the side of the training packs) and
stored as WebP q85 in one agekit face pack (agekit.data.pack, under 5 MB), so the app's Error-analysis tab works
where no UTKFace folder exists (a Hugging Face Space). Its sha256 is recorded beside it and checked on load.
UTKFace's licence (non-commercial research only) applies to it: see LICENSE-UTKFace.md in the same folder.

Regenerate (pack + checksum) with:

    python -m agekit.data test-faces /path/to/UTKFace
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agekit.artifacts import file_sha256
from agekit.data.pack import SPLIT_CODES, PackContents, PackError, PackSummary, decode_image, read_pack, write_pack
from agekit.data.split import SplitManifest, load_manifest

TEST_FACES_DIR = Path(__file__).resolve().parent / "test_faces"
TEST_FACES_PACK = TEST_FACES_DIR / "utkface_test_128.safetensors"
TEST_FACES_NOTICE = TEST_FACES_DIR / "LICENSE-UTKFace.md"
# px: the side of the training packs, so each model resizes these faces to its input as in training. At 112 px
# (the largest input) the three 112-px models' test age MAE from the pack was 0.15-0.27 years worse than from
# the JPEGs; at 128 px none is worse by more than 0.01 (docs/experiments.md, "Test faces shipped with the app").
TEST_FACES_SIZE = 128
TEST_FACES_QUALITY = 85  # WebP: keeps the pack under 5 MB (quality 90 would be 6.1 MB)
TEST_SPLIT = "test"


def checksum_path(pack: str | os.PathLike[str]) -> Path:
    """Where a pack's sha256 is recorded: `<pack>.sha256`, in `sha256sum` format (`sha256sum -c` reads it)."""
    pack = Path(pack)
    return pack.with_name(pack.name + ".sha256")


@dataclass(frozen=True)
class PackedFaces:
    """The images of a face pack looked up by UTKFace file name, decoded on demand."""

    pack: PackContents
    rows: dict[str, int]  # file name -> row of the pack

    def __len__(self) -> int:
        return len(self.rows)

    def __contains__(self, file: object) -> bool:
        return file in self.rows

    def image(self, file: str) -> np.ndarray:
        """The face stored for `file` as (S, S, 3) uint8 RGB; KeyError when the pack does not hold it."""
        return decode_image(self.pack.image_bytes(self.rows[file]))


def write_test_faces(root: str | os.PathLike[str], manifest: SplitManifest | None = None,
                     out: str | os.PathLike[str] = TEST_FACES_PACK, size: int = TEST_FACES_SIZE,
                     quality: int = TEST_FACES_QUALITY, workers: int = 2, progress: bool = True) -> PackSummary:
    """Build the test-face pack from the UTKFace folder `root` and record its sha256 beside it."""
    manifest = manifest or load_manifest()
    summary = write_pack(Path(root), manifest, out, size=size, codec="webp", quality=quality, splits=(TEST_SPLIT,),
                         workers=workers, progress=progress)
    checksum_path(out).write_text(f"{file_sha256(out)}  {Path(out).name}\n")
    return summary


def load_test_faces(path: str | os.PathLike[str] = TEST_FACES_PACK,
                    manifest: SplitManifest | None = None) -> PackedFaces:
    """Open the test-face pack after checking its recorded sha256, its manifest and that it holds test faces only.

    Raises PackError saying how to regenerate it when any check fails.
    """
    path = Path(path)
    regenerate = "regenerate it with: python -m agekit.data test-faces /path/to/UTKFace"
    recorded = checksum_path(path)
    if not path.is_file() or not recorded.is_file():
        missing = path if not path.is_file() else recorded
        raise PackError(f"the test-face pack file {missing.name} is missing; {regenerate}")
    expected = recorded.read_text().split()[0] if recorded.read_text().strip() else ""
    if file_sha256(path) != expected:
        raise PackError(f"the test-face pack {path.name} does not match its recorded sha256 ({recorded.name}): "
                        f"it is damaged or was rebuilt without its checksum; {regenerate}")
    pack = read_pack(path)
    manifest = manifest or load_manifest()
    if pack.manifest_hash != manifest.hash:
        raise PackError(f"the test-face pack was built from split manifest {pack.manifest_hash[:12]}…, not the "
                        f"shipped {manifest.hash[:12]}…; {regenerate}")
    if not (pack.split == SPLIT_CODES[TEST_SPLIT]).all():
        raise PackError(f"the test-face pack {path.name} holds faces outside the test split; {regenerate}")
    return PackedFaces(pack, {file: row for row, file in enumerate(pack.files)})
