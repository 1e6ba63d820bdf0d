"""dlib_resnet29: the pure-Python .dat reader (round trip through a test-side writer, truncated / corrupt files)
and the PyTorch port against descriptors computed by dlib itself (tests/fixtures/dlib_chips, made by
`python -m tools.dlib_reference`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agekit.models import PretrainedWeightsError, create_model
from agekit.models.dlib_format import INPUT_LAYER, LOSS_LAYER, DlibFormatError, read_dlib_net
from agekit.models.dlib_resnet import (
    DLIB_MEAN,
    DLIB_SCALE,
    WEIGHTS_FILE,
    DlibResNet29,
    add_padded,
    dlib_state_dict,
    load_dlib_weights,
    packaged_weights,
)

ROOT = Path(__file__).resolve().parents[1]
CHIPS = ROOT / "tests" / "fixtures" / "dlib_chips"
SHARED_WEIGHTS = ROOT.parent / "shared" / "weights" / WEIGHTS_FILE
PORT_TOLERANCE = 1e-5  # max abs difference to dlib's own 128-d descriptors


# ---------------------------------------------------------------- a writer of dlib's format, for the tests only
def enc_int(value: int) -> bytes:
    magnitude = abs(value).to_bytes(max(1, (abs(value).bit_length() + 7) // 8), "little")
    return bytes([len(magnitude) | (0x80 if value < 0 else 0)]) + magnitude


def enc_float(value: float) -> bytes:
    mantissa, exponent = math.frexp(value)
    return enc_int(int(mantissa * 2**53)) + enc_int(exponent - 53)


def enc_str(text: str) -> bytes:
    return enc_int(len(text)) + text.encode()


def enc_tensor(values: np.ndarray | None = None) -> bytes:
    if values is None:
        return enc_int(2) + b"".join(enc_int(0) for _ in range(4))
    shape = (values.size, 1, 1, 1)
    return enc_int(2) + b"".join(enc_int(s) for s in shape) + values.astype("<f4").tobytes()


def enc_alias(shape: tuple[int, ...]) -> bytes:
    return enc_int(1) + b"".join(enc_int(s) for s in shape)


TRAILER = b"110" + enc_tensor() * 3


def encode_layer(kind: str, module: torch.nn.Module | None) -> bytes:
    if kind == "con":
        w, b = module.weight.detach().numpy(), module.bias.detach().numpy()
        hyper = [module.out_channels, *module.kernel_size, *module.stride, *module.padding]
        return (enc_str("con_4") + enc_tensor(np.concatenate([w.ravel(), b])) + b"".join(enc_int(v) for v in hyper)
                + enc_alias(w.shape) + enc_alias((1, len(b), 1, 1)) + b"".join(enc_float(v) for v in (1, 1, 1, 0)))
    if kind == "affine":
        g, b = module.weight.detach().numpy(), module.bias.detach().numpy()
        return (enc_str("affine_") + enc_tensor(np.concatenate([g, b])) + enc_alias((1, len(g), 1, 1)) * 2
                + enc_int(0))
    if kind in ("relu", "add_prev"):
        return enc_str(f"{kind}_")
    if kind in ("max_pool", "avg_pool"):
        k, s = (module.kernel_size, module.stride) if module is not None else (0, 1)
        return enc_str(f"{kind}_2") + b"".join(enc_int(v) for v in (k, k, s, s, 0, 0))
    w = module.weight.detach().numpy()  # fc: (128, 256) in torch, stored (256, 128)
    return (enc_str("fc_2") + enc_int(w.shape[0]) + enc_int(w.shape[1]) + enc_tensor(w.T.ravel())
            + enc_alias((w.shape[1], w.shape[0], 1, 1)) + enc_alias((1, w.shape[0], 1, 1)) + enc_int(1)
            + b"".join(enc_float(v) for v in (1, 1, 1, 0)))


def write_dlib_file(model: DlibResNet29, path: Path, plan: list | None = None) -> Path:
    """Serialise `model` the way dlib writes dnn_face_recognition_ResNet_model_v1."""
    plan = plan if plan is not None else model.dlib_layer_plan()
    head = enc_int(1) + enc_str(LOSS_LAYER) + enc_float(0.04) + enc_float(0.6)
    versions = enc_int(2) * (len(plan) - 1) + enc_int(1) * 3 + enc_int(3)
    input_layer = enc_str(INPUT_LAYER) + b"".join(enc_float(m) for m in DLIB_MEAN) + enc_int(150) + enc_int(150)
    body = b""
    for index, (kind, module) in enumerate(plan):
        body += encode_layer(kind, module) + TRAILER + (enc_int(1) if index == 0 else b"")
    path.write_bytes(head + versions + input_layer + body)
    return path


@pytest.fixture(scope="module")
def random_net_file(tmp_path_factory) -> tuple[DlibResNet29, Path]:
    torch.manual_seed(0)
    model = DlibResNet29()
    with torch.no_grad():  # non-trivial affine values, so a gamma/beta mix-up would show
        for module in model.modules():
            if hasattr(module, "weight") and module.weight is not None and module.weight.ndim == 1:
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model, write_dlib_file(model, tmp_path_factory.mktemp("dlib") / "net.dat")


# ---------------------------------------------------------------- reader
def test_reader_reads_every_field_back(random_net_file):
    model, path = random_net_file
    net = read_dlib_net(path)
    assert net.loss == LOSS_LAYER and net.input_size == (150, 150)
    assert net.input_mean == pytest.approx(DLIB_MEAN, abs=1e-9)
    kinds = [layer.kind for layer in net.layers]
    assert {k: kinds.count(k) for k in set(kinds)} == {
        "con": 29, "affine": 29, "relu": 29, "add_prev": 14, "avg_pool": 5, "max_pool": 1, "fc": 1}
    first = net.layers[0]
    assert first.hyper == {"num_filters": 32, "nr": 7, "nc": 7, "stride_y": 2, "stride_x": 2,
                           "padding_y": 0, "padding_x": 0}
    assert first.arrays["weight"].shape == (32, 3, 7, 7)
    np.testing.assert_array_equal(first.arrays["weight"], model.stem[0].weight.detach().numpy())
    assert net.layers[-2].hyper["nr"] == 0  # the global average pool is a 0x0 window


def test_state_dict_round_trip_is_exact(random_net_file):
    model, path = random_net_file
    state = dlib_state_dict(DlibResNet29(), path)
    expected = model.state_dict()
    assert state.keys() == expected.keys()
    for key, tensor in expected.items():
        torch.testing.assert_close(state[key], tensor, rtol=0, atol=0, msg=key)


def test_truncated_file_names_the_offset(random_net_file, tmp_path):
    _, path = random_net_file
    data = path.read_bytes()
    for cut in (3, 400, len(data) // 2, len(data) - 5):
        short = tmp_path / f"cut{cut}.dat"
        short.write_bytes(data[:cut])
        with pytest.raises(DlibFormatError, match="truncated"):
            read_dlib_net(short)


def test_corrupt_and_foreign_files_are_refused(random_net_file, tmp_path):
    _, path = random_net_file
    data = bytearray(path.read_bytes())
    data[0] = 0x7F  # control byte with reserved bits
    bad = tmp_path / "bad.dat"
    bad.write_bytes(bytes(data))
    with pytest.raises(DlibFormatError, match="control byte"):
        read_dlib_net(bad)
    other = tmp_path / "other.dat"
    other.write_bytes(enc_int(1) + enc_str("loss_multiclass_log_"))
    with pytest.raises(DlibFormatError, match="loss_metric_2"):
        read_dlib_net(other)
    with pytest.raises(FileNotFoundError):
        read_dlib_net(tmp_path / "missing.dat")


def test_a_different_architecture_is_refused(tmp_path):
    model = DlibResNet29()
    plan = model.dlib_layer_plan()
    plan[4], plan[5] = plan[5], plan[4]  # an affine where a conv belongs
    path = write_dlib_file(model, tmp_path / "swapped.dat", plan)
    with pytest.raises(DlibFormatError, match="layer 4"):
        dlib_state_dict(DlibResNet29(), path)


def test_bad_weights_give_a_clear_pretrained_error(tmp_path):
    junk = tmp_path / "junk.dat"
    junk.write_bytes(b"\x01\x01not a network")
    with pytest.raises(PretrainedWeightsError, match="dlib's face-recognition ResNet"):
        create_model("dlib_resnet29", pretrained_weights=str(junk))
    with pytest.raises(PretrainedWeightsError, match="not found"):
        load_dlib_weights(DlibResNet29(), tmp_path / "nope.dat")


def dlib_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A small agekit checkpoint of a random dlib_resnet29 multitask model (non-trivial affine values)."""
    from agekit.card import ModelCard
    from agekit.checkpoint import save_checkpoint

    torch.manual_seed(seed)
    model = create_model("dlib_resnet29", tasks=("age", "gender"))
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if param.ndim == 1 and name.endswith("weight"):
                param.uniform_(0.5, 1.5)
            elif param.ndim == 1:
                param.uniform_(-0.2, 0.2)
    card = ModelCard(name="dlib", family="multitask", architecture="dlib_resnet29", tasks=model.tasks,
                     architecture_kwargs=model.architecture_kwargs, input_size=150,
                     mean=tuple(m / 255 for m in DLIB_MEAN), std=(DLIB_SCALE / 255,) * 3)
    return save_checkpoint(folder, model, card) / "model.safetensors"


def test_backbone_starts_from_an_agekit_checkpoint(tmp_path):
    from safetensors.torch import load_file

    path = dlib_checkpoint(tmp_path / "ckpt")
    stored = load_file(str(path))
    assert any(key.startswith("heads.") for key in stored)
    loaded = create_model("dlib_resnet29", tasks=("age", "gender", "ethnicity"), pretrained_weights=str(path))
    backbone = loaded.backbone.state_dict()
    assert len(backbone) == sum(key.startswith("backbone.") for key in stored) == 117
    for key, value in backbone.items():
        torch.testing.assert_close(value, stored[f"backbone.{key}"].float(), rtol=0, atol=0, msg=key)
    # the plain loader takes it too, and the other checkpoint's heads did not leak into the new model's
    model = DlibResNet29()
    load_dlib_weights(model, path)
    torch.testing.assert_close(model.stem[0].weight, stored["backbone.stem.0.weight"].float(), rtol=0, atol=0)
    assert not torch.equal(loaded.heads["age"].fc.weight, stored["heads.age.fc.weight"].float())


def test_checkpoint_without_a_usable_backbone_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    stored = load_file(str(dlib_checkpoint(tmp_path / "ckpt")))
    heads_only = tmp_path / "heads.safetensors"
    save_file({k: v for k, v in stored.items() if k.startswith("heads.")}, str(heads_only))
    with pytest.raises(ValueError, match=f"{heads_only}.*no usable backbone tensors.*task heads only"):
        create_model("dlib_resnet29", pretrained_weights=str(heads_only))
    bundle = tmp_path / "bundle.safetensors"
    save_file({k.replace("backbone.", "backbones.age."): v for k, v in stored.items()}, str(bundle))
    with pytest.raises(ValueError, match=r"no usable backbone tensors.*one backbone per task"):
        load_dlib_weights(DlibResNet29(), bundle)
    wrong = tmp_path / "wrong.safetensors"
    save_file({**stored, "backbone.stem.0.weight": torch.zeros(32, 3, 5, 5)}, str(wrong))
    with pytest.raises(ValueError, match=rf"weights in {wrong} do not fit the backbone \(shape mismatch 1: "
                                         r"stem.0.weight: file \(32, 3, 5, 5\) vs model \(32, 3, 7, 7\)\)"):
        load_dlib_weights(DlibResNet29(), wrong)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"encoder.weight": torch.zeros(3)}, str(foreign))
    with pytest.raises(PretrainedWeightsError, match=rf"weights in {foreign} do not fit.*missing 117.*unexpected 1"):
        load_dlib_weights(DlibResNet29(), foreign)


# ---------------------------------------------------------------- the network
def test_add_padded_pads_channels_and_space_at_the_high_end():
    a, b = torch.ones(1, 4, 3, 3), torch.full((1, 2, 4, 4), 2.0)
    out = add_padded(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, :2, :3, :3].eq(3).all() and out[0, 2:, :3, :3].eq(1).all()
    assert out[0, :2, 3, :].eq(2).all() and out[0, 2:, 3, :].eq(0).all()


@pytest.mark.parametrize("size", [112, 150])
def test_backbone_shapes_and_gradcam_layer(size):
    model = create_model("dlib_resnet29", tasks=("age", "gender"))
    layer_out = {}
    model.gradcam_target_layers("age")[0].register_forward_hook(lambda m, i, o: layer_out.setdefault("map", o))
    logits = model(torch.zeros(2, 3, size, size))
    assert logits["age"].shape == (2, 117) and logits["gender"].shape == (2, 2)
    assert layer_out["map"].shape[1] == 128 and layer_out["map"].shape[-1] == {112: 6, 150: 8}[size]


def real_weights() -> Path | None:
    for path in (packaged_weights(), SHARED_WEIGHTS):
        if path is not None and Path(path).is_file():
            return Path(path)
    return None


@pytest.mark.skipif(real_weights() is None, reason=f"needs {WEIGHTS_FILE} (face_recognition_models or shared/weights)")
def test_port_matches_dlib_descriptors():
    model = DlibResNet29()
    load_dlib_weights(model, real_weights())
    model.eval()
    reference = json.loads((CHIPS / "reference.json").read_text())["descriptors"]
    assert len(reference) == 4
    chips = np.stack([np.asarray(Image.open(CHIPS / f"{name}.png").convert("RGB")) for name in reference])
    x = (torch.from_numpy(chips).permute(0, 3, 1, 2).float() - torch.tensor(DLIB_MEAN).view(1, 3, 1, 1)) / DLIB_SCALE
    with torch.no_grad():
        ours = model.descriptor(x).numpy()
    expected = np.array(list(reference.values()))
    assert np.abs(ours - expected).max() <= PORT_TOLERANCE
    # The descriptors tell faces apart: each chip is nearest to itself.
    distances = np.linalg.norm(ours[:, None] - expected[None], axis=-1)
    assert (distances.argmin(axis=1) == np.arange(len(expected))).all()


@pytest.mark.skipif(real_weights() is None, reason=f"needs {WEIGHTS_FILE} (face_recognition_models or shared/weights)")
def test_checkpoint_round_trip_and_gradcam(tmp_path):
    from agekit.card import ModelCard
    from agekit.checkpoint import load_checkpoint, save_checkpoint
    from agekit.explain import explain

    torch.manual_seed(0)
    model = create_model("dlib_resnet29", pretrained_weights=str(real_weights())).eval()
    card = ModelCard(name="dlib", family="multitask", architecture="dlib_resnet29", tasks=model.tasks,
                     architecture_kwargs=model.architecture_kwargs, input_size=112,
                     mean=tuple(m / 255 for m in DLIB_MEAN), std=(DLIB_SCALE / 255,) * 3)
    save_checkpoint(tmp_path / "dlib", model, card)
    assert (tmp_path / "dlib" / "model.safetensors").stat().st_size < 16 * 2**20  # fp16: ~11 MB
    loaded = load_checkpoint(tmp_path / "dlib")
    crop = Image.open(CHIPS / "utkface_test_25_0_1.png").convert("RGB")
    for task in ("age", "gender"):
        result = explain(loaded, crop, task)
        assert result.cam.shape == (150, 150) and 0.0 <= result.cam.min() <= result.cam.max() <= 1.0
        assert result.cam.std() > 0  # a map with structure, not a constant
