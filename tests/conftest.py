"""Shared test setup: one torch thread per test process, tiny checkpoints written on demand, and where the real
UTKFace folder is (tests that need it import `utkface_folder` and skip without it)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from agekit.card import ModelCard
from agekit.checkpoint import save_checkpoint
from agekit.labels import TASKS, UTK7
from agekit.models import create_model

REPO = Path(__file__).resolve().parents[1]


def utkface_folder() -> Path | None:
    """AGEKIT_UTKFACE if set, else ../shared/data/UTKFace beside the repository (as in CI), if it is a folder."""
    for candidate in (os.environ.get("AGEKIT_UTKFACE"), REPO.parent / "shared" / "data" / "UTKFace"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture(autouse=True, scope="session")
def single_torch_thread() -> Iterator[None]:
    """One intra-op thread: on a 2-core CI box, 2 spinning OpenMP threads make MTCNN 10-100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def save_tiny_checkpoint(folder: Path, tasks: tuple[str, ...] = TASKS, shared: bool = True, in_chans: int = 3,
                         age_bins: str = UTK7.spec, seed: int = 0, family: str = "scratch",
                         widths: tuple[int, ...] = (4, 8), **card_fields: Any) -> Path:
    """A facecnn checkpoint of a few hundred parameters (32 px input unless card_fields say otherwise), saved
    with the real save_checkpoint; card_fields (input_size, split_hash, ...) go into its ModelCard."""
    torch.manual_seed(seed)
    kwargs = {"widths": list(widths), "convs_per_block": 1}
    model = create_model("facecnn", tasks=tasks, shared_backbone=shared, in_chans=in_chans, **kwargs).eval()
    card = ModelCard(name=folder.name, family=family, architecture="facecnn", tasks=tasks, shared_backbone=shared,
                     architecture_kwargs=kwargs, in_chans=in_chans, mean=(0.5,) * in_chans,
                     std=(0.25,) * in_chans, age_bins=age_bins, init_source="random",
                     **{"input_size": 32, **card_fields})
    return save_checkpoint(folder, model, card)


@pytest.fixture(scope="session")
def save_tiny() -> Callable[..., Path]:
    """The save_tiny_checkpoint function, for module-scoped fixtures that build checkpoint folders."""
    return save_tiny_checkpoint
