"""Every zoo member's per-task probabilities on a set of faces, computed once and cached on disk.

A face set is one source of faces of one split: UTKFace's faces as cropped ("utkface_clean") and the same faces
rendered as photos and found by the app's detector ("utkface_rendered", `evaluation.wild`), and whatever other
source a builder in FACE_SET_BUILDERS adds (e.g. All-Age-Faces val/test). The consensus and the age intervals are
fitted on the val sets and evaluated on the test sets from these outputs, so no network runs twice for them.

A network's outputs are cached under runs/outputs/<model>/ keyed by its weights' sha256, the faces and the flip
averaging, so a retrained model is recomputed and an unchanged one is read back. A consensus's outputs are its
members' averaged (`member_outputs`), never cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from agekit.artifacts import AAF, CLEAN, RENDERED, file_sha256
from agekit.card import ModelCard
from agekit.checkpoint import MODEL_FILE, load_checkpoint
from agekit.consensus import ConsensusSpec, average_outputs, is_consensus
from agekit.data import FaceTensors, load_folder, load_manifest
from agekit.data.aaf import aaf_pack_path, load_aaf_faces
from agekit.faces import ALIGN_FACES, FaceDetector
from agekit.predict import FLIP_AVERAGE
from evaluation import wild
from evaluation.evaluate import DECODE_SIZE, predict_probabilities

CACHE_DIR = Path("runs/outputs")


@dataclass
class FaceSet:
    """Faces of one source and split, ready for the networks: labels and uint8 RGB images (N,3,S,S)."""

    source: str  # e.g. "utkface_clean", "utkface_rendered", "aaf"
    split: str  # "val" or "test"
    files: list[str]
    truth: dict[str, np.ndarray]  # task → true values (age in years, class codes); a source may lack a task
    images: torch.Tensor
    key: str  # identifies these exact faces (source, split, manifest, detector settings) for the cache
    provenance: dict[str, str] = field(default_factory=dict)  # where the faces came from (metrics.json "data")


@dataclass
class FaceSetOutputs:
    """Every requested zoo member's per-task probabilities {task: (N, classes)} on one face set."""

    source: str
    split: str
    files: list[str]
    truth: dict[str, np.ndarray]
    probs: dict[str, dict[str, np.ndarray]]  # model name → task → probabilities


def utkface_face_sets(split: str, data: str | None = None, manifest: str | None = None, seed: int = 0,
                      detector: FaceDetector | None = None, cache_dir: Path | None = wild.CACHE_DIR
                      ) -> list[FaceSet]:
    """The split's UTKFace faces as cropped, and the same faces rendered as photos (only those detected)."""
    faces = load_folder(data, load_manifest(manifest), split, DECODE_SIZE)
    detector = detector or FaceDetector()
    crops = wild.load_or_detect(faces, detector, split, seed, ALIGN_FACES, cache_dir)
    return utkface_sets(faces, crops, split, wild.cache_key(split, seed, faces.manifest_hash, detector))


def utkface_sets(faces: FaceTensors, crops: wild.WildCrops, split: str, rendered_key: str) -> list[FaceSet]:
    """Decoded UTKFace faces and their detected rendered-photo crops (`wild.load_or_detect`) as two face sets."""
    truth = {task: values.numpy() for task, values in faces.targets.items()}
    hits = np.flatnonzero(crops.detected)
    return [
        FaceSet(CLEAN, split, list(faces.files), truth, faces.images, f"{split}_{faces.manifest_hash[:12]}"),
        FaceSet(RENDERED, split, [faces.files[i] for i in hits], {t: v[hits] for t, v in truth.items()},
                torch.from_numpy(crops.crops[hits]).permute(0, 3, 1, 2).contiguous(), rendered_key),
    ]


def aaf_face_sets(split: str, data: str | None = None, manifest: str | None = None) -> list[FaceSet]:
    """The split's All-Age-Faces faces from their pack (`agekit.data.aaf.load_aaf_faces`: $AGEKIT_AAF_PACK, default
    packs/aaf_128.safetensors, checked against the shipped AAF manifest), cropped by the app's face path when packed;
    age and gender only (AAF has no ethnicity label)."""
    faces = load_aaf_faces(split)
    truth = {task: getattr(faces, task).numpy() for task in ("age", "gender")}
    digest = faces.images_digest()  # a pack rebuilt by another version of the face path holds other crops
    return [FaceSet(AAF, split, list(faces.files), truth, faces.images, f"aaf_{split}_{faces.manifest_hash[:12]}_{digest}",
                    {"pack": aaf_pack_path().name, "faces_sha256": digest})]


# source family → builder(split, data, manifest) of its face sets (--sources names them)
FACE_SET_BUILDERS: dict[str, Callable[..., list[FaceSet]]] = {"utkface": utkface_face_sets, "aaf": aaf_face_sets}
FaceSetSource = Callable[[str], list[FaceSet]]  # split → that split's face sets


def network_outputs(folder: Path, face_set: FaceSet, batch_size: int = 64, cache_dir: Path | None = CACHE_DIR
                    ) -> dict[str, np.ndarray]:
    """One network's flip-averaged probabilities on a face set (as the app runs it), from the cache when there."""
    path = None
    if cache_dir is not None:
        digest = hashlib.sha256(repr((file_sha256(folder / MODEL_FILE), face_set.key, face_set.files,
                                      FLIP_AVERAGE)).encode()).hexdigest()[:16]
        path = Path(cache_dir) / folder.name / f"{face_set.source}_{face_set.split}_{digest}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as cached:
                return {task: cached[task] for task in cached.files}
    probs = predict_probabilities(load_checkpoint(folder), face_set.images, batch_size) if face_set.files else {}
    if path is not None and probs:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **probs)
    return probs


def member_outputs(card: ModelCard, probs: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """A zoo member's probabilities from already computed network outputs: its own, or a consensus's average."""
    if not is_consensus(card):
        return probs[card.name]
    spec = ConsensusSpec.from_card(card)
    return average_outputs([probs[m] for m in spec.members], spec, card.tasks)


def collect_outputs(root: Path, networks: Sequence[str], face_sets: Sequence[FaceSet], batch_size: int = 64,
                    cache_dir: Path | None = CACHE_DIR) -> list[FaceSetOutputs]:
    """The named networks' outputs on every face set."""
    results = []
    for face_set in face_sets:
        probs = {}
        for name in networks:
            probs[name] = network_outputs(Path(root) / name, face_set, batch_size, cache_dir)
            print(f"  {name}: {face_set.source} {face_set.split} ({len(face_set.files)} faces)", flush=True)
        results.append(FaceSetOutputs(face_set.source, face_set.split, face_set.files, face_set.truth, probs))
    return results


def source_face_sets(sources: Sequence[str], data: str | None = None, manifest: str | None = None
                     ) -> FaceSetSource:
    """split → the face sets of the named source families (what the command-line entries use)."""
    return lambda split: build_face_sets(split, sources, data, manifest)


def build_face_sets(split: str, sources: Sequence[str], data: str | None = None, manifest: str | None = None
                    ) -> list[FaceSet]:
    """The face sets of every named source family (keys of FACE_SET_BUILDERS) for one split."""
    unknown = [s for s in sources if s not in FACE_SET_BUILDERS]
    if unknown:
        raise ValueError(f"unknown face sources {unknown}; available: {sorted(FACE_SET_BUILDERS)}")
    return [face_set for source in sources for face_set in FACE_SET_BUILDERS[source](split, data, manifest)]


__all__ = ["AAF", "CLEAN", "FACE_SET_BUILDERS", "RENDERED", "FaceSet", "FaceSetOutputs", "FaceSetSource", "aaf_face_sets", "build_face_sets",
           "collect_outputs", "member_outputs", "network_outputs", "source_face_sets", "utkface_face_sets",
           "utkface_sets"]
