"""The loss, the optimizer (param groups with their lr and weight decay) and the per-step lr schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from agekit.engine.config import TrainConfig
from agekit.losses import MultiTaskLoss
from agekit.models import FaceModel


def build_criterion(config: TrainConfig, class_weights: dict[str, torch.Tensor] | None = None) -> MultiTaskLoss:
    """The multitask loss `config` describes (optional per-class weights from the training labels)."""
    return MultiTaskLoss(config.tasks, config.loss_weighting, config.task_weights, config.age_sigma,
                         config.age_l1_weight, config.label_smoothing, class_weights)


def build_optimizer(model: FaceModel, criterion: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Param groups: backbone (lr x backbone_lr_mult), heads (lr), learned loss weights (lr, no decay).
    Biases and norm parameters (ndim <= 1) get no weight decay."""
    backbone_ids = {id(p) for p in model.backbone_parameters()}
    groups: dict[str, dict[str, Any]] = {}
    for name, param in model.named_parameters():
        part = "backbone" if id(param) in backbone_ids else "heads"
        decay = "decay" if param.ndim > 1 else "no_decay"
        key = f"{part}_{decay}"
        if key not in groups:
            lr = config.lr * (config.backbone_lr_mult if part == "backbone" else 1.0)
            groups[key] = {"params": [], "lr": lr, "weight_decay": config.weight_decay if decay == "decay" else 0.0,
                           "name": key}
        groups[key]["params"].append(param)
    loss_params = list(criterion.parameters())
    param_groups = list(groups.values())
    if loss_params:
        param_groups.append({"params": loss_params, "lr": config.lr, "weight_decay": 0.0, "name": "loss_weights"})
    if config.optimizer == "nadam":
        return torch.optim.NAdam(param_groups, lr=config.lr)
    return torch.optim.AdamW(param_groups, lr=config.lr)


def lr_factor(step: int, total_steps: int, warmup_steps: int, kind: str) -> float:
    """Multiplier of each group's base lr at optimizer step `step` (0-based)."""
    if kind == "constant":
        return 1.0
    if kind == "onecycle":  # ramp from lr/25 to lr over 30 % of training, then cosine down to lr/1e4
        ramp = max(1, int(0.3 * total_steps))
        if step < ramp:
            return 1 / 25 + (1 - 1 / 25) * step / ramp
        progress = min(1.0, (step - ramp) / max(1, total_steps - ramp))
        return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * progress))
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * (1 + math.cos(math.pi * progress))


def release_factor(step: int, released_step: int, warmup_steps: int) -> float:
    """Multiplier of the backbone's lr: a linear warm-up of its own from the step it is released (`frozen_epochs`).

    Adam meets the released weights with no moment estimates, so its first steps move every weight by about the
    full lr; released at the schedule's peak, that wrecked dlib's pretrained features in one epoch (val gender at
    chance, docs/experiments.md). 1.0 when nothing was frozen.
    """
    if released_step == 0:
        return 1.0
    return min(1.0, max(0, step - released_step + 1) / max(1, warmup_steps))


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR (its state_dict is plain numbers, so resume.pt loads with weights_only=True).

    Every group follows `lr_factor`; backbone groups are also ramped up again over warmup_epochs (at least one
    step) from the step they are released, when frozen_epochs > 0 (`release_factor`).
    """
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    released = config.frozen_epochs * steps_per_epoch

    def schedule(step: int) -> float:
        return lr_factor(step, total, warmup, config.scheduler)

    def backbone_schedule(step: int) -> float:
        return schedule(step) * release_factor(step, released, warmup)

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [backbone_schedule if group["name"].startswith("backbone") else schedule
                    for group in optimizer.param_groups])
