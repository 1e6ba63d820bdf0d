"""training.gpu_zoo: the CPU smoke of the one-call GPU run (train, table, evaluate, bundle), its planning
arithmetic, the compact pretrained weights it carries, and the device-size check."""

from __future__ import annotations

import json
import tarfile

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

from agekit.checkpoint import load_checkpoint, storage_state_dict
from agekit.data import load_manifest, write_pack
from agekit.data.pack import PackError
from agekit.data.split import SplitManifest
from agekit.data.test_faces import TEST_FACES_PACK
from agekit.engine import build_model
from agekit.models import create_model
from agekit.models.pretrained import shipped_onet_weights
from training import gpu_zoo
from training.gpu_zoo import GpuSettings, choose_test_pack, override_args, plan_epochs, share_of, summarise_history
from training.train import init_source, parse_overrides


@pytest.mark.slow
def test_smoke_trains_skips_evaluates_and_bundles(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(gpu_zoo, "COMPACT_DIR", tmp_path / "gpu")
    monkeypatch.setitem(gpu_zoo.ZOO, "pretrained_onet",
                        GpuSettings({"pretrained_weights": str(tmp_path / "gpu" / "no.pt")}))
    monkeypatch.setitem(gpu_zoo.ZOO, "multitask_dlib", GpuSettings({"pretrained_weights": "checkpoints/no/model.st"}))
    out, bundle = tmp_path / "zoo", tmp_path / "bundle"
    assert gpu_zoo.main(["--smoke", "--configs", "scratch_mobilenet,pretrained_onet,multitask_dlib,no_such_config",
                         "--out", str(out), "--bundle", str(bundle)]) == 0
    printed = capsys.readouterr().out
    test_lines = [line for line in printed.splitlines() if line.startswith("test faces: ")]
    assert len(test_lines) == 2 and test_lines[0] == test_lines[1]  # before training and at the evaluation
    assert test_lines[0].startswith("test faces: the test split of ") and test_lines[0].endswith("/smoke.safetensors")
    assert "skip no_such_config: training/configs/no_such_config.yaml not found" in printed
    assert f"skip pretrained_onet: {tmp_path / 'gpu' / 'no.pt'} not found; write it with python -m " \
           "training.gpu_zoo --export-weights" in printed
    assert "skip multitask_dlib: checkpoints/no/model.st not found; it belongs to the working tree" in printed
    assert "gpu_zoo: 1 trained, 0 failed, 3 skipped" in printed

    folder = out / "checkpoints" / "scratch_mobilenet"
    card = json.loads((folder / "config.json").read_text())
    trained = card["train_config"]
    assert (trained["epochs"], trained["patience"], trained["batch_size"], trained["channels_last"]) == (1, 0, 8, True)
    assert trained["time_limit_s"] > 0 and not trained["save_resume"] and card["input_size"] == 112
    assert load_checkpoint(folder).card.name == "scratch_mobilenet"
    assert not (folder / "resume.pt").exists()

    table = pd.read_csv(out / "throughput.csv")
    assert table["name"].tolist() == ["scratch_mobilenet"] and table.loc[0, "epochs_run"] == 1
    assert table.loc[0, "images_per_s"] > 0 and table.loc[0, "checkpoint_mib"] < 16
    metrics = json.loads((folder / "eval" / "metrics.json").read_text())
    assert metrics["data"]["n_evaluated"] == gpu_zoo.SMOKE_SPLITS["test"] and metrics["data"]["pack"].endswith(
        "smoke.safetensors")
    assert metrics["data"]["hash_match"] and metrics["data"]["decode_size"] == 48

    parts = sorted(bundle.glob("results.tar.gz.part*"))
    assert parts and (bundle / "throughput.md").read_text() == (out / "throughput.md").read_text()
    joined = tmp_path / "joined.tar.gz"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        names = set(tar.getnames())
    assert {"./throughput.csv", "./checkpoints/scratch_mobilenet/model.safetensors",
            "./checkpoints/scratch_mobilenet/eval/metrics.json", "./checkpoints/leaderboard.csv"} <= names
    with pytest.raises(SystemExit, match="is not empty"):  # stale checkpoints would join the leaderboard
        gpu_zoo.main(["--smoke", "--configs", "scratch_mobilenet", "--out", str(out)])


def test_bundle_parts_respect_the_size_and_warn_over_the_file_count(tmp_path, capsys) -> None:
    source = tmp_path / "out"
    source.mkdir()
    (source / "noise.bin").write_bytes(torch.randint(0, 256, (40_000,), dtype=torch.uint8).numpy().tobytes())
    parts = gpu_zoo.write_bundle(source, tmp_path / "bundle", part_bytes=4_000)
    assert len(parts) > 8 and all(p.stat().st_size <= 4_000 for p in parts)
    assert "more than the device returns (8 files, 64 MiB)" in capsys.readouterr().out
    joined = tmp_path / "joined.tar.gz"
    joined.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(joined) as tar:
        assert tar.extractfile("./noise.bin").read() == (source / "noise.bin").read_bytes()


def test_epoch_plan_and_time_shares() -> None:
    # one epoch = 1.15 x (10,000 train + 3,000 / 3 validation images) / 1,000 images/s = 12.65 s
    assert plan_epochs(100, 1000, 10_000, 3_000, max_epochs=60) == 7
    assert plan_epochs(100, 1000, 10_000, 3_000, max_epochs=5) == 5
    assert plan_epochs(1, 1000, 10_000, 3_000, max_epochs=60, min_epochs=2) == 2
    assert share_of(300, 2.0, 4.0) == 150 and share_of(-5, 1.0, 1.0) == 0


def test_history_summary_leaves_out_the_warm_up_epoch() -> None:
    rows = [{"images_per_s": 10.0, "seconds": 9.0, "val_age_mae": 7.0},
            {"images_per_s": 100.0, "seconds": 1.0, "val_age_mae": 6.0},
            {"images_per_s": 120.0, "seconds": 0.8, "val_age_mae": 6.5}]
    assert summarise_history(rows) == {"images_per_s": 110.0, "seconds_per_epoch": 0.9, "best_val_age_mae": 6.0}
    assert summarise_history(rows[:1])["images_per_s"] == 10.0


def test_overrides_survive_the_training_command_line() -> None:
    overrides = {"lr": 0.003, "pretrained_weights": None, "tasks": ["age"], "device": "cuda", "amp": True}
    args = override_args(overrides)
    assert args == ["lr=0.003", "pretrained_weights=", 'tasks=["age"]', 'device="cuda"', "amp=true"]
    assert parse_overrides(args) == overrides


def test_compact_weights_load_like_the_originals(tmp_path, monkeypatch) -> None:
    target = tmp_path / "gpu" / "onet.fp16.safetensors"
    monkeypatch.setattr(gpu_zoo, "COMPACT_DIR", tmp_path / "gpu")
    monkeypatch.setitem(gpu_zoo.ZOO, "pretrained_onet", GpuSettings({"pretrained_weights": str(target)}))
    stale = tmp_path / "gpu" / "dlib_face_recognition_resnet_model_v1.fp16.safetensors"  # an earlier export
    stale.parent.mkdir()
    stale.write_bytes(b"x")
    removed, line = gpu_zoo.export_compact_weights(["pretrained_onet", "scratch_facecnn", "multitask_dlib"])
    assert removed == f"removed {stale}: no zoo config reads it (it would only add to the carry)"
    assert not stale.exists() and sorted(p.name for p in target.parent.iterdir()) == [target.name]
    assert line.startswith(f"pretrained_onet: shipped weights → {target}")
    original = create_model("mtcnn_onet", tasks=("age",), pretrained_weights=str(shipped_onet_weights()))
    compact = create_model("mtcnn_onet", tasks=("age",), pretrained_weights=str(target))
    for key, value in original.backbone.state_dict().items():
        assert torch.equal(compact.backbone.state_dict()[key], value.half().float()), key


def test_dlib_backbone_reads_its_own_state_dict_file(tmp_path) -> None:
    torch.manual_seed(0)
    source = create_model("dlib_resnet29", tasks=("age",))
    path = tmp_path / "dlib.fp16.safetensors"
    save_file(storage_state_dict(source.backbone), str(path))
    loaded = create_model("dlib_resnet29", tasks=("age",), pretrained_weights=str(path))
    for key, value in source.backbone.state_dict().items():
        assert torch.equal(loaded.backbone.state_dict()[key], value.half().float()), key


def test_dlib_starts_from_the_committed_checkpoint_backbone(tmp_path) -> None:
    [entry], skipped = gpu_zoo.resolve_zoo(["multitask_dlib"], str(tmp_path / "pack.safetensors"),
                                           gpu_zoo.SMOKE_COMMON)
    assert not skipped and entry.config.pretrained_weights == gpu_zoo.DLIB_CHECKPOINT
    committed = load_file(gpu_zoo.DLIB_CHECKPOINT)
    backbone = build_model(entry.config).backbone.state_dict()
    assert len(backbone) == 117
    for key, value in backbone.items():
        assert torch.equal(value, committed[f"backbone.{key}"].float()), key
    assert init_source(entry.config).startswith("multitask_dlib/model.safetensors sha256:")


def test_test_faces_come_from_the_pack_or_the_shipped_test_face_pack(tmp_path) -> None:
    full = gpu_zoo.write_smoke_pack(tmp_path)
    manifest = load_manifest(tmp_path / "manifest.csv")
    assert choose_test_pack(str(full)) == (str(full), f"test faces: the test split of {full}")

    def pack_of(splits: tuple[str, ...], name: str, manifest: SplitManifest = manifest) -> str:
        return str(write_pack(tmp_path, manifest, tmp_path / name, size=32, splits=splits, workers=1,
                              progress=False).path)

    trainval, test_only = pack_of(("train", "val"), "trainval.safetensors"), pack_of(("test",), "test.safetensors")
    assert choose_test_pack(trainval, fallback=test_only) == (
        test_only, f"test faces: 8 from the shipped test-face pack {test_only} ({trainval} holds no test split)")
    with pytest.raises(PackError, match="has no test split and the test-face pack .* another split manifest"):
        choose_test_pack(trainval)  # a pack of the smoke manifest: the shipped test faces are another split's
    # a train+val pack of the committed manifest gets the shipped test-face pack, all 2,216 faces
    committed = SplitManifest(manifest.frame, manifest.path, load_manifest().hash)
    ours = pack_of(("train", "val"), "committed_trainval.safetensors", committed)
    shipped = f"test faces: 2,216 from the shipped test-face pack {TEST_FACES_PACK} ({ours} holds no test split)"
    assert choose_test_pack(ours) == (str(TEST_FACES_PACK), shipped)


def test_carry_report_counts_the_tree_and_the_carried_paths(tmp_path) -> None:
    carried = tmp_path / "pack.bin"
    carried.write_bytes(b"x" * gpu_zoo.MIB)
    total, report = gpu_zoo.carry_report([str(carried)])
    tree = int(float(report.splitlines()[0].split()[2]) * gpu_zoo.MIB)
    assert abs(total - tree - gpu_zoo.MIB) < 0.01 * gpu_zoo.MIB
    assert report.splitlines()[-1].endswith("fits")
    with pytest.raises(SystemExit, match="does not exist"):
        gpu_zoo.carry_report([str(tmp_path / "missing")])
