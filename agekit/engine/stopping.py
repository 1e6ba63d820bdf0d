"""When training stops: early stopping per independently trained part (keeping each part's best weights) and
the time budget."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from agekit.engine.runtime import Runtime
from agekit.models import FaceModel


@dataclass
class EarlyStopping:
    """Keeps, for each independently trained part of the model, the weights of its best validation epoch.

    A shared-backbone model is one part (all tasks, score = val_loss); a bundle has one part per task
    (score = val_<task>_loss), so each member keeps its own best epoch exactly as if trained alone.
    """

    parts: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # name -> (tasks, state-dict key prefixes)
    patience: int
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)
    best_loss: dict[str, float] = field(default_factory=dict)
    best_epoch: dict[str, int] = field(default_factory=dict)

    @classmethod
    def for_model(cls, model: FaceModel, patience: int) -> EarlyStopping:
        if model.shared_backbone:
            parts = {"all": (model.tasks, ("",))}
        else:
            parts = {task: ((task,), (f"backbones.{task}.", f"heads.{task}.")) for task in model.tasks}
        return cls(parts, patience)

    def update(self, model: nn.Module, metrics: Mapping[str, float], epoch: int) -> list[str]:
        """Record this epoch's validation losses; copy improved parts' weights. Returns the improved parts."""
        state = model.state_dict()
        improved = []
        for name, (tasks, prefixes) in self.parts.items():
            loss = sum(metrics[f"val_{task}_loss"] for task in tasks)
            if loss < self.best_loss.get(name, math.inf):
                self.best_loss[name], self.best_epoch[name] = loss, epoch
                self.best_state.update({k: v.detach().clone() for k, v in state.items() if k.startswith(prefixes)})
                improved.append(name)
        return improved

    def should_stop(self, epoch: int) -> bool:
        """True when no part improved during the last `patience` epochs (never when patience is 0)."""
        return self.patience > 0 and all(epoch - best >= self.patience for best in self.best_epoch.values())

    def state_dict(self) -> dict[str, Any]:
        return {"best_state": self.best_state, "best_loss": self.best_loss, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_state = dict(state["best_state"])
        self.best_loss, self.best_epoch = dict(state["best_loss"]), dict(state["best_epoch"])


def time_budget_spent(limit_s: float, elapsed_s: float, last_epoch_s: float, runtime: Runtime) -> bool:
    """True when one more epoch as long as the last one would end past `limit_s` seconds (0: never).
    Rank 0's clock decides for every rank, so DDP processes stop together."""
    if limit_s <= 0:
        return False
    stop = torch.tensor(float(elapsed_s + last_epoch_s > limit_s), device=runtime.device)
    if runtime.world_size > 1:
        dist.broadcast(stop, src=0)
    return bool(stop.item())
