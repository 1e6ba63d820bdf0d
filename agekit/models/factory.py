"""create_model: the one way a FaceModel is built (timm keeps it in _factory.py beside the _registry.py lookup).

The registry maps an architecture name to a backbone builder; the factory asks it for the backbone(s) and puts
the heads on. Neither the registry nor face_model imports this module, so there is no import circle.
"""

from __future__ import annotations

from typing import Any

from agekit.labels import TASKS, check_tasks
from agekit.models.face_model import FaceModel
from agekit.models.registry import build_backbone, resolved_kwargs


def create_model(architecture: str, tasks: tuple[str, ...] | list[str] = TASKS, shared_backbone: bool = True,
                 pretrained: bool = False, pretrained_weights: str | None = None, head_dropout: float = 0.2,
                 **kwargs: Any) -> FaceModel:
    """Build a FaceModel: one backbone + one head per task (shared_backbone=True, multitask), or an
    independent backbone + head per task in one module (shared_backbone=False, a bundle of single-task nets).

    `pretrained_weights` is a local file (it implies pretrained); `pretrained=True` without a file uses the
    architecture's own source (timm hub, facenet-pytorch's shipped/hub weights) and fails with a clear error
    when that is unreachable. Extra `kwargs` go to the backbone builder (e.g. widths, in_chans).
    """
    tasks = check_tasks(tasks)
    pretrained = pretrained or pretrained_weights is not None
    n_backbones = 1 if shared_backbone else len(tasks)
    backbones = [build_backbone(architecture, pretrained=pretrained, pretrained_weights=pretrained_weights,
                                **kwargs) for _ in range(n_backbones)]
    model = FaceModel(architecture, tasks, backbones, head_dropout=head_dropout)
    model.architecture_kwargs = resolved_kwargs(architecture, **kwargs)
    return model
