"""bench.train_pipeline: the JPEG baseline reads the same faces and labels as the packed pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from agekit.data import load_folder, load_manifest, write_manifest
from agekit.data.split import MANIFEST_COLUMNS
from bench.train_pipeline import JpegFaces


def test_jpeg_baseline_matches_the_folder_loader(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        name = f"{20 + i}_{i % 2}_{i % 5}_20170104000000{i:03d}.jpg.chip.jpg"
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(tmp_path / name, quality=90)
        rows.append([name, 20 + i, i % 2, i % 5, "train" if i < 6 else "test", -1, ""])
    manifest_path = tmp_path / "split.csv"
    write_manifest(pd.DataFrame(rows, columns=MANIFEST_COLUMNS), manifest_path)
    manifest = load_manifest(manifest_path)

    jpeg = JpegFaces(tmp_path, "train", size=32, manifest=manifest)
    folder = load_folder(tmp_path, manifest, "train", size=32)

    assert len(jpeg) == len(folder) == 6
    for i in range(len(jpeg)):
        pixels, labels = jpeg[i]
        assert pixels.shape == (3, 32, 32)
        assert labels.tolist() == [int(folder.age[i]), int(folder.gender[i]), int(folder.ethnicity[i])]
        assert (pixels.int() - folder.images[i].int()).abs().max() <= 1
