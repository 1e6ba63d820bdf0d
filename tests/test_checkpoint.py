"""Checkpoint round trips, fp16 storage, and the errors a broken checkpoint folder must give."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from agekit.card import ModelCard
from agekit.checkpoint import (
    CheckpointError,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from agekit.models import create_model

KWARGS = {"widths": [8, 16], "in_chans": 3}


def trained_looking_model(shared: bool = True):
    """A tiny facecnn whose BatchNorm statistics are not the defaults (as after training)."""
    torch.manual_seed(0)
    model = create_model("facecnn", shared_backbone=shared, **KWARGS)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 3, 16, 16) * 3 - 1)
    return model.eval()


def card_for(model, name: str = "tiny") -> ModelCard:
    return ModelCard(name=name, family="scratch", architecture="facecnn", tasks=model.tasks,
                     shared_backbone=model.shared_backbone, architecture_kwargs=dict(KWARGS), input_size=16)


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "bundle"])
def test_round_trip_predicts_the_same(tmp_path, shared: bool) -> None:
    model = trained_looking_model(shared)
    folder = save_checkpoint(tmp_path / "tiny", model, card_for(model))
    loaded = load_checkpoint(folder)
    assert not loaded.model.training and loaded.folder == folder
    assert loaded.card.params == sum(p.numel() for p in model.parameters()) > 0
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        expected, got = model(x), loaded.model(x)
    for task in model.tasks:
        torch.testing.assert_close(got[task].softmax(1), expected[task].softmax(1), atol=1e-2, rtol=0)


def test_float16_storage_keeps_batchnorm_statistics_float32(tmp_path) -> None:
    model = trained_looking_model()
    with torch.no_grad():
        model.heads["age"].fc.bias[0] = 1e5  # beyond float16's range: must stay float32
    folder = save_checkpoint(tmp_path / "tiny", model, card_for(model))
    with safe_open(str(folder / "model.safetensors"), framework="pt") as weights:
        dtypes = {key: weights.get_slice(key).get_dtype() for key in weights.keys()}  # noqa: SIM118 (safe_open is not a dict)
    assert dtypes["backbone.blocks.0.0.0.weight"] == "F16"
    assert dtypes["backbone.blocks.0.0.1.running_var"] == "F32"
    assert dtypes["backbone.blocks.0.0.1.num_batches_tracked"] == "I64"
    assert dtypes["heads.age.fc.bias"] == "F32"
    loaded = load_checkpoint(folder).model.state_dict()
    state = model.state_dict()
    assert torch.equal(loaded["backbone.blocks.0.0.1.running_var"], state["backbone.blocks.0.0.1.running_var"])
    assert torch.equal(loaded["backbone.blocks.0.0.0.weight"], state["backbone.blocks.0.0.0.weight"].half().float())
    assert loaded["heads.age.fc.bias"][0].item() == 1e5


def test_full_precision_storage_is_exact(tmp_path) -> None:
    model = trained_looking_model()
    folder = save_checkpoint(tmp_path / "exact", model, card_for(model), half=False)
    loaded = load_checkpoint(folder).model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_list_checkpoints_finds_complete_folders(tmp_path) -> None:
    model = trained_looking_model()
    for name in ("b_model", "a_model"):
        save_checkpoint(tmp_path / name, model, card_for(model, name))
    (tmp_path / "half_written").mkdir()
    (tmp_path / "half_written" / "config.json").write_text("{}")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["a_model", "b_model"]
    assert list_checkpoints(tmp_path / "missing") == []


@pytest.fixture
def saved(tmp_path):
    model = trained_looking_model()
    return save_checkpoint(tmp_path / "tiny", model, card_for(model))


def _edit_config(folder, **changes) -> None:
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))


def test_unknown_architecture_in_config(saved) -> None:
    _edit_config(saved, architecture="resnet9000")
    with pytest.raises(CheckpointError, match="unknown architecture 'resnet9000'"):
        load_checkpoint(saved)


def test_config_with_fewer_tasks_than_the_weights(saved) -> None:
    _edit_config(saved, tasks=["age", "gender"])
    with pytest.raises(CheckpointError, match="unexpected 2: heads.ethnicity.fc.bias"):
        load_checkpoint(saved)


def test_config_with_other_widths_than_the_weights(saved) -> None:
    _edit_config(saved, architecture_kwargs={"widths": [8, 32], "in_chans": 3})
    with pytest.raises(CheckpointError, match=r"shape mismatch 13: backbone.blocks.1.0.0.weight: file \(16, 8, 3, 3\) vs model \(32, 8, 3, 3\)"):
        load_checkpoint(saved)


def test_config_with_kwargs_the_builder_does_not_take(saved) -> None:
    _edit_config(saved, architecture_kwargs={"depth": 3})
    with pytest.raises(CheckpointError, match="do not fit 'facecnn'"):
        load_checkpoint(saved)


def test_truncated_weights(saved) -> None:
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:300])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(saved)


def test_missing_files_and_folder(saved, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")
    (saved / "config.json").unlink()
    with pytest.raises(CheckpointError, match="no config.json"):
        load_checkpoint(saved)


def test_invalid_config_json(saved) -> None:
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(saved)


def test_card_must_describe_the_model(tmp_path) -> None:
    model = trained_looking_model()
    card = card_for(model)
    card.tasks = ("age",)
    with pytest.raises(CheckpointError, match="card describes"):
        save_checkpoint(tmp_path / "x", model, card)
