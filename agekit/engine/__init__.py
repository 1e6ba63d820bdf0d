"""Training: `fit(config, train_set, val_set, out_dir=...)` and the pieces it is built from.

Data sets are FaceTensors-like: `.images` uint8 (N,3,S,S) RGB and `.targets` {task: int64 (N,)}.
`fit` resizes the images once to `input_size` and keeps them on the device; each step gathers a batch by
index, augments it on the device (agekit.data.transforms.augment_uint8) and normalises it exactly like
serving does (to_model_input). Every epoch writes `resume.pt` (weights, optimizer, scheduler, early-stopping
state) and `training_log.csv` into `out_dir`. Under `torchrun` (WORLD_SIZE>1) the same code runs DDP:
indices are sharded per rank, gradients averaged, and only rank 0 writes files.

    config.py       TrainConfig (a ModelSpec plus how to train it), build_model
    runtime.py      the device and the DDP process group
    sampling.py     images on the device, sampling and class weights, epoch order, shards, seeds
    optim.py        loss, optimizer param groups, lr schedule
    stopping.py     early stopping per independently trained part, the time budget
    resume.py       resume.pt: written after every epoch, read back on --resume
    loop.py         fit, train_one_epoch, evaluate
"""

from agekit.engine.config import TrainConfig, build_model
from agekit.engine.loop import FaceData, FitResult, evaluate, fit, train_one_epoch
from agekit.engine.optim import build_criterion, build_optimizer, build_scheduler, lr_factor
from agekit.engine.resume import RESUME_FILE, load_resume_state
from agekit.engine.runtime import Runtime, setup_runtime
from agekit.engine.sampling import class_weight_tensors, epoch_indices, images_on_device, shard, stratum_weights
from agekit.engine.stopping import EarlyStopping

__all__ = [
    "RESUME_FILE", "EarlyStopping", "FaceData", "FitResult", "Runtime", "TrainConfig", "build_criterion",
    "build_model", "build_optimizer", "build_scheduler", "class_weight_tensors", "epoch_indices", "evaluate",
    "fit", "images_on_device", "load_resume_state", "lr_factor", "setup_runtime", "shard",
    "stratum_weights", "train_one_epoch",
]
