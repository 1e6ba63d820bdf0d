"""ModelCard: everything about a trained model that is not its weights (stored as config.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from agekit.intervals import AgeInterval
from agekit.labels import DEFAULT_AGE_BINS, AgeBins, get_age_bins
from agekit.model_spec import ModelSpec

# "consensus": no weights of its own, it averages other checkpoints' outputs (agekit.consensus)
FAMILIES = ("scratch", "pretrained", "multitask", "consensus")


@dataclass(kw_only=True)
class ModelCard(ModelSpec):
    """Architecture and preprocessing (the ModelSpec fields) and provenance of a checkpoint."""

    name: str  # folder name under checkpoints/, e.g. "scratch_facecnn"
    family: str  # one of FAMILIES, for the app's "scratch vs pretrained vs multitask" view
    age_bins: str = DEFAULT_AGE_BINS.spec  # scheme used for bin metrics and the UI's bin bar
    age_bin_log_offsets: tuple[float, ...] = ()  # bin-aware decision chosen on val (evaluation.bin_decision)
    # 80 % age interval calibrated on val (AgeInterval.to_dict, evaluation.intervals); {} = none yet
    age_interval: dict[str, Any] = field(default_factory=dict)
    split_hash: str = ""  # sha256 of the split manifest the model was trained/evaluated on
    init_source: str = "random"  # what the weights started from (file name + sha256, or "random")
    description: str = ""
    params: int = 0
    train_config: dict[str, Any] = field(default_factory=dict)
    git_commit: str = ""
    format_version: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.family not in FAMILIES:
            raise ValueError(f"model family {self.family!r} is not one of {FAMILIES}")
        self.age_bin_log_offsets = tuple(self.age_bin_log_offsets)
        self.age_bin_scheme()  # offsets must fit the bins
        self.interval()  # a stored interval must parse

    def age_bin_scheme(self) -> AgeBins:
        """The model's age bins with its bin-aware decision: use this to turn age probabilities into bins."""
        return get_age_bins(self.age_bins).with_offsets(self.age_bin_log_offsets)

    def interval(self, source: str | None = None) -> AgeInterval | None:
        """The model's calibrated age interval rule, or None when it has none: the served one (a photo of unknown
        source), or with `source`'s own q for faces known to come from that calibration source."""
        if not self.age_interval:
            return None
        rule = AgeInterval.from_dict(self.age_interval)
        return rule.for_source(source) if source else rule

    def data_sources(self) -> tuple[str, ...]:
        """The face datasets the training saw: ('UTKFace',) or ('UTKFace', 'All-Age-Faces') (train_config's
        sources, by pack name: `python -m agekit.data aaf-pack` names its packs aaf_*)."""
        packs = [source["pack"] for source in (self.train_config or {}).get("sources", [])]
        return ("UTKFace", "All-Age-Faces") if any(p.startswith("aaf") for p in packs) else ("UTKFace",)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "config.json") -> ModelCard:
        """Parse config.json text; unknown or missing keys give a clear error, never code execution."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{source} is not valid JSON: {err}") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{source} must hold a JSON object")  # noqa: TRY004 (bad file content, not a caller bug)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{source} has unknown keys {unknown}; was it written by a newer agekit?")
        try:
            return cls(**raw)
        except TypeError as err:
            raise ValueError(f"{source} is missing required fields: {err}") from None

    def save(self, folder: str | Path) -> Path:
        path = Path(folder) / "config.json"
        path.write_text(self.to_json() + "\n")
        return path

    @classmethod
    def load(cls, folder: str | Path) -> ModelCard:
        path = Path(folder) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json in {folder}: not an agekit checkpoint folder")
        return cls.from_json(path.read_text(), source=str(path))
