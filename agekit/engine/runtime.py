"""Where a training process runs: its device and, under torchrun, its place in the DDP process group."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from agekit.engine.config import TrainConfig
from agekit.models import FaceModel


@dataclass
class Runtime:
    """Where this process runs: its rank among `world_size` processes and its device."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    owns_process_group: bool = False  # we initialised it, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_runtime(device: str = "auto") -> Runtime:
    """Pick the device; under torchrun (WORLD_SIZE>1) join the process group (nccl on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_device = torch.device(device)
    if torch_device.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was requested but no CUDA GPU is visible; use --device cpu")
        if world_size > 1:
            torch_device = torch.device("cuda", local_rank)
        torch.cuda.set_device(torch_device)
        torch.backends.cudnn.benchmark = True
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch_device.type == "cuda" else "gloo")
        owns = True
    return Runtime(torch_device, rank, world_size, owns)


def sync_buffers(model: nn.Module, runtime: Runtime) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank so all ranks hold the same model."""
    if runtime.world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of parameters that DDP does not manage; no-op in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= dist.get_world_size()


def wrap_for_training(model: FaceModel, config: TrainConfig, runtime: Runtime) -> nn.Module:
    """DDP (when distributed) then torch.compile (when asked) around the model, for the training forward."""
    wrapped: nn.Module = model
    if runtime.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda"
                                          else None)
    if config.compile:
        wrapped = torch.compile(wrapped)
    return wrapped
