"""Grad-CAM explanations of one task head of a FaceModel, with pytorch-grad-cam.

A FaceModel returns {task: logits}; `TaskLogits` wraps it to return one task's logits, so pytorch-grad-cam
sees an ordinary classifier and the wrapper decides which output is explained. Targets:
- gender / ethnicity: the logit of the predicted (or a chosen) class (`ClassifierOutputTarget`);
- age: the probability of the predicted (or a chosen) age bin — the softmax over the 117 ages summed over
  the bin's ages (`AgeBinTarget`), so the map shows what makes the model put mass in that bin.
The map is taken at `model.gradcam_target_layers(task)`: the last conv block feeding that task's head.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from pytorch_grad_cam import (
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from threadpoolctl import threadpool_limits
from torch import nn

from agekit.checkpoint import LoadedModel
from agekit.data.transforms import to_model_input
from agekit.faces import to_rgb
from agekit.labels import AGE_MIN, CLASS_NAMES, AgeBins, get_age_bins
from agekit.predict import FLIP_AVERAGE, mirror_average

# ScoreCAM is left out: it runs one forward pass per channel (seconds per image on a CPU Space).
CAM_METHODS: dict[str, type[BaseCAM]] = {
    "GradCAM": GradCAM,
    "GradCAM++": GradCAMPlusPlus,
    "HiResCAM": HiResCAM,
    "XGradCAM": XGradCAM,
    "LayerCAM": LayerCAM,
    "EigenCAM": EigenCAM,  # gradient-free: first principal component of the activations, ignores the target
}

# What each task's map explains, for the UI (one line each).
TARGET_DESCRIPTIONS: dict[str, str] = {
    "age": "age: regions that raise the probability of the predicted age bin (the age distribution summed "
           "over that bin's ages)",
    "gender": "gender: regions that raise the score (logit) of the predicted gender",
    "ethnicity": "ethnicity: regions that raise the score (logit) of the predicted ethnicity class",
}

_cam_lock = threading.Lock()  # one CAM at a time: hooks sit on shared layers, and 2 vCPUs gain nothing from more


class TaskLogits(nn.Module):
    """Wraps a FaceModel so that forward returns only `task`'s logits (B, n_outputs).

    For a bundle (one backbone per task) only that task's backbone and head run: 2-3x faster CAMs, same
    logits as `model(x)[task]` (tested).
    """

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.model, "shared_backbone", True) is False and hasattr(self.model, "backbone_for"):
            return self.model.heads[self.task](self.model.backbone_for(self.task)(x))
        return self.model(x)[self.task]


class AgeBinTarget:
    """CAM target: probability of one age bin = sum of softmax(age logits) over the bin's ages."""

    def __init__(self, age_bins: AgeBins, bin_index: int) -> None:
        self.first = age_bins.lower[bin_index] - AGE_MIN
        self.last = age_bins.upper[bin_index] - AGE_MIN

    def __call__(self, age_logits: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(age_logits, dim=-1)
        return probs[..., self.first : self.last + 1].sum(dim=-1)


@dataclass
class CamResult:
    """A class-activation map of one face crop for one task."""

    overlay: np.ndarray  # (H, W, 3) uint8: the heat map blended over the RGB crop
    cam: np.ndarray  # (H, W) float32 in [0, 1], crop pixel grid; 1 = most important; all 0 = nothing raises it
    explained: str  # class the map explains: "female", "Asian", or an age bin such as "31-40"
    target_index: int  # index of that class (or age bin)
    probability: float  # the model's probability of that class / bin for this crop
    method: str


def class_names(task: str, age_bins: str) -> tuple[str, ...]:
    """Names of a task's classes: gender and ethnicity classes, or for "age" the bins of the scheme `age_bins`
    (a ModelCard's `age_bins`)."""
    return get_age_bins(age_bins).names if task == "age" else CLASS_NAMES[task]


def explain(loaded: LoadedModel, crop: Image.Image, task: str, method: str = "GradCAM",
            target_class: int | None = None, flip_average: bool = FLIP_AVERAGE) -> CamResult:
    """CAM of `task` for one face crop; explains the predicted class (age: age bin) unless `target_class` is set.

    The crop is preprocessed exactly as for prediction (`to_model_input` with the model's card, so grayscale
    models see grayscale) and the map is resized back onto the RGB crop. The predicted class and its probability
    are the ones the app shows (with flip_average, from the crop and its mirror image, as agekit.predict does);
    the map itself is of the crop as it is.
    """
    if task not in loaded.card.tasks:
        raise ValueError(f"model {loaded.card.name} predicts {list(loaded.card.tasks)}, not {task!r}")
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {list(CAM_METHODS)}")
    names = class_names(task, loaded.card.age_bins)
    rgb = np.array(to_rgb(crop))  # writable copy for torch.from_numpy
    x = to_model_input(torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous(), loaded.card)

    forward = TaskLogits(loaded.model, task)
    with torch.inference_mode():
        logits = (mirror_average(forward, x) if flip_average else forward(x)).float()
    probs = torch.softmax(logits, dim=-1)[0]
    if task == "age":
        bins = loaded.card.age_bin_scheme()
        class_probs = torch.from_numpy(bins.bin_probabilities(probs.numpy()))
    else:
        class_probs = probs
    index = int(class_probs.argmax()) if target_class is None else int(target_class)
    if not 0 <= index < len(names):
        raise ValueError(f"target class {target_class} out of range for {task}: choose 0..{len(names) - 1} "
                         f"({', '.join(names)})")
    target = AgeBinTarget(bins, index) if task == "age" else ClassifierOutputTarget(index)

    cam_small = run_cam(loaded.model, task, method, x, target)
    cam = F.interpolate(torch.from_numpy(cam_small)[None, None], size=rgb.shape[:2], mode="bilinear",
                        align_corners=False)[0, 0].numpy()
    cam = np.clip(np.nan_to_num(cam), 0.0, 1.0).astype(np.float32)
    overlay = show_cam_on_image(rgb.astype(np.float32) / 255.0, cam, use_rgb=True, image_weight=0.55)
    return CamResult(overlay, cam, names[index], index, float(class_probs[index]), method)


def run_cam(model: nn.Module, task: str, method: str, x: torch.Tensor, target: object) -> np.ndarray:
    """(S, S) float32 map in [0, 1] on the model-input grid, for one preprocessed input x (1,C,S,S).

    A CAM object per call, used as the context manager pytorch-grad-cam documents: its hooks sit on the model only
    while it runs (building one costs microseconds), so ordinary predictions never pass through them and nothing
    is left behind on the model.
    """
    cam_type = CAM_METHODS[method]
    with _cam_lock, cam_type(model=TaskLogits(model, task), target_layers=model.gradcam_target_layers(task)) as cam:
        try:
            # EigenCAM's SVD in multi-threaded OpenBLAS next to torch's threads takes ~0.5-1 s instead of ~3 ms.
            with torch.enable_grad(), threadpool_limits(1, user_api="blas"):
                grayscale = cam(input_tensor=x.detach().clone().requires_grad_(True), targets=[target])
        finally:
            model.zero_grad(set_to_none=True)  # backward filled parameter .grad; free it
    return np.asarray(grayscale[0], dtype=np.float32)
