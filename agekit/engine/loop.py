"""The training loop, readable top to bottom (in the spirit of torchvision's references/classification).

    config = TrainConfig(architecture="facecnn", epochs=20)
    result = fit(config, train_set, val_set, out_dir="checkpoints/scratch_facecnn")

`fit` sets up the run (device, data, loss, optimizer, schedule, early stopping, resume state), then each epoch
calls `train_one_epoch` on this rank's shard and `evaluate` on the validation set, logs a row and saves resume.pt.
The pieces it uses live beside it: config, runtime (device + DDP), sampling, optim, stopping, resume.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from agekit.card import ModelCard
from agekit.data.transforms import augment_uint8, photo_degrade_uint8, to_model_input
from agekit.engine.config import TrainConfig, build_model
from agekit.engine.optim import build_criterion, build_optimizer, build_scheduler
from agekit.engine.resume import RESUME_FILE, load_resume_state, restore_resume_state, save_resume_state
from agekit.engine.runtime import Runtime, average_gradients, setup_runtime, sync_buffers, wrap_for_training
from agekit.engine.sampling import (
    class_weight_tensors,
    epoch_indices,
    images_on_device,
    seed_for,
    shard,
    stratum_weights,
)
from agekit.engine.stopping import EarlyStopping, time_budget_spent
from agekit.labels import get_age_bins
from agekit.losses import MultiTaskLoss, age_probabilities, expected_age
from agekit.models import FaceModel
from agekit.training_log import LOG_FILE, write_log


class FaceData(Protocol):
    """What the engine needs from a data set (agekit.data.dataset.FaceTensors fits)."""

    images: torch.Tensor  # uint8 (N,3,S,S) RGB

    @property
    def targets(self) -> dict[str, torch.Tensor]: ...  # {task: int64 (N,)}


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
    """fit's body on a set-up runtime (fit leaves the process group it created, whatever happens here)."""
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
        history, start_epoch = restore_resume_state(load_resume_state(resume_path, config), model, optimizer,
                                                    scheduler, criterion, stopping)
        if is_main:
            print(f"resumed from {resume_path} after epoch {start_epoch - 1}")

    stopped_early = start_epoch > 0 and stopping.should_stop(start_epoch - 1)
    frozen = config.frozen_epochs > start_epoch
    model.set_backbone_trainable(not frozen)
    train_model = wrap_for_training(model, config, runtime)

    out_of_time, loop_start = False, time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        if stopped_early or out_of_time:
            break
        if frozen and epoch >= config.frozen_epochs:  # unfreeze: DDP must be rebuilt to see the new params
            frozen = False
            model.set_backbone_trainable(True)
            train_model = wrap_for_training(model, config, runtime)
            if is_main:
                print(f"epoch {epoch + 1}: backbone unfrozen (lr x {config.backbone_lr_mult})")
        # Every epoch is seeded from (seed, epoch): a resumed run repeats the uninterrupted one exactly.
        order = epoch_indices(len(train_images), torch.Generator().manual_seed(seed_for(config.seed, epoch)),
                              sample_weights)
        indices = shard(order, runtime.rank, runtime.world_size)
        torch.manual_seed(seed_for(config.seed, epoch, runtime.rank, 1))  # dropout
        augment_generator = torch.Generator().manual_seed(seed_for(config.seed, epoch, runtime.rank, 2))
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
        sync_buffers(model, runtime)
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
                save_resume_state(resume_path, model, optimizer, scheduler, criterion, stopping, history, epoch, config)
        if stopping.should_stop(epoch) and epoch + 1 >= config.frozen_epochs:
            stopped_early = True
            if is_main:
                print(f"early stopping after epoch {epoch + 1}: best epochs "
                      + ", ".join(f"{part} {best + 1}" for part, best in stopping.best_epoch.items()))
        elapsed = time.perf_counter() - loop_start
        last_epoch_s = time.perf_counter() - start
        if epoch + 1 < config.epochs and time_budget_spent(config.time_limit_s, elapsed, last_epoch_s, runtime):
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
        average_gradients(criterion.parameters())  # learned loss weights live outside DDP
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


def _autocast(config: TrainConfig, device: torch.device):
    """bf16 autocast when config.amp asks for it on CUDA; a no-op context elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")


def _model_input(images_uint8: torch.Tensor, card: ModelCard, config: TrainConfig) -> torch.Tensor:
    """The network's float input, normalised exactly as serving does (channels_last when config asks)."""
    x = to_model_input(images_uint8, card)
    return x.contiguous(memory_format=torch.channels_last) if config.channels_last else x
