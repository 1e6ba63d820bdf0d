"""Everything the app loads once at start: models, face detector, example images, paths."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from agekit.card import FAMILIES
from agekit.consensus import CONSENSUS
from agekit.faces import UTK_SIZE, FaceDetector
from agekit.predict import ModelZoo
from agekit.ui.model_info import committed_metrics, ranking_mae

log = logging.getLogger("agekit.ui")

# Models run at once for one photo: one per vCPU of a CPU Space (each on 1 torch thread); all requests share them.
MODEL_WORKERS = 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")


@dataclass
class AppContext:
    """Shared, read-only state of a running app (one per process, built before the Blocks)."""

    checkpoints_root: Path
    zoo: ModelZoo
    detector: FaceDetector | None
    startup_problems: list[str] = field(default_factory=list)  # shown in the banner
    data_root: str = ""  # AGEKIT_UTKFACE: full-size Error-analysis faces ("" = the shipped test-face pack)
    examples: list[Path] = field(default_factory=list)
    ranking: dict[str, float] = field(default_factory=dict)  # model → val age MAE, years (model_info.ranking_mae)

    @property
    def ranked_names(self) -> list[str]:
        """Loaded models best first: by validation age MAE (`ranking`), then the unranked ones by family (scratch,
        pretrained, multitask, consensus) and name."""
        order = {family: i for i, family in enumerate(FAMILIES)}

        def key(name: str) -> tuple:
            mae = self.ranking.get(name)
            return (mae is None, mae or 0.0, order.get(self.zoo.models[name].card.family, len(order)), name)

        return sorted(self.zoo.models, key=key)

    @property
    def model_names(self) -> list[str]:
        """Loaded models in the order the page lists them: the headline model (★), then the consensus, then the
        rest best first (`ranked_names`)."""
        names = self.ranked_names
        first = [self.headline_model] if self.headline_model else []
        first += [n for n in names if self.zoo.models[n].card.family == CONSENSUS and n not in first]
        return first + [n for n in names if n not in first]

    @property
    def headline_model(self) -> str | None:
        """The best-ranked loaded model (lowest validation age MAE), or None when no loaded model is ranked."""
        names = self.ranked_names
        return names[0] if names and names[0] in self.ranking else None

    def model_title(self, name: str) -> str:
        """The model's name as the page shows it; the headline model gets a ★."""
        return f"★ {name}" if name == self.headline_model else name

    def ranking_markdown(self) -> str:
        """One line saying how the model columns are ordered and which model is the headline."""
        best = self.headline_model
        unranked = [name for name in self.model_names if name not in self.ranking]
        missing = (f" Not ranked, no validation evaluation (`python -m evaluation.run --models "
                   f"{' '.join(unranked)}`): {', '.join(unranked)}." if unranked else "")
        if best is None:
            return "No model has a committed validation evaluation yet, so the columns are not ranked." + missing
        return (f"★ {best} is the headline model: the lowest validation age MAE ({self.ranking[best]:.2f} years, mean "
                "of clean faces and faces in photos); the consensus comes next, then the others best first." + missing)

    @property
    def crop_side(self) -> int:
        """Side (px) of the face crops a session keeps for Grad-CAM: the largest input any loaded model takes."""
        return max((loaded.card.input_size for loaded in self.zoo.models.values()), default=UTK_SIZE)

    @classmethod
    def create(cls, checkpoints_root: str | Path = "checkpoints", data_root: str | None = None,
               examples_dir: str | Path | None = "examples", detector: FaceDetector | None = None) -> AppContext:
        """Load every checkpoint under `checkpoints_root` and the face detector; never raises for a bad model.

        A model or detector that fails to load is reported in `startup_problems` and the rest keep working.
        """
        root = Path(checkpoints_root)
        problems: list[str] = []
        zoo = ModelZoo.load(root, workers=MODEL_WORKERS)
        problems += [f"model {name} failed to load: {reason}" for name, reason in zoo.failures.items()]
        if not zoo.models:
            problems.append(f"no usable model checkpoints in {root}: set AGEKIT_CHECKPOINTS to a folder of "
                            "checkpoints (each with model.safetensors + config.json)")
        if detector is None:
            try:
                detector = FaceDetector()
            except Exception as exc:  # the Test-set tab still works without a detector
                log.exception("face detector failed to load")
                problems.append(f"face detector failed to load: {exc}")
        ranking = {name: mae for name, loaded in zoo.models.items()
                   if (mae := ranking_mae(committed_metrics(loaded.folder))) is not None}
        return cls(checkpoints_root=root, zoo=zoo, detector=detector, startup_problems=problems,
                   data_root=data_root or "", examples=list_examples(examples_dir), ranking=ranking)

    @classmethod
    def from_env(cls, base_dir: str | Path = ".") -> AppContext:
        """`create` with AGEKIT_CHECKPOINTS (default <base_dir>/checkpoints) and AGEKIT_UTKFACE from the environment."""
        base = Path(base_dir)
        checkpoints = os.environ.get("AGEKIT_CHECKPOINTS") or base / "checkpoints"
        return cls.create(checkpoints, data_root=os.environ.get("AGEKIT_UTKFACE"), examples_dir=base / "examples")

    def banner_markdown(self) -> str:
        """Markdown for the top-of-page banner: empty when everything loaded."""
        if not self.startup_problems:
            return ""
        return "\n".join(f"> ⚠️ {problem}" for problem in self.startup_problems)

    def require_detector(self) -> FaceDetector:
        if self.detector is None:
            raise ValueError("the face detector is not available (see the banner at the top); "
                             "the Test-set and Error-analysis tabs still work")
        return self.detector


def list_examples(folder: str | Path | None) -> list[Path]:
    """Image files in `folder`, sorted by name (empty when the folder is missing)."""
    if folder is None or not Path(folder).is_dir():
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
