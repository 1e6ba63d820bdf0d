"""Deploy the app to a Hugging Face Space, or one checkpoint to a Hub model repository, without git-lfs.

    python -m tools.push_space OWNER/NAME [--dry-run] [--private]          # the app as a Gradio Space
    python -m tools.push_space OWNER/NAME --model pretrained_mobilenet     # checkpoints/<model> as a model repo

`huggingface_hub.HfApi().upload_folder` uploads from the working tree and stores large files itself (a plain
`git push` to a Space refuses files over 10 MB that are not LFS-tracked; multitask_dlib's weights are 10.8 MiB).
The Space gets exactly SPACE_ALLOW minus SPACE_IGNORE: the app, the library (with the licensed test-face pack),
the checkpoints, the examples, the requirements and this README (its front matter configures the Space); never
runs/, packs/, .venv/, the tests or any UTKFace image outside the pack. `--dry-run` lists the files and their
total size and sends nothing. Log in first (`huggingface-cli login`, or HF_TOKEN).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from huggingface_hub import HfApi
from huggingface_hub.utils import filter_repo_objects

REPO_ROOT = Path(__file__).resolve().parents[1]
SPACE_ALLOW = ["app.py", "README.md", "requirements.txt", "agekit/*", "checkpoints/*", "examples/*"]
SPACE_IGNORE = ["*/__pycache__/*", "*.pyc", "*/resume.pt", "*/.*"]  # caches, training state, hidden files
MODEL_IGNORE = ["resume.pt", "*/__pycache__/*", ".*"]


def selected_files(folder: Path, allow: Sequence[str] | None, ignore: Sequence[str]) -> list[str]:
    """The files under `folder` (POSIX paths relative to it) that upload_folder sends with these patterns: the
    same filter (huggingface_hub's filter_repo_objects) on the same listing."""
    files = sorted(p.relative_to(folder).as_posix() for p in folder.glob("**/*") if p.is_file())
    return list(filter_repo_objects(files, allow_patterns=list(allow) if allow else None, ignore_patterns=list(ignore)))


def space_files(root: Path = REPO_ROOT) -> list[str]:
    """What `push_space` uploads to a Space from the repository at `root`."""
    return selected_files(root, SPACE_ALLOW, SPACE_IGNORE)


def push_space(repo_id: str, root: Path = REPO_ROOT, private: bool = False, api: HfApi | None = None) -> str:
    """Create the Space (Gradio SDK) if needed and upload the selection; returns the commit URL."""
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="space", folder_path=root, allow_patterns=SPACE_ALLOW,
                               ignore_patterns=SPACE_IGNORE, commit_message="agekit: app, library and checkpoints")
    return str(commit.commit_url)


def push_model(repo_id: str, folder: Path, private: bool = False, api: HfApi | None = None) -> str:
    """Upload one checkpoint folder (weights, config.json, training log, eval/, the model card README.md) as a
    Hub model repository; returns the commit URL."""
    if not (folder / "README.md").is_file():
        raise ValueError(f"{folder} has no model card (README.md): run `python -m evaluation.run --models "
                         f"{folder.name}` first")
    api = api or HfApi()
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=folder, ignore_patterns=MODEL_IGNORE,
                               commit_message=f"agekit checkpoint {folder.name}")
    return str(commit.commit_url)


def describe(folder: Path, files: Sequence[str]) -> str:
    total = sum((folder / f).stat().st_size for f in files)
    return "\n".join([*files, f"{len(files)} files, {total / 2**20:.2f} MiB"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.push_space", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo_id", help="OWNER/NAME on the Hub")
    parser.add_argument("--model", help="upload checkpoints/MODEL as a model repository instead of the Space")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--dry-run", action="store_true", help="list what would be uploaded; send nothing")
    args = parser.parse_args(argv)
    folder = REPO_ROOT / "checkpoints" / args.model if args.model else REPO_ROOT
    if args.model and not (folder / "config.json").is_file():
        print(f"error: no checkpoint {args.model} under {REPO_ROOT / 'checkpoints'}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe(folder, selected_files(folder, None, MODEL_IGNORE) if args.model else space_files()))
        return 0
    try:
        url = push_model(args.repo_id, folder, args.private) if args.model else push_space(args.repo_id,
                                                                                          private=args.private)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
