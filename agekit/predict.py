"""Load every checkpoint once and predict age, gender and ethnicity for batches of face crops."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from agekit.card import ModelCard
from agekit.checkpoint import LoadedModel, load_checkpoint
from agekit.consensus import ConsensusSpec, average_outputs, consensus_folders
from agekit.data.transforms import to_model_input
from agekit.faces import UTK_SIZE, to_rgb
from agekit.intervals import AgeInterval, expected_ages
from agekit.labels import ETHNICITY_NAMES, GENDER_NAMES, NUM_OUTPUTS, AgeBins, get_age_bins
from agekit.models import age_probabilities

log = logging.getLogger(__name__)
# Average each face's logits with its mirror image's at inference (app and evaluation alike). Chosen on the
# validation split, where it helped every shipped model: `python -m evaluation.flip_ablation`.
FLIP_AVERAGE = True


@dataclass
class Prediction:
    """One model's prediction for one face; fields of tasks the model does not have are None."""

    model: str
    age: float | None = None  # expected age, years
    age_probs: np.ndarray | None = None  # (117,) probability of each age 0..116, sums to 1
    age_bin_probs: np.ndarray | None = None  # (n_bins,) probability of each bin of the model's age-bin scheme
    age_bin_names: tuple[str, ...] | None = None  # e.g. ("0-2", "3-6", ...), years
    gender_probs: np.ndarray | None = None  # (2,) in GENDER_NAMES order
    ethnicity_probs: np.ndarray | None = None  # (5,) in ETHNICITY_NAMES order
    age_lo: float | None = None  # lower end of the model's calibrated age interval (years); None: not calibrated
    age_hi: float | None = None  # upper end, years (the level is in the model's card: card.interval().level)

    @property
    def gender(self) -> str | None:
        """Most likely gender name."""
        return None if self.gender_probs is None else GENDER_NAMES[int(np.argmax(self.gender_probs))]

    @property
    def gender_confidence(self) -> float | None:
        """Probability of the most likely gender."""
        return None if self.gender_probs is None else float(np.max(self.gender_probs))

    @property
    def ethnicity(self) -> str | None:
        """Most likely ethnicity name."""
        return None if self.ethnicity_probs is None else ETHNICITY_NAMES[int(np.argmax(self.ethnicity_probs))]

    @property
    def ethnicity_confidence(self) -> float | None:
        """Probability of the most likely ethnicity."""
        return None if self.ethnicity_probs is None else float(np.max(self.ethnicity_probs))

    @property
    def age_bin(self) -> str | None:
        """Name of the most likely age bin, e.g. '31-40' (years)."""
        if self.age_bin_probs is None or self.age_bin_names is None:
            return None
        return self.age_bin_names[int(np.argmax(self.age_bin_probs))]

    @property
    def age_bin_confidence(self) -> float | None:
        """Probability of the most likely age bin."""
        return None if self.age_bin_probs is None else float(np.max(self.age_bin_probs))


def crops_to_batch(crops: list[Image.Image]) -> torch.Tensor:
    """Face crops → uint8 RGB (B,3,H,W); crops of differing sizes are first resized to UTK_SIZE."""
    images = [to_rgb(crop) for crop in crops]
    if len({image.size for image in images}) > 1:
        images = [im.resize((UTK_SIZE, UTK_SIZE), Image.Resampling.BICUBIC) for im in images]
    return torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).contiguous()


def decode_outputs(name: str, logits: dict[str, torch.Tensor], age_bins: str | AgeBins,
                   interval: AgeInterval | None = None) -> list[Prediction]:
    """A model's logits for a batch → one Prediction per image (probabilities, expected age in years).
    `age_bins`: a scheme name/spec, or the model's AgeBins with its bin-aware decision (card.age_bin_scheme());
    `interval`: the model's calibrated age interval (card.interval()), or None for no age_lo/age_hi."""
    probs = {task: (age_probabilities(values) if task == "age" else torch.softmax(values.float(), dim=-1)).numpy()
             for task, values in logits.items()}
    return decode_probabilities(name, probs, age_bins, interval)


def decode_probabilities(name: str, probs: dict[str, np.ndarray], age_bins: str | AgeBins,
                         interval: AgeInterval | None = None) -> list[Prediction]:
    """Per-task probabilities {task: (B, classes)} → one Prediction per image (see `decode_outputs`)."""
    batch = next(iter(probs.values())).shape[0]
    fields: dict[str, list] = {}
    if "age" in probs:
        bins = age_bins if isinstance(age_bins, AgeBins) else get_age_bins(age_bins)
        age_probs = np.asarray(probs["age"])
        fields["age"] = [float(v) for v in expected_ages(age_probs)]
        fields["age_probs"] = list(age_probs)
        fields["age_bin_probs"] = list(bins.bin_probabilities(age_probs))
        fields["age_bin_names"] = [bins.names] * batch
        if interval is not None:
            lo, hi = interval.bounds(age_probs)
            fields["age_lo"], fields["age_hi"] = [float(v) for v in lo], [float(v) for v in hi]
    for task in ("gender", "ethnicity"):
        if task in probs:
            fields[f"{task}_probs"] = list(probs[task])
    return [Prediction(name, **{key: values[i] for key, values in fields.items()}) for i in range(batch)]


@dataclass
class ConsensusModel:
    """A zoo member with no network: it averages its members' outputs (agekit.consensus); no Grad-CAM."""

    card: ModelCard
    folder: Path
    spec: ConsensusSpec
    model: None = None  # no network: code that needs one (Grad-CAM) checks `model is None`

    def predict(self, member_predictions: dict[str, list[Prediction]]) -> list[Prediction]:
        """The consensus' Predictions from its members' Predictions for the same batch (no forward pass)."""
        member_probs = []
        for member in self.spec.members:
            preds = member_predictions[member]
            member_probs.append({task: np.stack([getattr(p, f"{task}_probs") for p in preds])
                                 for task in self.card.tasks} if preds else {})
        if not any(member_probs):
            return []
        averaged = average_outputs(member_probs, self.spec, self.card.tasks)
        return decode_probabilities(self.card.name, averaged, self.card.age_bin_scheme(), self.card.interval())


@dataclass
class ModelZoo:
    """Every loadable checkpoint under a folder, in eval mode, ready to predict on face crops."""

    models: dict[str, LoadedModel | ConsensusModel] = field(default_factory=dict)  # networks, then consensuses
    failures: dict[str, str] = field(default_factory=dict)  # checkpoint folder name → why it did not load
    channels_last: bool = False  # models' conv weights (and inputs) are NHWC
    flip_average: bool = FLIP_AVERAGE  # average each face with its mirror image (see model_logits)
    workers: int = 1  # models run at once by `predict` (threads shared by every caller; 1: one after another)

    @classmethod
    def load(cls, root: str | Path = "checkpoints", channels_last: bool = True,
             flip_average: bool = FLIP_AVERAGE, workers: int = 1) -> ModelZoo:
        """Load each checkpoint folder (one with config.json or *.safetensors) under `root`, sorted by name.

        A missing or corrupt checkpoint is recorded in `failures` and the others still load; a missing `root`
        gives an empty zoo. A consensus folder (config.json of family "consensus", no weights) loads after the
        networks and fails, with the reason, when one of its members did not load. `channels_last` stores conv weights NHWC: 25-30% faster CPU inference for the
        scratch CNNs, ResNet and Inception-ResNet, ~7% for MobileNet (1 thread, batch 1 and 8). `workers` > 1 runs
        that many models at once in `predict` (the app: one per core, each model on 1 torch thread).
        """
        zoo = cls(channels_last=channels_last, flip_average=flip_average, workers=workers)
        root = Path(root)
        if not root.is_dir():
            return zoo
        consensuses = consensus_folders(root)
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            if not ((folder / "config.json").exists() or any(folder.glob("*.safetensors"))):
                continue  # not a checkpoint (e.g. a stray folder); nothing to report
            if folder in consensuses:
                continue  # loaded below, once every network is in
            try:
                loaded = load_checkpoint(folder)
                _prepare(loaded, channels_last)
            except Exception as err:  # noqa: BLE001 — one broken checkpoint must not take the others down
                zoo.failures[folder.name] = str(err) if isinstance(err, ValueError) else f"{type(err).__name__}: {err}"
                log.warning("checkpoint %s failed to load: %s", folder, err)
                continue
            zoo.models[folder.name] = loaded
        for folder in consensuses:
            try:
                zoo.models[folder.name] = zoo.load_consensus(folder)
            except ValueError as err:
                zoo.failures[folder.name] = str(err)
                log.warning("consensus %s failed to load: %s", folder, err)
        return zoo

    def load_consensus(self, folder: Path) -> ConsensusModel:
        """A consensus folder whose members are all loaded networks of this zoo; ValueError saying what is missing."""
        card = ModelCard.load(folder)
        spec = ConsensusSpec.from_card(card)
        missing = [m for m in spec.members if not isinstance(self.models.get(m), LoadedModel)]
        if missing:
            raise ValueError(f"consensus {folder.name} needs member checkpoint(s) {missing}, which did not load "
                             f"({'; '.join(self.failures.get(m, 'not found') for m in missing)})")
        for member in spec.members:
            lacking = [t for t in card.tasks if t not in self.models[member].card.tasks]
            if lacking:
                raise ValueError(f"consensus {folder.name}: member {member} does not predict {lacking}")
        return ConsensusModel(card, folder, spec)

    @property
    def networks(self) -> dict[str, LoadedModel]:
        """The loaded networks (every model but the consensuses)."""
        return {name: m for name, m in self.models.items() if isinstance(m, LoadedModel)}

    def predict(self, crops: list[Image.Image]) -> dict[str, list[Prediction]]:
        """Run every network once on the whole batch of crops; {model name: one Prediction per crop, in order}.
        Consensuses are computed from their members' predictions of this batch (no extra forward pass)."""
        if not crops:
            return {name: [] for name in self.models}
        batch = crops_to_batch(crops)
        networks = self.networks
        if self.workers <= 1:
            results = {name: predict_batch(loaded, batch, name, self.channels_last, self.flip_average)
                       for name, loaded in networks.items()}
        else:
            pool = model_threads(self.workers)
            futures = {name: pool.submit(predict_batch, loaded, batch, name, self.channels_last, self.flip_average)
                       for name, loaded in networks.items()}
            results = {name: future.result() for name, future in futures.items()}
        for name, member in self.models.items():
            if isinstance(member, ConsensusModel):
                results[name] = member.predict(results)
        return {name: results[name] for name in self.models}



@functools.cache
def model_threads(workers: int) -> ThreadPoolExecutor:
    """One process-wide pool per size: every request's models share it, so at most `workers` models run at once
    (torch releases the GIL inside its ops; measured on 2 busy cores: 5 models on 5 faces 2.1 s → 1.1 s)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="agekit-model")


def model_logits(loaded: LoadedModel, batch: torch.Tensor, channels_last: bool = False,
                 flip_average: bool = FLIP_AVERAGE) -> dict[str, torch.Tensor]:
    """One model's logits {task: (B, n_outputs)} for a uint8 RGB (B,3,H,W) batch, without autograd.

    flip_average: run every face and its left-right mirror image in one batch and average their logits
    (test-time augmentation, chosen on the validation split: `python -m evaluation.flip_ablation`).
    """
    x = to_model_input(batch, loaded.card)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def forward(inputs: torch.Tensor) -> dict[str, torch.Tensor]:
        return loaded.model(inputs.contiguous(memory_format=memory_format))

    with torch.inference_mode():
        return mirror_average(forward, x) if flip_average else forward(x)


def mirror_average(forward: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Any:
    """forward() on the (B,C,H,W) inputs and their left-right mirror images in one batch of 2B, halves averaged;
    the output is a tensor or a {task: tensor} dict with the batch first."""
    n = x.shape[0]
    out = forward(torch.cat([x, x.flip(-1)]))
    if isinstance(out, dict):
        return {key: (values[:n] + values[n:]) / 2 for key, values in out.items()}
    return (out[:n] + out[n:]) / 2


def predict_batch(loaded: LoadedModel, batch: torch.Tensor, name: str | None = None,
                  channels_last: bool = False, flip_average: bool = FLIP_AVERAGE) -> list[Prediction]:
    """One model on a uint8 RGB (B,3,H,W) batch → B Predictions."""
    logits = model_logits(loaded, batch, channels_last, flip_average)
    return decode_outputs(name or loaded.card.name, logits, loaded.card.age_bin_scheme(), loaded.card.interval())


def _prepare(loaded: LoadedModel, channels_last: bool) -> None:
    """Eval mode, optional NHWC weights, and one dummy forward pass so a broken model fails at load time."""
    loaded.model.eval()
    if channels_last:
        loaded.model.to(memory_format=torch.channels_last)
    size = loaded.card.input_size
    logits = model_logits(loaded, torch.zeros((1, 3, size, size), dtype=torch.uint8), channels_last, False)
    expected = {task: (1, NUM_OUTPUTS[task]) for task in loaded.card.tasks}
    got = {task: tuple(value.shape) for task, value in logits.items()}
    if got != expected:
        raise ValueError(f"the model's outputs {got} do not match its config.json tasks {expected}")


if __name__ == "__main__":  # python -m agekit.predict PHOTOS... --out results.csv (agekit.batch)
    from agekit.batch import main

    main()
