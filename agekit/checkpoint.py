"""Checkpoint folders: model.safetensors (weights, never pickle) + config.json (ModelCard).

    save_checkpoint("checkpoints/scratch_facecnn", model, card)
    loaded = load_checkpoint("checkpoints/scratch_facecnn")   # LoadedModel(model in eval mode, card, folder)

Weights are stored as float16 where that loses nothing that matters (parameters that fit fp16's range);
BatchNorm running statistics and anything that would overflow stay float32.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from agekit.card import ModelCard
from agekit.models import FaceModel, UnknownArchitecture, create_model
from agekit.models.weights import state_dict_mismatch

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FP16_MAX = 60000.0  # a little under float16's largest finite value (65504)


class CheckpointError(ValueError):
    """A checkpoint folder is missing, incomplete, corrupt or inconsistent with its config.json."""


@dataclass
class LoadedModel:
    """A checkpoint ready to predict: the model (eval mode, on the requested device) and its card."""

    model: FaceModel
    card: ModelCard
    folder: Path


def _storage_tensor(tensor: torch.Tensor, is_buffer: bool, half: bool) -> torch.Tensor:
    """float16 for float parameters within fp16 range; float32 for buffers (BN statistics) and large values."""
    tensor = tensor.detach().cpu().contiguous()
    if not tensor.is_floating_point() or is_buffer or not half:
        return tensor.float() if tensor.is_floating_point() else tensor
    if tensor.numel() and tensor.abs().max().item() > FP16_MAX:
        return tensor.float()
    return tensor.half()


def storage_state_dict(module: nn.Module, half: bool = True) -> dict[str, torch.Tensor]:
    """`module`'s state dict as agekit stores it: float16 parameters (within fp16 range), float32 buffers, on CPU."""
    buffers = {name for name, _ in module.named_buffers()}
    return {name: _storage_tensor(t, name in buffers, half) for name, t in module.state_dict().items()}


def save_checkpoint(folder: str | Path, model: FaceModel, card: ModelCard, half: bool = True) -> Path:
    """Write model.safetensors and config.json (card.params is filled in) into `folder`; returns the folder.

    half=True stores float parameters as float16. Checked on a RetinaFace-initialised MobileNet bundle and
    2,216 UTKFace test faces: test MAE 7.85 (fp32) vs 7.80 years (fp16), identical gender accuracy, max
    probability difference 9e-3 — individual expected ages moved by 0.12 years on average (1.3 at most).
    half=False keeps everything float32 (exact)."""
    folder = Path(folder)
    identity = (model.architecture, tuple(model.tasks), model.shared_backbone)
    if identity != (card.architecture, tuple(card.tasks), card.shared_backbone):
        raise CheckpointError(f"card describes {card.architecture} {card.tasks} shared={card.shared_backbone} but "
                              f"the model is {identity[0]} {identity[1]} shared={identity[2]}")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = storage_state_dict(model, half)
    card.params = sum(p.numel() for p in model.parameters())
    partial = folder / (MODEL_FILE + ".partial")
    save_file(tensors, str(partial), metadata={"format": "pt", "architecture": card.architecture})
    os.replace(partial, folder / MODEL_FILE)
    card.save(folder)
    return folder


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is corrupt or truncated ({err}); re-save or re-train this checkpoint") from err


def _check_keys(model: FaceModel, state: dict[str, torch.Tensor], folder: Path) -> None:
    problems = state_dict_mismatch(model.state_dict(), state)
    if problems:
        raise CheckpointError(f"{folder / MODEL_FILE} does not match the model its {CONFIG_FILE} describes "
                              f"({problems}); was config.json edited or copied from another checkpoint?")


def load_checkpoint(folder: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Rebuild the model from config.json (no pretrained download) and load model.safetensors strictly."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} does not exist")
    for required in (CONFIG_FILE, MODEL_FILE):
        if not (folder / required).is_file():
            raise CheckpointError(f"{folder} has no {required}: not a complete agekit checkpoint "
                                  "(train one with python -m training.train)")
    try:
        card = ModelCard.load(folder)
    except (ValueError, TypeError) as err:
        raise CheckpointError(str(err)) from err
    kwargs = dict(card.architecture_kwargs)
    kwargs.setdefault("in_chans", card.in_chans)
    try:
        model = create_model(card.architecture, tasks=card.tasks, shared_backbone=card.shared_backbone, **kwargs)
    except UnknownArchitecture as err:
        raise CheckpointError(f"{folder / CONFIG_FILE}: {err}") from err
    except TypeError as err:  # architecture_kwargs the builder does not take
        raise CheckpointError(f"{folder / CONFIG_FILE}: architecture_kwargs {kwargs} do not fit "
                              f"{card.architecture!r}: {err}") from err
    state = _read_weights(folder / MODEL_FILE)
    _check_keys(model, state, folder)
    model.load_state_dict(state, strict=True)  # copies cast fp16 storage back to the fp32 parameters
    return LoadedModel(model.to(device).eval(), card, folder)


def list_checkpoints(root: str | Path = "checkpoints") -> list[Path]:
    """Sub-folders of `root` holding both config.json and model.safetensors, sorted by name ([] if no root)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if (p / CONFIG_FILE).is_file() and (p / MODEL_FILE).is_file())
