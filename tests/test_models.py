"""Registry, every architecture's forward/backward and Grad-CAM layer, and local pretrained-weight loading."""

from __future__ import annotations

import urllib.error

import pytest
import torch
from safetensors.torch import save_file

from agekit.labels import NUM_OUTPUTS, TASKS
from agekit.models import (
    FaceModel,
    PretrainedWeightsError,
    UnknownArchitecture,
    create_model,
    list_architectures,
)
from agekit.models.mobilenet import MobileNetV1025
from agekit.models.pretrained import shipped_onet_weights

# (architecture, input side, in_chans, builder kwargs): tiny inputs so every case runs in well under a second
CASES = [
    ("facecnn", 16, 3, {"widths": (8, 16)}),
    ("agecnn", 16, 1, {"widths": (8, 8, 16, 16), "hidden": 12}),
    ("mobilenetv1_025", 32, 3, {}),
    ("mtcnn_onet", 48, 3, {}),
    ("timm/test_resnet", 32, 3, {}),
]


def test_list_architectures_names_every_family() -> None:
    names = list_architectures()
    for name in ("facecnn", "agecnn", "mobilenetv1_025", "mtcnn_onet", "inception_resnet_v1", "timm/<name>"):
        assert name in names


def test_unknown_architecture_lists_the_valid_names() -> None:
    with pytest.raises(UnknownArchitecture, match="facecnn"):
        create_model("resnet9000")
    with pytest.raises(UnknownArchitecture, match="timm has no model"):
        create_model("timm/not_a_timm_model")


def test_models_record_their_builder_kwargs_with_defaults() -> None:
    model = create_model("facecnn", widths=(8, 16))
    assert model.architecture_kwargs == {"in_chans": 3, "widths": [8, 16], "convs_per_block": 2}
    assert create_model("timm/test_resnet", drop_rate=0.1).architecture_kwargs == {"in_chans": 3, "drop_rate": 0.1}
    rebuilt = create_model("facecnn", **model.architecture_kwargs)
    assert rebuilt.state_dict().keys() == model.state_dict().keys()


def test_unknown_task_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown or empty task"):
        create_model("facecnn", tasks=("age", "mood"))


def _check_forward_backward(model: FaceModel, size: int, in_chans: int) -> None:
    captured: dict[str, torch.Tensor] = {}
    hooks = [model.gradcam_target_layers(task)[0].register_forward_hook(
        lambda _m, _i, out, task=task: captured.__setitem__(task, out)) for task in model.tasks]
    out = model(torch.randn(2, in_chans, size, size))
    for hook in hooks:
        hook.remove()
    assert set(out) == set(model.tasks)
    for task, logits in out.items():
        assert logits.shape == (2, NUM_OUTPUTS[task])
        assert captured[task].ndim == 4, "Grad-CAM layer must output a conv feature map"
    sum(logits.logsumexp(1).sum() for logits in out.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("shared", [True, False], ids=["shared", "bundle"])
@pytest.mark.parametrize(("architecture", "size", "in_chans", "kwargs"), CASES, ids=[c[0] for c in CASES])
def test_forward_backward_shapes(architecture: str, size: int, in_chans: int, kwargs: dict, shared: bool) -> None:
    torch.manual_seed(0)
    model = create_model(architecture, shared_backbone=shared, in_chans=in_chans, **kwargs)
    assert model.shared_backbone is shared
    _check_forward_backward(model, size, in_chans)


def test_inception_resnet_v1_forward_backward() -> None:
    model = create_model("inception_resnet_v1", tasks=("gender",))
    _check_forward_backward(model, 80, 3)
    assert model.gradcam_target_layers("gender")[0] is model.backbone.net.block8


def test_bundle_members_are_independent() -> None:
    model = create_model("facecnn", shared_backbone=False, widths=(8, 16))
    assert set(model.backbones) == set(TASKS)
    model(torch.randn(2, 3, 16, 16))["age"].sum().backward()
    assert all(p.grad is not None for p in model.backbones["age"].parameters())
    assert all(p.grad is None for p in model.backbones["gender"].parameters())
    assert model.gradcam_target_layers("gender")[0] is model.backbones["gender"].blocks[-1]


def test_gradcam_layers_of_a_task_the_model_lacks() -> None:
    model = create_model("facecnn", tasks=("age",), widths=(8,))
    with pytest.raises(ValueError, match="not 'gender'"):
        model.gradcam_target_layers("gender")


def test_scratch_models_refuse_pretrained() -> None:
    with pytest.raises(PretrainedWeightsError, match="from scratch"):
        create_model("facecnn", pretrained=True)


# ---------------------------------------------------------------- local pretrained weights
def _random_mobilenet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    reference = MobileNetV1025()
    for module in reference.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_()
            module.running_var.uniform_(0.5, 2)
    return reference.state_dict()


@pytest.mark.parametrize("layout", ["imagenet_tar", "retinaface_body"])
def test_mobilenet_loads_both_published_layouts(tmp_path, layout: str) -> None:
    state = _random_mobilenet_state()
    path = tmp_path / "weights.pth"
    if layout == "imagenet_tar":  # {"state_dict": {"module.<key>", "module.fc.*"}}
        file_state = {f"module.{k}": v for k, v in state.items()}
        file_state.update({"module.fc.weight": torch.zeros(1000, 256), "module.fc.bias": torch.zeros(1000)})
        torch.save({"epoch": 3, "state_dict": file_state}, path)
    else:  # {"body.<key>", detector heads}
        file_state = {f"body.{k}": v for k, v in state.items()}
        file_state.update({"fpn.output1.0.weight": torch.zeros(64, 64, 1, 1), "ClassHead.0.conv1x1.bias": torch.zeros(4)})
        torch.save(file_state, path)
    model = create_model("mobilenetv1_025", shared_backbone=False, pretrained_weights=str(path))
    for task in TASKS:
        loaded = model.backbones[task].state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_mobilenet_weights_with_wrong_keys_are_reported(tmp_path) -> None:
    state = _random_mobilenet_state()
    state.pop("stage3.1.4.weight")
    state["stage3.1.4.weight_extra"] = torch.zeros(3)
    state["stage1.0.0.weight"] = torch.zeros(8, 1, 3, 3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(PretrainedWeightsError) as error:
        create_model("mobilenetv1_025", pretrained_weights=str(tmp_path / "bad.pth"))
    message = str(error.value)
    assert "missing 1: stage3.1.4.weight" in message
    assert "unexpected 1: stage3.1.4.weight_extra" in message
    assert "stage1.0.0.weight: file (8, 1, 3, 3) vs model (8, 3, 3, 3)" in message


def test_mobilenet_pretrained_without_file_explains_the_flag() -> None:
    with pytest.raises(PretrainedWeightsError, match="--pretrained-weights FILE"):
        create_model("mobilenetv1_025", pretrained=True)
    with pytest.raises(PretrainedWeightsError, match="not found"):
        create_model("mobilenetv1_025", pretrained_weights="/nonexistent/weights.pth")


def test_timm_local_file_goes_through_pretrained_cfg_overlay(tmp_path) -> None:
    import timm

    torch.manual_seed(2)
    reference = timm.create_model("test_resnet")  # with its classifier, like a hub checkpoint
    path = tmp_path / "test_resnet.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(path))
    model = create_model("timm/test_resnet", tasks=("age",), pretrained_weights=str(path))
    loaded = model.backbone.state_dict()
    assert loaded.keys() == {k for k in reference.state_dict() if not k.startswith("fc.")}
    assert all(torch.equal(loaded[k], reference.state_dict()[k]) for k in loaded)


def test_timm_hub_failure_explains_the_flag(monkeypatch) -> None:
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PretrainedWeightsError, match="--pretrained-weights FILE"):
        create_model("timm/test_resnet", pretrained=True)


def test_inception_resnet_v1_local_file_round_trip(tmp_path) -> None:
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(3)
    reference = InceptionResnetV1(classify=True, num_classes=7)  # its logits.* must be ignored
    torch.save(reference.state_dict(), tmp_path / "facenet.pt")
    model = create_model("inception_resnet_v1", tasks=("age",), pretrained_weights=str(tmp_path / "facenet.pt"))
    loaded = model.backbone.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items() if not k.startswith("logits."))


def test_inception_resnet_v1_offline_download_explains_the_flag(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr("facenet_pytorch.models.inception_resnet_v1.load_weights", offline)
    with pytest.raises(PretrainedWeightsError, match="--pretrained-weights FILE"):
        create_model("inception_resnet_v1", tasks=("age",), pretrained=True)


def test_onet_loads_the_weights_shipped_with_facenet_pytorch() -> None:
    shipped = torch.load(shipped_onet_weights(), weights_only=True)
    model = create_model("mtcnn_onet", tasks=("gender",), pretrained=True)
    loaded = model.backbone.state_dict()
    assert loaded.keys() == {k for k in shipped if not k.startswith("dense6_")}
    assert all(torch.equal(loaded[k], shipped[k]) for k in loaded)
    with pytest.raises(ValueError, match="48x48"):
        model(torch.randn(1, 3, 64, 64))


def test_mobilenet_starts_from_an_agekit_checkpoints_backbone(tmp_path) -> None:
    from safetensors.torch import save_file

    from agekit.models import create_model

    torch.manual_seed(0)
    trained = create_model("mobilenetv1_025")
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
    continued = create_model("mobilenetv1_025", pretrained_weights=str(path))
    backbone = {k: v for k, v in trained.state_dict().items() if k.startswith("backbone.")}
    assert all(torch.equal(continued.state_dict()[k], v) for k, v in backbone.items())
    heads = [k for k in trained.state_dict() if k.startswith("heads.") and k.endswith("weight")]
    assert heads and not all(torch.equal(continued.state_dict()[k], trained.state_dict()[k]) for k in heads)
