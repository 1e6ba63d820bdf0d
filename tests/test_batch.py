"""Results as data (agekit.photo_results) and many photos at once (agekit.batch): rows, CSV, JSON, zip bounds,
per-photo errors, and the `python -m agekit.predict` command."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from agekit import batch
from agekit.faces import FaceCrop, NoFaceFound
from agekit.labels import UTK7
from agekit.photo_results import analyse_photo, csv_text, result_json, result_rows
from agekit.predict import ModelZoo

REPO = Path(__file__).resolve().parents[1]
ASTRONAUT = REPO / "examples" / "nasa_astronaut_eileen_collins.jpg"


class TwoFaces:
    """Stands in for MTCNN: two faces, the larger (right) first; a grey image has none."""

    def detect(self, image: Image.Image, assume_cropped: bool = False) -> list[FaceCrop]:
        if image.getextrema() == ((128, 128),) * 3:
            raise NoFaceFound("no face found")
        crop = Image.fromarray(np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8))
        return [FaceCrop(crop, (300.0, 50.0, 420.0, 200.0), 0.99, (280, 40, 440, 210), 2),
                FaceCrop(crop, (20.0, 60.0, 50.0, 100.0), 0.95, (10, 50, 60, 110), 2)]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, save_tiny) -> ModelZoo:
    root = tmp_path_factory.mktemp("zoo")
    save_tiny(root / "tiny_multi", family="multitask", widths=(8, 16), seed=10)
    save_tiny(root / "tiny_gender", tasks=("gender",), widths=(8, 16), seed=11)
    return ModelZoo.load(root)


def photo(folder: Path, name: str, colour: tuple[int, int, int] = (200, 180, 160)) -> Path:
    path = folder / name
    Image.new("RGB", (480, 320), colour).save(path)
    return path


def test_rows_are_every_face_by_model_left_to_right_with_flags(zoo: ModelZoo, tmp_path: Path) -> None:
    result = analyse_photo(Image.open(photo(tmp_path, "a.png")), TwoFaces(), zoo, source="a.png")
    rows = result_rows(result, ["tiny_multi", "tiny_gender"])
    assert [(r["face"], r["model"]) for r in rows] == [(1, "tiny_multi"), (1, "tiny_gender"),
                                                       (2, "tiny_multi"), (2, "tiny_gender")]
    assert (rows[0]["x1"], rows[2]["x1"]) == (20.0, 300.0)  # numbered left to right
    assert rows[0]["flags"] == "tiny" and rows[2]["flags"] == ""  # the left face is 30 px wide
    multi = result.predictions["tiny_multi"][0]
    assert rows[0]["age"] == round(multi.age, 2) and rows[0]["age_bin"] == multi.age_bin
    assert [rows[0][f"p_age_{n}"] for n in UTK7.names] == [round(float(p), 4) for p in multi.age_bin_probs]
    assert rows[1]["age"] == "" and rows[1]["gender"] in ("male", "female")  # gender-only model

    table = pd.read_csv(io.StringIO(csv_text(rows)), keep_default_na=False)
    assert len(table) == 4 and {"photo", "x1", "age_lo", "age_hi", "p_age_0-2", "p_White"} <= set(table.columns)
    assert table.loc[1, "p_White"] == ""  # the gender-only model leaves the ethnicity columns empty

    data = result_json(result, ["tiny_multi", "tiny_gender"])
    json.dumps(data)
    first = data["faces"][0]
    assert first["flags"][0]["code"] == "tiny" and first["predictions"]["tiny_multi"]["age_bin"] == multi.age_bin
    assert first["predictions"]["tiny_multi"]["age_bin_probability"] == round(multi.age_bin_confidence, 4)


def test_batch_inputs_from_files_and_zips_are_bounded(tmp_path: Path) -> None:
    files = [photo(tmp_path, f"{i}.png") for i in range(3)]
    archive = tmp_path / "photos.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in files[:2]:
            zipped.write(path, f"trip/{path.name}")
        zipped.writestr("trip/notes.txt", "not a photo")
        zipped.writestr("__MACOSX/trip/._0.png", b"metadata")
    inputs = batch.batch_inputs([files[2], archive])
    assert [p.name for p in inputs] == ["2.png", "photos.zip/trip/0.png", "photos.zip/trip/1.png"]
    assert inputs[1].data == files[0].read_bytes()
    with pytest.raises(ValueError, match="at most 2 photos"):
        batch.batch_inputs([*files], max_photos=2)
    with pytest.raises(ValueError, match="holds 2 photos; a batch takes at most 1"):
        batch.batch_inputs([archive], max_photos=1)
    (tmp_path / "broken.zip").write_bytes(b"PK not really")
    with pytest.raises(ValueError, match="not a readable zip file"):
        batch.batch_inputs([tmp_path / "broken.zip"])
    with pytest.raises(ValueError, match="no photos"):
        batch.batch_inputs([])


def test_a_bad_photo_gets_an_error_row_and_the_others_go_on(zoo: ModelZoo, tmp_path: Path) -> None:
    (tmp_path / "notes.jpg").write_text("not an image")
    inputs = batch.batch_inputs([photo(tmp_path, "a.png"), tmp_path / "notes.jpg",
                                 photo(tmp_path, "wall.png", (128, 128, 128)), photo(tmp_path, "b.png")])
    seen = []
    rows = batch.analyse_batch(inputs, TwoFaces(), zoo, ["tiny_multi"], progress=lambda i, name: seen.append(name))
    assert seen == ["a.png", "notes.jpg", "wall.png", "b.png"]
    assert [(r["photo"], "error" in r) for r in rows] == [("a.png", False), ("a.png", False), ("notes.jpg", True),
                                                          ("wall.png", True), ("b.png", False), ("b.png", False)]
    assert "not an image" in rows[2]["error"] and "no face found" in rows[3]["error"]
    # the pixel budget: the second photo passes it and is skipped, not analysed
    budget = batch.analyse_batch(inputs[:1] + inputs[3:], TwoFaces(), zoo, ["tiny_multi"], max_pixels=200_000)
    assert budget[-1]["photo"] == "b.png" and budget[-1]["error"].startswith("skipped: the batch passed")


def test_the_command_writes_one_csv_of_every_photo(tmp_path: Path, save_tiny) -> None:
    save_tiny(tmp_path / "checkpoints" / "tiny_multi", family="multitask")
    out = tmp_path / "results.csv"
    wall = photo(tmp_path, "wall.png", (128, 128, 128))
    done = subprocess.run([sys.executable, "-m", "agekit.predict", str(ASTRONAUT), str(wall), "--out", str(out),
                           "--checkpoints", str(tmp_path / "checkpoints")], cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=True)
    table = pd.read_csv(out)
    assert list(table["photo"]) == [ASTRONAUT.name, "wall.png"] and table.loc[0, "model"] == "tiny_multi"
    assert "no face found" in table.loc[1, "error"]
    assert "wrote" in done.stdout and "1 photos gave no result" in done.stdout
    assert "2/2" in done.stderr  # tqdm's bar
