"""resume.pt: the state after an epoch (weights, optimizer, scheduler, learned loss weights, early stopping,
history, config), written by the training loop after every epoch and read back by `fit(..., resume=True)`."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agekit.engine.config import TrainConfig
from agekit.engine.stopping import EarlyStopping
from agekit.model_spec import IDENTITY_FIELDS

RESUME_FILE = "resume.pt"


def save_resume_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                      scheduler: torch.optim.lr_scheduler.LRScheduler, criterion: nn.Module,
                      stopping: EarlyStopping, history: list[dict[str, float]], epoch: int,
                      config: TrainConfig) -> None:
    """Write the state after `epoch` (0-based) to `path`; a crash mid-write leaves the previous file whole."""
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "criterion": criterion.state_dict(), "early_stopping": stopping.state_dict(), "history": history,
             "epoch": epoch, "config": asdict(config)}
    partial = path.with_name(path.name + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)


def load_resume_state(path: Path, config: TrainConfig) -> dict[str, Any]:
    """resume.pt written by an earlier run of the same model (weights_only: plain tensors and numbers)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    previous = state.get("config", {})
    changed = [k for k in IDENTITY_FIELDS if k in previous and previous[k] != asdict(config)[k]
               and not (isinstance(previous[k], (list, tuple)) and tuple(previous[k]) == tuple(asdict(config)[k]))]
    if changed:
        raise ValueError(f"{path} was written for a different model ({', '.join(changed)} differ); "
                         "use another --out folder or drop --resume")
    return state


def restore_resume_state(state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                         scheduler: torch.optim.lr_scheduler.LRScheduler, criterion: nn.Module,
                         stopping: EarlyStopping) -> tuple[list[dict[str, float]], int]:
    """Load a resume state into the training objects; returns the history so far and the next epoch (0-based)."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    criterion.load_state_dict(state["criterion"])
    stopping.load_state_dict(state["early_stopping"])
    return list(state["history"]), int(state["epoch"]) + 1
