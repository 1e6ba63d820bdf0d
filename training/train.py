"""Train one agekit model from a YAML config and write its checkpoint folder.

    python -m training.train --config training/configs/scratch_facecnn.yaml \
        [--pack packs/utkface_128.safetensors] [--out checkpoints/NAME] [--epochs N] [--device cuda|cpu]
        [--pretrained-weights FILE] [--resume] [key=value ...]

A config may name `extra_packs:` (a list) beside `pack:`: their train and val faces are added to the main pack's,
e.g. packs/aaf_128.safetensors from `python -m agekit.data aaf-pack`; faces without an ethnicity label (-1) are left
out of that task's loss and metrics.

`key=value` overrides any config key (values are parsed as YAML: lr=3e-4, tasks=[age], task_weights.age=0.5).
Distributed: `torchrun --nproc_per_node N -m training.train --config ...` runs the same script as DDP.
The folder (default checkpoints/<name>) receives model.safetensors, config.json (ModelCard), training_log.csv
and, while training runs, resume.pt (removed once the checkpoint is written).
"""

from __future__ import annotations

import os

# OpenMP threads that spin while waiting collapse throughput when other processes share the cores (MobileNet
# on 2 busy cores: 127 → 386 images/s with PASSIVE). Set OMP_WAIT_POLICY=ACTIVE on a machine of your own if
# that is faster there. Must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

import yaml

from agekit.artifacts import file_sha256
from agekit.card import ModelCard
from agekit.checkpoint import MODEL_FILE, save_checkpoint
from agekit.engine import RESUME_FILE, FaceData, FitResult, TrainConfig, fit
from agekit.models.dlib_resnet import packaged_weights
from agekit.models.pretrained import shipped_onet_weights

DEFAULT_PACK = "packs/utkface_128.safetensors"
# config keys that describe the run, not the training; extra_packs: more sources (e.g. All-Age-Faces) whose train and
# val faces join the main pack's (the main pack's split is the one the card records and evaluation checks)
RUN_KEYS = ("name", "family", "description", "pack", "extra_packs")


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """['lr=3e-4', 'task_weights.age=0.5'] → {'lr': 0.0003, 'task_weights': {'age': 0.5}} (values as YAML)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"override {pair!r} is not key=value")
        value = yaml.safe_load(text) if text else None
        target = overrides
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
        target[leaf] = value
    return overrides


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update (nested dicts such as task_weights are merged key by key)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def init_source(config: TrainConfig) -> str:
    """Where the weights started: '<file> sha256:<hash>', 'timm hub:<name>', a facenet-pytorch source, or 'random'.
    A checkpoint's weights file keeps its folder ('multitask_dlib/model.safetensors'): the name alone says nothing."""
    if config.pretrained_weights:
        path = Path(config.pretrained_weights)
        name = f"{path.parent.name}/{path.name}" if path.name == MODEL_FILE else path.name
        return f"{name} sha256:{file_sha256(path)}"
    if not config.pretrained:
        return "random"
    if config.architecture.startswith("timm/"):
        return f"timm hub:{config.architecture.removeprefix('timm/')}"
    if config.architecture == "mtcnn_onet":
        return f"facenet-pytorch onet.pt sha256:{file_sha256(shipped_onet_weights())}"
    if config.architecture == "dlib_resnet29" and (packaged := packaged_weights()) is not None:
        return f"face_recognition_models {packaged.name} sha256:{file_sha256(packaged)}"
    if config.architecture == "inception_resnet_v1":
        return f"facenet-pytorch hub:{config.architecture_kwargs.get('source', 'vggface2')}"
    return "pretrained"


def git_commit() -> str:
    """HEAD commit of the repository (with '-dirty' when tracked files differ from it), '' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], capture_output=True, check=False).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return ""
    return commit + ("-dirty" if dirty else "")


def build_card(config: TrainConfig, run: dict[str, Any], split_hash: str, result: FitResult) -> ModelCard:
    card = config.preprocessing_card(name=run["name"], family=run["family"])
    card.architecture_kwargs = dict(result.model.architecture_kwargs)  # defaults included: immune to changes
    card.description = run.get("description", "")
    card.split_hash = split_hash
    card.init_source = init_source(config)
    card.git_commit = git_commit()
    card.train_config = {**asdict(config), "sources": run.get("sources", []), "result": {
        "epochs_run": len(result.history), "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early, "out_of_time": result.out_of_time,
        "loss_weights": result.loss_weights}}
    return card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, type=Path, help="training/configs/<name>.yaml")
    parser.add_argument("--pack", help=f"face pack (default: the config's pack, else {DEFAULT_PACK})")
    parser.add_argument("--out", type=Path, help="checkpoint folder (default checkpoints/<name>)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--device", help="auto | cpu | cuda")
    parser.add_argument("--pretrained-weights", help="local pretrained weights file for the backbone")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/resume.pt")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="override config keys")
    return parser.parse_args(argv)


def load_run_config(args: argparse.Namespace) -> tuple[TrainConfig, dict[str, Any]]:
    """(TrainConfig, run info {name, family, description, pack}) from the YAML file, overrides and flags."""
    if not args.config.is_file():
        raise SystemExit(f"config file {args.config} not found; see training/configs/")
    raw = yaml.safe_load(args.config.read_text()) or {}
    flags = {"epochs": args.epochs, "device": args.device, "pretrained_weights": args.pretrained_weights}
    raw = merge(merge(raw, parse_overrides(args.overrides)), {k: v for k, v in flags.items() if v is not None})
    run = {key: raw.pop(key) for key in RUN_KEYS if key in raw}
    run.setdefault("name", args.config.stem)
    run.setdefault("family", "pretrained" if raw.get("pretrained") or raw.get("pretrained_weights") else "scratch")
    if args.pack:
        run["pack"] = args.pack
    run.setdefault("pack", DEFAULT_PACK)
    weights = raw.get("pretrained_weights")
    if weights and not Path(weights).is_file():
        raise SystemExit(f"pretrained weights {weights} not found. Copy them into the ignored .weights/ folder "
                         "(mkdir -p .weights && cp ../shared/weights/* .weights/) or pass --pretrained-weights FILE")
    try:
        return TrainConfig.from_dict(raw), run
    except ValueError as err:
        raise SystemExit(f"{args.config}: {err}") from None


def train_and_save(config: TrainConfig, run: dict[str, Any], train_set: FaceData, val_set: FaceData, out: Path,
                   resume: bool = False) -> FitResult:
    """Fit `config` on the decoded sets and (rank 0) write the checkpoint folder `out`; resume.pt is removed."""
    result = fit(config, train_set, val_set, out_dir=out, resume=resume)
    if result.is_main:
        card = build_card(config, run, train_set.manifest_hash, result)
        save_checkpoint(out, result.model, card)
        (out / RESUME_FILE).unlink(missing_ok=True)
        print(f"saved {out} ({card.params:,} parameters; best epoch {result.best_epoch})")
    return result


def main(argv: list[str] | None = None) -> Path:
    from agekit.data.dataset import concat_faces, load_pack  # the data layer is only needed when actually training

    args = parse_args(argv)
    config, run = load_run_config(args)
    out = args.out or Path("checkpoints") / run["name"]
    packs = [run["pack"], *run.get("extra_packs", [])]
    for pack in packs:
        if not Path(pack).is_file():
            raise SystemExit(f"pack {pack} not found; build it with: python -m agekit.data pack PATH --out {pack} "
                             "(an All-Age-Faces pack: python -m agekit.data aaf-pack PATH --out ...)")
    sources = [(pack, load_pack(pack, "train"), load_pack(pack, "val")) for pack in packs]
    run["sources"] = [{"pack": Path(pack).name, "manifest_hash": train.manifest_hash, "train_faces": len(train),
                       "val_faces": len(val)} for pack, train, val in sources]
    train_set = concat_faces([train for _, train, _ in sources])
    val_set = concat_faces([val for _, _, val in sources])
    if os.environ.get("RANK", "0") == "0":
        print(f"{run['name']}: {len(train_set)} train / {len(val_set)} val faces from {', '.join(packs)} → {out}")
    train_and_save(config, run, train_set, val_set, out, resume=args.resume)
    return out


if __name__ == "__main__":
    main()
