"""TrainConfig: everything that defines a training run, as plain values; build_model builds what it describes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from agekit.card import ModelCard
from agekit.labels import TASKS, get_age_bins
from agekit.losses import DEFAULT_TASK_WEIGHTS
from agekit.model_spec import ModelSpec
from agekit.models import FaceModel, create_model


@dataclass
class TrainConfig(ModelSpec):
    """Everything that defines a training run, as plain values (stored in the ModelCard's train_config).

    The model and its input are the ModelSpec fields (a bundle, shared_backbone=False, trains its independent
    backbones on the summed loss); the rest says how it is trained.
    """

    # model (the ModelSpec fields without a default get one here)
    architecture: str = "facecnn"
    tasks: tuple[str, ...] = TASKS
    pretrained: bool = False
    pretrained_weights: str | None = None  # local weights file (implies pretrained)
    head_dropout: float = 0.2
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
        super().__post_init__()
        choices = {"optimizer": ("adamw", "nadam"), "scheduler": ("cosine", "onecycle", "constant"),
                   "loss_weighting": ("fixed", "uncertainty"), "sampler_strata": ("age_bin", "age_bin_ethnicity")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")

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
        spec = {**self.spec_values(), "architecture_kwargs": self.model_kwargs()}
        return ModelCard(name=name, family=family, age_bins=get_age_bins(self.age_bins).spec, **spec)


def build_model(config: TrainConfig) -> FaceModel:
    """The model `config` describes, via the registry."""
    return create_model(config.architecture, tasks=config.tasks, shared_backbone=config.shared_backbone,
                        pretrained=config.pretrained, pretrained_weights=config.pretrained_weights,
                        head_dropout=config.head_dropout, **config.model_kwargs())
