"""FaceModel: backbone(s) + one head per task, returning a dict of logits."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from agekit.labels import NUM_OUTPUTS
from agekit.models.heads import TaskHead
from agekit.models.registry import Backbone


def _qualified_name(root: nn.Module, target: nn.Module) -> str:
    for name, module in root.named_modules():
        if module is target:
            return name
    raise ValueError("the backbone's gradcam_layer is not one of its submodules")


class FaceModel(nn.Module):
    """Images (B,C,S,S) float → {task: logits}: age (B,117), gender (B,2), ethnicity (B,5) for `tasks`.

    shared_backbone=True (one Backbone given): `self.backbone` feeds every head — a multitask net.
    shared_backbone=False (one Backbone per task): `self.backbones[task]` feeds only `self.heads[task]`.
    Parameters are disjoint, so training the bundle on the summed loss is exactly separate training.
    """

    def __init__(self, architecture: str, tasks: tuple[str, ...], backbones: list[Backbone],
                 head_dropout: float = 0.2) -> None:
        super().__init__()
        if len(backbones) not in (1, len(tasks)):
            raise ValueError(f"need 1 backbone (shared) or one per task ({len(tasks)}), got {len(backbones)}")
        self.architecture = architecture
        self.architecture_kwargs: dict = {}  # builder kwargs with defaults filled in (set by create_model)
        self.tasks = tuple(tasks)
        self.shared_backbone = len(backbones) == 1
        if self.shared_backbone:
            self.backbone = backbones[0].module
            feature_dims = {task: backbones[0].feature_dim for task in tasks}
            prefix = "backbone."
            self._gradcam_names = {t: prefix + _qualified_name(self.backbone, backbones[0].gradcam_layer)
                                   for t in tasks}
        else:
            self.backbones = nn.ModuleDict({task: b.module for task, b in zip(tasks, backbones)})
            feature_dims = {task: b.feature_dim for task, b in zip(tasks, backbones)}
            self._gradcam_names = {task: f"backbones.{task}." + _qualified_name(b.module, b.gradcam_layer)
                                   for task, b in zip(tasks, backbones)}
        self.heads = nn.ModuleDict({task: TaskHead(feature_dims[task], NUM_OUTPUTS[task], head_dropout)
                                    for task in tasks})

    def backbone_for(self, task: str) -> nn.Module:
        """The feature extractor feeding `task`'s head."""
        return self.backbone if self.shared_backbone else self.backbones[task]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.shared_backbone:
            features = self.backbone(x)
            return {task: self.heads[task](features) for task in self.tasks}
        return {task: self.heads[task](self.backbones[task](x)) for task in self.tasks}

    def gradcam_target_layers(self, task: str) -> list[nn.Module]:
        """The last conv block of the backbone that feeds `task`'s head (for pytorch-grad-cam)."""
        if task not in self.tasks:
            raise ValueError(f"this model predicts {list(self.tasks)}, not {task!r}")
        return [self.get_submodule(self._gradcam_names[task])]

    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the backbone(s), e.g. for a lower learning rate or freezing."""
        return (self.backbone if self.shared_backbone else self.backbones).parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        return self.heads.parameters()

    def set_backbone_trainable(self, trainable: bool) -> None:
        """Freeze (False) or unfreeze (True) every backbone parameter; heads stay trainable."""
        for param in self.backbone_parameters():
            param.requires_grad_(trainable)
