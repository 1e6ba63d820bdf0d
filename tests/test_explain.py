"""Grad-CAM per task: shapes, ranges, targets, localisation on a hand-built model, and no leaked hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from agekit.card import ModelCard
from agekit.checkpoint import LoadedModel, load_checkpoint
from agekit.data.transforms import to_model_input
from agekit.explain import CAM_METHODS, AgeBinTarget, TaskLogits, explain
from agekit.labels import ETHNICITY_NAMES, UTK7
from agekit.predict import ModelZoo, crops_to_batch


def random_crops(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory, save_tiny) -> ModelZoo:
    root = tmp_path_factory.mktemp("checkpoints")
    save_tiny(root / "shared")
    save_tiny(root / "bundle", shared=False, seed=1)
    save_tiny(root / "gray", in_chans=1, seed=2)
    zoo = ModelZoo.load(root)
    assert not zoo.failures
    return zoo


def count_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


@pytest.mark.parametrize("name", ["shared", "bundle", "gray"])
@pytest.mark.parametrize("task", ["age", "gender", "ethnicity"])
def test_cam_has_the_crop_shape_and_unit_range(zoo: ModelZoo, name: str, task: str) -> None:
    crop = random_crops(1, seed=11)[0]
    result = explain(zoo.models[name], crop, task)
    assert result.cam.shape == (200, 200) and result.cam.dtype == np.float32
    assert 0.0 <= result.cam.min() and result.cam.max() <= 1.0
    assert result.overlay.shape == (200, 200, 3) and result.overlay.dtype == np.uint8
    assert 0.0 <= result.probability <= 1.0 and result.method == "GradCAM"


def test_cam_of_a_non_square_crop_keeps_its_shape(zoo: ModelZoo) -> None:
    crop = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    result = explain(zoo.models["shared"], crop, "gender", method="HiResCAM")
    assert result.cam.shape == (90, 120) and result.overlay.shape == (90, 120, 3)


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_every_method_runs_and_leaves_no_hooks(zoo: ModelZoo, method: str) -> None:
    loaded = zoo.models["bundle"]
    crop = random_crops(1, seed=12)[0]
    first = explain(loaded, crop, "ethnicity", method=method)
    assert first.explained in ETHNICITY_NAMES
    assert count_hooks(loaded.model) == 0
    assert all(p.grad is None for p in loaded.model.parameters())
    again = explain(loaded, crop, "ethnicity", method=method)  # a fresh CAM object: the same map
    np.testing.assert_array_equal(again.cam, first.cam)


def test_bundle_tasks_get_different_maps(zoo: ModelZoo) -> None:
    crop = random_crops(1, seed=13)[0]
    cams = {task: explain(zoo.models["bundle"], crop, task).cam for task in ("age", "gender", "ethnicity")}
    assert np.abs(cams["age"] - cams["gender"]).mean() > 0.02
    assert np.abs(cams["gender"] - cams["ethnicity"]).mean() > 0.02


@pytest.mark.parametrize("name", ["shared", "bundle"])
def test_task_wrapper_gives_the_models_own_logits(zoo: ModelZoo, name: str) -> None:
    loaded = zoo.models[name]
    x = to_model_input(crops_to_batch(random_crops(2, seed=16)), loaded.card)
    with torch.no_grad():
        full = loaded.model(x)
        for task in loaded.card.tasks:
            assert torch.allclose(TaskLogits(loaded.model, task)(x), full[task], atol=1e-6)


def test_age_bin_target_is_the_bin_probability(zoo: ModelZoo) -> None:
    loaded = zoo.models["shared"]
    crop = random_crops(1, seed=14)[0]
    [pred] = zoo.predict([crop])["shared"]
    x = to_model_input(crops_to_batch([crop]), loaded.card)
    with torch.no_grad():  # the app's prediction: the crop and its mirror image, logits averaged
        age_logits = (TaskLogits(loaded.model, "age")(x) + TaskLogits(loaded.model, "age")(x.flip(-1))) / 2
    for k in range(len(UTK7)):
        assert float(AgeBinTarget(UTK7, k)(age_logits[0])) == pytest.approx(float(pred.age_bin_probs[k]), abs=1e-5)
    result = explain(loaded, crop, "age")
    assert result.explained == pred.age_bin and result.probability == pytest.approx(pred.age_bin_confidence, abs=1e-5)


def test_chosen_target_class(zoo: ModelZoo) -> None:
    crop = random_crops(1, seed=15)[0]
    result = explain(zoo.models["shared"], crop, "ethnicity", target_class=3)
    assert result.explained == ETHNICITY_NAMES[3] and result.target_index == 3
    with pytest.raises(ValueError, match="out of range"):
        explain(zoo.models["shared"], crop, "gender", target_class=2)


def test_bad_task_or_method(zoo: ModelZoo, tmp_path: Path, save_tiny) -> None:
    crop = random_crops(1)[0]
    with pytest.raises(ValueError, match="unknown CAM method"):
        explain(zoo.models["shared"], crop, "age", method="ScoreCAM")
    gender_only = load_checkpoint(save_tiny(tmp_path / "g", tasks=("gender",)))
    with pytest.raises(ValueError, match="not 'age'"):
        explain(gender_only, crop, "age")


# ---------------------------------------------------------------- localisation on a hand-built model

HALVES = {"left": (slice(None), slice(0, 16)), "right": (slice(None), slice(16, 32)),
          "top": (slice(0, 16), slice(None)), "bottom": (slice(16, 32), slice(None))}


class HalfSightedModel(nn.Module):
    """A 'gender' classifier that only sees one half of its 32x32 input: the input is masked before its
    single conv layer, so nothing in the other half can change the decision."""

    tasks = ("gender",)

    def __init__(self, half: str) -> None:
        super().__init__()
        mask = torch.zeros(1, 1, 32, 32)
        mask[(0, 0, *HALVES[half])] = 1.0
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.fill_(1 / 27)
            self.conv.bias.zero_()
            self.head.weight.copy_(torch.tensor([[1.0] * 4, [-1.0] * 4]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"gender": self.head(self.act(self.conv(x * self.mask)).mean(dim=(2, 3)))}

    def gradcam_target_layers(self, task: str) -> list[nn.Module]:
        return [self.act]


@pytest.mark.parametrize("half", list(HALVES))
@pytest.mark.parametrize("method", ["GradCAM", "HiResCAM", "LayerCAM"])
def test_cam_concentrates_where_the_model_looks(half: str, method: str) -> None:
    card = ModelCard(name=f"half_{half}", family="scratch", architecture="hand-built", tasks=("gender",),
                     input_size=32, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    loaded = LoadedModel(HalfSightedModel(half).eval(), card, Path("."))
    crop = Image.fromarray(np.random.default_rng(0).integers(100, 255, (200, 200, 3), dtype=np.uint8))
    result = explain(loaded, crop, "gender", method=method)
    rows, cols = {"left": (slice(None), slice(0, 100)), "right": (slice(None), slice(100, 200)),
                  "top": (slice(0, 100), slice(None)), "bottom": (slice(100, 200), slice(None))}[half]
    share = result.cam[rows, cols].sum() / result.cam.sum()
    assert share > 0.9, f"{method}: only {share:.0%} of the map is on the {half} half the model sees"
    assert result.explained == "male"  # the head favours class 0 for positive features
