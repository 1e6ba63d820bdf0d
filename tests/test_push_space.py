"""tools.push_space: what a Space and a model repository receive, checked on files without any network."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from agekit.data.test_faces import TEST_FACES_PACK
from tools import push_space
from tools.push_space import REPO_ROOT, SPACE_ALLOW, SPACE_IGNORE, selected_files, space_files

SPACE_BUDGET_MIB = 60  # the selection measured 35.0 MiB (118 files) when the six checkpoints shipped
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def test_the_working_tree_selection_holds_the_app_and_no_dataset() -> None:
    files = space_files()
    assert {"app.py", "README.md", "requirements.txt", "agekit/__init__.py", "agekit/faces/detect.py",
            TEST_FACES_PACK.relative_to(REPO_ROOT).as_posix(), "agekit/data/test_faces/LICENSE-UTKFace.md",
            "examples/README.md"} <= set(files)
    shipped = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "checkpoints").rglob("*")
               if p.is_file() and p.name != "resume.pt" and not p.name.startswith(".") and "__pycache__" not in p.parts}
    assert shipped <= set(files) and any(f.endswith("/model.safetensors") for f in shipped)  # every checkpoint file
    top_level = {f.split("/")[0] for f in files}
    assert top_level <= {"app.py", "README.md", "requirements.txt", "agekit", "checkpoints", "examples"}
    assert not [f for f in files if "__pycache__" in f or f.endswith((".pyc", "resume.pt"))]
    # UTKFace images: only the pack (one file) and the documented examples, never a chip
    assert not [f for f in files if f.endswith(".chip.jpg")]
    assert [f for f in files if f.lower().endswith(IMAGE_SUFFIXES) and not f.startswith("examples/")] == []
    total = sum((REPO_ROOT / f).stat().st_size for f in files) / 2**20
    assert total <= SPACE_BUDGET_MIB, f"the Space would receive {total:.1f} MiB"


def test_runs_packs_venv_and_raw_data_are_never_selected(tmp_path: Path) -> None:
    wanted = ["app.py", "README.md", "requirements.txt", "agekit/faces/detect.py",
              "agekit/data/test_faces/utkface_test_128.safetensors", "checkpoints/m/model.safetensors",
              "checkpoints/m/README.md", "checkpoints/m/eval/metrics.json", "examples/a.jpg"]
    unwanted = ["runs/wild/test.npz", "packs/utkface_128.safetensors", ".venv/lib/site.py", "tests/test_x.py",
                "data/UTKFace/25_0_1_2017.jpg.chip.jpg", "agekit/__pycache__/x.cpython-311.pyc",
                "checkpoints/m/resume.pt", "checkpoints/m/.DS_Store", "docs/walkthrough.ipynb", "bench/speed.py",
                "notes.md", ".git/config"]
    for name in wanted + unwanted:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert space_files(tmp_path) == sorted(wanted)


class FakeHub:
    """Records what HfApi would have been asked to do."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id: str, **kwargs) -> None:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs) -> SimpleNamespace:
        self.calls.append(("upload_folder", kwargs))
        return SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc")


def test_push_space_creates_a_gradio_space_and_uploads_the_selection() -> None:
    hub = FakeHub()
    assert push_space.push_space("me/agekit", api=hub) == "https://huggingface.co/me/agekit/commit/abc"
    (create, created), (upload, uploaded) = hub.calls
    assert create == "create_repo" and created == {"repo_id": "me/agekit", "repo_type": "space",
                                                    "space_sdk": "gradio", "private": False, "exist_ok": True}
    assert upload == "upload_folder" and uploaded["repo_type"] == "space" and uploaded["folder_path"] == REPO_ROOT
    assert uploaded["allow_patterns"] == SPACE_ALLOW and uploaded["ignore_patterns"] == SPACE_IGNORE


def test_push_model_uploads_one_checkpoint_with_its_card(tmp_path: Path) -> None:
    hub = FakeHub()
    folder = REPO_ROOT / "checkpoints" / "pretrained_onet"
    push_space.push_model("me/onet", folder, api=hub)
    assert hub.calls[0][1]["repo_type"] == "model" and hub.calls[1][1]["folder_path"] == folder
    assert {"README.md", "config.json", "model.safetensors"} <= set(
        selected_files(folder, None, hub.calls[1][1]["ignore_patterns"]))
    with pytest.raises(ValueError, match="has no model card"):
        push_space.push_model("me/x", tmp_path, api=FakeHub())


def test_dry_run_lists_and_sends_nothing(capsys, monkeypatch) -> None:
    monkeypatch.setattr(push_space, "HfApi", None)  # any use of the Hub would fail
    assert push_space.main(["me/onet", "--model", "pretrained_onet", "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "model.safetensors" in out and out[-1].endswith("MiB")
    assert push_space.main(["me/x", "--model", "nope", "--dry-run"]) == 2
    assert "no checkpoint nope" in capsys.readouterr().err
