"""The training loop, readable top to bottom (in the spirit of torchvision's references/classification).

    config = TrainConfig(architecture="facecnn", epochs=20)
    result = fit(config, train_set, val_set, out_dir="checkpoints/scratch_facecnn")

Data sets are FaceTensors-like: `.images` uint8 (N,3,S,S) RGB and `.targets` {task: int64 (N,)}.
`fit` resizes the images once to `input_size` and keeps them on the device; each step gathers a batch by
index, augments it on the device (agekit.data.transforms.augment_uint8) and normalises it exactly like
serving does (to_model_input). Every epoch writes `resume.pt` (weights, optimizer, scheduler, early-stopping
state) and `training_log.csv` into `out_dir`. Under `torchrun` (WORLD_SIZE>1) the same code runs DDP:
indices are sharded per rank, gradients averaged, and only rank 0 writes files.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from agekit.card import ModelCard
from agekit.data.transforms import augment_uint8, photo_degrade_uint8, resize_uint8, to_model_input
from agekit.labels import NUM_OUTPUTS, TASKS, check_tasks, get_age_bins
from agekit.losses import (
    DEFAULT_TASK_WEIGHTS,
    MultiTaskLoss,
    age_probabilities,
    expected_age,
)
from agekit.models import FaceModel, create_model
from agekit.training_log import LOG_FILE, write_log

RESUME_FILE = "resume.pt"


class FaceData(Protocol):
    """What the engine needs from a data set (agekit.data.dataset.FaceTensors fits)."""

    images: torch.Tensor  # uint8 (N,3,S,S) RGB

    @property
    def targets(self) -> dict[str, torch.Tensor]: ...  # {task: int64 (N,)}


@dataclass
class TrainConfig:
    """Everything that defines a training run, as plain values (stored in the ModelCard's train_config)."""

    # model
    architecture: str = "facecnn"
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = TASKS
    shared_backbone: bool = True  # False: an independent backbone per task, trained on the summed loss
    pretrained: bool = False
    pretrained_weights: str | None = None  # local weights file (implies pretrained)
    head_dropout: float = 0.2
    # input (must match what serving feeds: see agekit.data.transforms.to_model_input)
    input_size: int = 64  # pixels
    in_chans: int = 3  # 1 = grayscale
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)
    # optimisation
    epochs: int = 20
    batch_size: int = 128  # per process under DDP
    optimizer: str = "adamw"  # adamw | nadam (nadam: L2 weight decay, as torch.optim.NAdam)
    lr: float = 2e-3
    weight_decay: float = 0.05  # not applied to biases and norm parameters
    scheduler: str = "cosine"  # cosine (linear warm-up then cosine) | onecycle (30 % ramp then cosine) | constant
    warmup_epochs: float = 1.0  # cosine only
    frozen_epochs: int = 0  # train only the heads for this many epochs, then unfreeze the backbone
    backbone_lr_mult: float = 1.0  # backbone lr = lr * this (discriminative lr for pretrained backbones)
    # loss
    age_sigma: float = 2.0  # years, width of the Gaussian age label distribution
    age_l1_weight: float = 1.0  # weight of the |expected age - age| term (years)
    label_smoothing: float = 0.0  # gender / ethnicity cross-entropy
    class_weights: bool = False  # inverse-frequency class weights in gender / ethnicity cross-entropy
    loss_weighting: str = "fixed"  # fixed | uncertainty
    task_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_TASK_WEIGHTS))
    # data
    augment: bool = True
    photo_augment: float = 0.0  # per-degradation probability of photo_degrade_uint8 (blur, JPEG, low-res, exposure)
    weighted_sampler: bool = False  # sample images with probability 1 / frequency of their stratum
    sampler_strata: str = "age_bin"  # age_bin | age_bin_ethnicity
    age_bins: str = "utk7"  # bins for the sampler and the bin F1 metric
    # early stopping: stop when the validation loss of every independently trained part has not improved
    # for `patience` epochs (0: never stop early); the best epoch's weights are kept either way
    patience: int = 5
    # time budget: stop after the epoch when one more epoch (at the last epoch's wall time) would end past
    # this many seconds of training (0: no limit); the best epoch's weights are kept as with early stopping
    time_limit_s: float = 0.0
    # runtime
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast, CUDA only
    channels_last: bool = False
    compile: bool = False
    num_threads: int = 0  # torch CPU threads (0: leave torch's default)
    save_resume: bool = True  # write resume.pt after every epoch (short GPU runs skip it: rerunning is cheaper)
    progress: bool = True  # tqdm bars

    def __post_init__(self) -> None:
        for f in fields(self):  # YAML 1.1 reads 3e-4 as a string
            value = getattr(self, f.name)
            if f.type in ("float", "int") and isinstance(value, str):
                try:
                    setattr(self, f.name, float(value) if f.type == "float" else int(value))
                except ValueError:
                    raise ValueError(f"{f.name} must be a number, got {value!r}") from None
        self.tasks = check_tasks(tuple(self.tasks))
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        choices = {"optimizer": ("adamw", "nadam"), "scheduler": ("cosine", "onecycle", "constant"),
                   "loss_weighting": ("fixed", "uncertainty"), "sampler_strata": ("age_bin", "age_bin_ethnicity")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean/std need {self.in_chans} values for in_chans={self.in_chans}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a config file's mapping; unknown keys are an error naming the valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training config keys {unknown}; valid keys: {sorted(known)}")
        return cls(**values)

    def model_kwargs(self) -> dict[str, Any]:
        """Builder keyword arguments: architecture_kwargs plus in_chans (stored as the card's architecture_kwargs)."""
        if self.architecture_kwargs.get("in_chans", self.in_chans) != self.in_chans:
            raise ValueError(f"architecture_kwargs.in_chans {self.architecture_kwargs['in_chans']} contradicts "
                             f"in_chans {self.in_chans}; set only in_chans")
        return {**self.architecture_kwargs, "in_chans": self.in_chans}

    def preprocessing_card(self, name: str = "training", family: str = "scratch") -> ModelCard:
        """A ModelCard carrying this run's preprocessing (input_size, in_chans, mean, std) and model identity."""
        return ModelCard(name=name, family=family, architecture=self.architecture, tasks=self.tasks,
                         shared_backbone=self.shared_backbone, architecture_kwargs=self.model_kwargs(),
                         input_size=self.input_size, in_chans=self.in_chans, mean=self.mean, std=self.std,
                         age_bins=get_age_bins(self.age_bins).spec)


def build_model(config: TrainConfig) -> FaceModel:
    """The model `config` describes, via the registry."""
    return create_model(config.architecture, tasks=config.tasks, shared_backbone=config.shared_backbone,
                        pretrained=config.pretrained, pretrained_weights=config.pretrained_weights,
                        head_dropout=config.head_dropout, **config.model_kwargs())


# ---------------------------------------------------------------- distributed + device
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


def _sync_buffers(model: nn.Module, runtime: Runtime) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank so all ranks hold the same model."""
    if runtime.world_size > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def _average_gradients(params: Iterable[nn.Parameter]) -> None:
    """All-reduce (mean) the gradients of parameters that DDP does not manage; no-op in one process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= dist.get_world_size()


def _wrap_for_training(model: FaceModel, config: TrainConfig, runtime: Runtime) -> nn.Module:
    """DDP (when distributed) then torch.compile (when asked) around the model, for the training forward."""
    wrapped: nn.Module = model
    if runtime.world_size > 1:
        wrapped = DistributedDataParallel(model, device_ids=[runtime.device.index] if runtime.device.type == "cuda"
                                          else None)
    if config.compile:
        wrapped = torch.compile(wrapped)
    return wrapped


# ---------------------------------------------------------------- data on the device, sampling
def images_on_device(images: torch.Tensor, size: int, device: torch.device, chunk: int = 512) -> torch.Tensor:
    """Resize a uint8 (N,3,H,W) set once to (N,3,size,size) on `device` (chunked to bound float memory)."""
    return torch.cat([resize_uint8(images[i:i + chunk].to(device), size) for i in range(0, len(images), chunk)])


def stratum_weights(targets: Mapping[str, torch.Tensor], strata: str, age_bins: str) -> torch.Tensor:
    """Per-image sampling weight 1 / (size of its stratum): age bin, or age bin x ethnicity. (N,) float."""
    bins = torch.as_tensor(get_age_bins(age_bins).bin_of(targets["age"].cpu().numpy()))
    # unknown ethnicity (-1) is a stratum of its own within each age bin
    ethnicity = targets["ethnicity"].cpu() + 1
    stratum = bins * (NUM_OUTPUTS["ethnicity"] + 1) + ethnicity if strata == "age_bin_ethnicity" else bins
    counts = torch.bincount(stratum)
    return 1.0 / counts[stratum].double()


def class_weight_tensors(targets: Mapping[str, torch.Tensor], tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Inverse-frequency cross-entropy weights (mean 1 over classes) for gender / ethnicity."""
    weights = {}
    for task in tasks:
        if task == "age":
            continue
        labels = targets[task].cpu()
        counts = torch.bincount(labels[labels >= 0], minlength=NUM_OUTPUTS[task]).double().clamp_min(1)
        inverse = counts.sum() / counts
        weights[task] = (inverse / inverse.mean()).float()
    return weights


def epoch_indices(n: int, generator: torch.Generator, weights: torch.Tensor | None = None) -> torch.Tensor:
    """This epoch's order of the n training images: a permutation, or n weighted draws with replacement."""
    if weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(weights, n, replacement=True, generator=generator)


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's equal-length slice of the (identical on every rank) epoch order."""
    usable = len(indices) // world_size * world_size
    return indices[:usable][rank::world_size]


def _seed_for(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (seed, epoch, rank, ...)."""
    value = 0
    for part in parts:
        value = (value * 1_000_003 + part) % (2**63 - 1)
    return value


# ---------------------------------------------------------------- optimizer + schedule
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


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step LambdaLR (its state_dict is plain numbers, so resume.pt loads with weights_only=True)."""
    total = config.epochs * steps_per_epoch
    warmup = int(config.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, warmup, config.scheduler))


# ---------------------------------------------------------------- one epoch, evaluation
def _autocast(config: TrainConfig, device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")


def _model_input(images_uint8: torch.Tensor, card: ModelCard, config: TrainConfig) -> torch.Tensor:
    x = to_model_input(images_uint8, card)
    return x.contiguous(memory_format=torch.channels_last) if config.channels_last else x


def train_one_epoch(model: nn.Module, criterion: MultiTaskLoss, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, images: torch.Tensor,
                    targets: Mapping[str, torch.Tensor], indices: torch.Tensor, card: ModelCard,
                    config: TrainConfig, generator: torch.Generator, show_progress: bool = False,
                    description: str = "train") -> dict[str, float]:
    """One pass over `indices` (this rank's shard) in batches of config.batch_size (the last partial batch is
    dropped so BatchNorm never sees a batch of one). Returns mean losses and the image count."""
    model.train()
    device = images.device
    batch_size = config.batch_size
    n_batches = len(indices) // batch_size
    total = torch.zeros((), device=device)
    per_task = {task: torch.zeros((), device=device) for task in criterion.tasks}
    for b in tqdm(range(n_batches), desc=description, disable=not show_progress, leave=False):
        idx = indices[b * batch_size:(b + 1) * batch_size].to(device)
        batch = images[idx]
        if config.augment:
            batch = augment_uint8(batch, generator)
        if config.photo_augment > 0:
            batch = photo_degrade_uint8(batch, generator, config.photo_augment)
        x = _model_input(batch, card, config)
        with _autocast(config, device):
            logits = model(x)
        loss, parts = criterion(logits, {task: targets[task][idx] for task in criterion.tasks})
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        _average_gradients(criterion.parameters())  # learned loss weights live outside DDP
        optimizer.step()
        scheduler.step()
        total += loss.detach()
        for task, value in parts.items():
            per_task[task] += value
    n_batches = max(n_batches, 1)
    stats = {"train_loss": total.item() / n_batches}
    stats.update({f"train_{task}_loss": value.item() / n_batches for task, value in per_task.items()})
    stats["images"] = float(n_batches * batch_size)
    return stats


@torch.no_grad()
def evaluate(model: FaceModel, criterion: MultiTaskLoss, images: torch.Tensor, targets: Mapping[str, torch.Tensor],
             card: ModelCard, config: TrainConfig) -> dict[str, float]:
    """Validation metrics for the model's tasks: val_loss (sum of unweighted task losses), val_<task>_loss,
    val_age_mae (years, of the expected age), val_age_bin_f1 (macro F1 of the most probable age bin),
    val_gender_acc, val_ethnicity_acc."""
    from sklearn.metrics import f1_score

    model.eval()
    device = images.device
    bins = get_age_bins(config.age_bins)
    age_to_bin = torch.as_tensor(bins.age_to_bin_matrix(), device=device)
    n = len(images)
    known = {task: max(int((targets[task] >= 0).sum()), 1) for task in criterion.tasks}  # faces with a label
    loss_sums = {task: 0.0 for task in criterion.tasks}
    predictions: dict[str, list[torch.Tensor]] = {task: [] for task in criterion.tasks}
    bin_predictions: list[torch.Tensor] = []
    batch_size = 2 * config.batch_size
    for start in range(0, n, batch_size):
        x = _model_input(images[start:start + batch_size], card, config)
        y = {task: targets[task][start:start + batch_size] for task in criterion.tasks}
        with _autocast(config, device):
            logits = model(x)
        for task in criterion.tasks:
            loss_sums[task] += criterion.task_loss(task, logits[task], y[task]).item() * int((y[task] >= 0).sum())
            if task == "age":
                probs = age_probabilities(logits["age"])
                predictions["age"].append(expected_age(probs))
                bin_predictions.append((probs @ age_to_bin).argmax(1))
            else:
                predictions[task].append(logits[task].argmax(1))
    metrics = {f"val_{task}_loss": total / known[task] for task, total in loss_sums.items()}
    metrics = {"val_loss": sum(metrics.values()), **metrics}
    if "age" in criterion.tasks:
        true_age = targets["age"].float()
        metrics["val_age_mae"] = (torch.cat(predictions["age"]) - true_age).abs().mean().item()
        true_bins = bins.bin_of(targets["age"].cpu().numpy())
        metrics["val_age_bin_f1"] = float(f1_score(true_bins, torch.cat(bin_predictions).cpu().numpy(),
                                                   average="macro", zero_division=0))
    for task in ("gender", "ethnicity"):
        if task in criterion.tasks:
            labelled = targets[task] >= 0
            correct = torch.cat(predictions[task])[labelled] == targets[task][labelled]
            metrics[f"val_{task}_acc"] = correct.float().mean().item() if len(correct) else math.nan
    return metrics


# ---------------------------------------------------------------- early stopping + resume state
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


def _out_of_time(limit_s: float, elapsed_s: float, last_epoch_s: float, runtime: Runtime) -> bool:
    """True when one more epoch as long as the last one would end past `limit_s` seconds (0: never).
    Rank 0's clock decides for every rank, so DDP processes stop together."""
    if limit_s <= 0:
        return False
    stop = torch.tensor(float(elapsed_s + last_epoch_s > limit_s), device=runtime.device)
    if runtime.world_size > 1:
        dist.broadcast(stop, src=0)
    return bool(stop.item())


def _atomic_save(obj: Any, path: Path) -> None:
    partial = path.with_name(path.name + ".partial")
    torch.save(obj, partial)
    os.replace(partial, path)


_IDENTITY_KEYS = ("architecture", "architecture_kwargs", "tasks", "shared_backbone", "in_chans", "input_size")


def load_resume_state(path: Path, config: TrainConfig) -> dict[str, Any]:
    """resume.pt written by an earlier run of the same model (weights_only: plain tensors and numbers)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    previous = state.get("config", {})
    changed = [k for k in _IDENTITY_KEYS if k in previous and previous[k] != asdict(config)[k]
               and not (isinstance(previous[k], (list, tuple)) and tuple(previous[k]) == tuple(asdict(config)[k]))]
    if changed:
        raise ValueError(f"{path} was written for a different model ({', '.join(changed)} differ); "
                         "use another --out folder or drop --resume")
    return state


# ---------------------------------------------------------------- fit
@dataclass
class FitResult:
    """The trained model (best weights, eval mode, on the training device) and what happened."""

    model: FaceModel
    history: list[dict[str, float]]
    best_epoch: dict[str, int]  # per independently trained part ("all", or each task of a bundle)
    stopped_early: bool
    loss_weights: dict[str, float]  # final task weights (learned ones under uncertainty weighting)
    is_main: bool = True  # False on DDP ranks other than 0 (which write nothing)
    out_of_time: bool = False  # stopped before config.epochs because config.time_limit_s was spent


def fit(config: TrainConfig, train_set: FaceData, val_set: FaceData, out_dir: str | Path | None = None,
        model: FaceModel | None = None, resume: bool = False) -> FitResult:
    """Train `model` (built from config when None) on train_set, early-stopping on val_set.

    out_dir (rank 0 only) receives resume.pt after every epoch and training_log.csv; resume=True continues
    from out_dir/resume.pt. The returned model holds the best weights of each independently trained part.
    """
    runtime = setup_runtime(config.device)
    try:
        return _fit(config, train_set, val_set, Path(out_dir) if out_dir else None, model, resume, runtime)
    finally:
        if runtime.owns_process_group:
            dist.destroy_process_group()


def _fit(config: TrainConfig, train_set: FaceData, val_set: FaceData, out_dir: Path | None,
         model: FaceModel | None, resume: bool, runtime: Runtime) -> FitResult:
    device, is_main = runtime.device, runtime.is_main
    if config.num_threads > 0:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    if model is None:
        model = build_model(config)
    model.to(device)
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    if out_dir is not None and is_main:
        out_dir.mkdir(parents=True, exist_ok=True)

    # Data: resized once, kept on the device; the sampler's weights and the class weights from train labels.
    card = config.preprocessing_card()
    train_images = images_on_device(train_set.images, config.input_size, device)
    val_images = images_on_device(val_set.images, config.input_size, device)
    train_targets = {task: train_set.targets[task].to(device) for task in config.tasks}
    val_targets = {task: val_set.targets[task].to(device) for task in config.tasks}
    sample_weights = (stratum_weights(train_set.targets, config.sampler_strata, config.age_bins)
                      if config.weighted_sampler else None)
    class_weights = class_weight_tensors(train_set.targets, config.tasks) if config.class_weights else None

    criterion = build_criterion(config, class_weights).to(device)
    steps_per_epoch = len(train_images) // runtime.world_size // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {config.batch_size} is larger than the training set per process "
                         f"({len(train_images) // runtime.world_size} images); lower batch_size")
    optimizer = build_optimizer(model, criterion, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    stopping = EarlyStopping.for_model(model, config.patience)
    history: list[dict[str, float]] = []
    start_epoch = 0

    resume_path = out_dir / RESUME_FILE if out_dir is not None else None
    if resume:
        if resume_path is None or not resume_path.is_file():
            raise FileNotFoundError(f"--resume: no {RESUME_FILE} in {out_dir}; start without --resume")
        state = load_resume_state(resume_path, config)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        criterion.load_state_dict(state["criterion"])
        stopping.load_state_dict(state["early_stopping"])
        history, start_epoch = list(state["history"]), int(state["epoch"]) + 1
        if is_main:
            print(f"resumed from {resume_path} after epoch {start_epoch - 1}")

    stopped_early = start_epoch > 0 and stopping.should_stop(start_epoch - 1)
    frozen = config.frozen_epochs > start_epoch
    model.set_backbone_trainable(not frozen)
    train_model = _wrap_for_training(model, config, runtime)

    out_of_time, loop_start = False, time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if stopped_early or out_of_time:
            break
        if frozen and epoch >= config.frozen_epochs:  # unfreeze: DDP must be rebuilt to see the new params
            frozen = False
            model.set_backbone_trainable(True)
            train_model = _wrap_for_training(model, config, runtime)
            if is_main:
                print(f"epoch {epoch + 1}: backbone unfrozen (lr x {config.backbone_lr_mult})")
        # Every epoch is seeded from (seed, epoch): a resumed run repeats the uninterrupted one exactly.
        order = epoch_indices(len(train_images), torch.Generator().manual_seed(_seed_for(config.seed, epoch)),
                              sample_weights)
        indices = shard(order, runtime.rank, runtime.world_size)
        torch.manual_seed(_seed_for(config.seed, epoch, runtime.rank, 1))  # dropout
        augment_generator = torch.Generator().manual_seed(_seed_for(config.seed, epoch, runtime.rank, 2))
        lr = next(g["lr"] for g in optimizer.param_groups if g["name"].startswith("heads"))

        start = time.perf_counter()
        train_stats = train_one_epoch(train_model, criterion, optimizer, scheduler, train_images, train_targets,
                                      indices, card, config, augment_generator,
                                      show_progress=config.progress and is_main,
                                      description=f"epoch {epoch + 1}/{config.epochs}")
        seconds = time.perf_counter() - start
        if runtime.world_size > 1:  # average the logged losses over ranks
            values = torch.tensor([v for k, v in train_stats.items() if k != "images"], device=device)
            dist.all_reduce(values)
            for key, value in zip([k for k in train_stats if k != "images"], (values / runtime.world_size).tolist()):
                train_stats[key] = value
        images_seen = train_stats.pop("images") * runtime.world_size
        _sync_buffers(model, runtime)
        val_metrics = evaluate(model, criterion, val_images, val_targets, card, config)
        improved = stopping.update(model, val_metrics, epoch)

        row = {"epoch": epoch + 1, "lr": lr, **train_stats, **val_metrics,
               "seconds": seconds, "images_per_s": images_seen / max(seconds, 1e-9)}
        if config.loss_weighting == "uncertainty":
            row.update({f"weight_{task}": w for task, w in criterion.current_weights().items()})
        history.append(row)
        if is_main:
            shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k.startswith(("train_loss", "val_")))
            print(f"epoch {epoch + 1}/{config.epochs}: {shown}; {row['images_per_s']:.0f} images/s"
                  + (f"; best so far: {', '.join(improved)}" if improved else ""))
            if out_dir is not None:
                write_log(out_dir / LOG_FILE, history)
            if out_dir is not None and config.save_resume:
                _atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "criterion": criterion.state_dict(),
                              "early_stopping": stopping.state_dict(), "history": history, "epoch": epoch,
                              "config": asdict(config)}, resume_path)
        if stopping.should_stop(epoch) and epoch + 1 >= config.frozen_epochs:
            stopped_early = True
            if is_main:
                print(f"early stopping after epoch {epoch + 1}: best epochs "
                      + ", ".join(f"{part} {best + 1}" for part, best in stopping.best_epoch.items()))
        elapsed = time.perf_counter() - loop_start
        if epoch + 1 < config.epochs and _out_of_time(config.time_limit_s, elapsed, time.perf_counter() - start,
                                                      runtime):
            out_of_time = True
            if is_main:
                print(f"time limit: stopping after epoch {epoch + 1} of {config.epochs} ({elapsed:.1f} s of "
                      f"{config.time_limit_s:.0f} s spent)")

    model.set_backbone_trainable(True)
    if stopping.best_state:
        model.load_state_dict({**model.state_dict(), **stopping.best_state})
    model.eval()
    return FitResult(model, history, {k: v + 1 for k, v in stopping.best_epoch.items()}, stopped_early,
                     criterion.current_weights(), is_main, out_of_time)
