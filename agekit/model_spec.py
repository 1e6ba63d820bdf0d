"""ModelSpec: what a network is and what it is fed, shared by the training config and the model card."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from agekit.labels import check_tasks


@dataclass
class ModelSpec:
    """The network and its input: `architecture` + `architecture_kwargs` + `tasks` + `shared_backbone` are
    exactly what `agekit.models.create_model` needs to rebuild it; the rest is the preprocessing serving must
    repeat (see agekit.data.transforms.to_model_input).

    agekit.engine.TrainConfig and agekit.card.ModelCard extend it, so both carry these fields by the same names.
    """

    architecture: str  # registry name, e.g. "facecnn", "mobilenetv1_025", "timm/resnet18"
    tasks: tuple[str, ...]
    shared_backbone: bool = True  # False: one backbone per task (a bundle of single-task nets)
    architecture_kwargs: dict[str, Any] = field(default_factory=dict)
    input_size: int = 64  # square side in pixels fed to the network
    in_chans: int = 3  # 1 = grayscale input
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)  # per-channel normalisation on [0, 1] pixels
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    def __post_init__(self) -> None:
        self.tasks = check_tasks(tuple(self.tasks))
        self.mean, self.std = tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans:
            raise ValueError(f"mean/std need {self.in_chans} values for in_chans={self.in_chans}")

    def spec_values(self) -> dict[str, Any]:
        """This object's ModelSpec fields by name (a TrainConfig or ModelCard reduced to its model)."""
        return {f.name: getattr(self, f.name) for f in fields(ModelSpec)}


# The fields that fix the weights' layout: a checkpoint or resume state only loads into a model that agrees on
# all of them (mean and std only change what the pixels look like).
IDENTITY_FIELDS = tuple(f.name for f in fields(ModelSpec) if f.name not in ("mean", "std"))
