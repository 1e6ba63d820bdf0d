"""Command line for the UTKFace data layer: audit, split, pack, inspect a pack, compare codecs.

    python -m agekit.data audit PATH [--out runs/audit]
    python -m agekit.data split PATH [--seed 0] [--val 0.1 --test 0.1] [--out agekit/data/manifests/utkface_split.csv]
    python -m agekit.data pack PATH [--manifest FILE] [--out packs/utkface_128.safetensors] [--size 128] [--quality 90]
                               [--splits train,val]   (default all three; e.g. a train+val pack to carry to a GPU)
    python -m agekit.data test-faces PATH      (rebuild the test-face pack shipped in agekit/data/test_faces/)
    python -m agekit.data info packs/utkface_128.safetensors [--decode]
    python -m agekit.data codecs PATH [--n 300] [--sizes 64,96,128]
    python -m agekit.data aaf-split AAF_PATH [--seed 0] [--out agekit/data/manifests/aaf_split.csv]
    python -m agekit.data aaf-pack AAF_PATH [--manifest FILE] [--out packs/aaf_128.safetensors] [--size 128]
                               (each photo through the app's face path: MTCNN, largest face, UTKFace framing)

PATH defaults to the AGEKIT_UTKFACE environment variable, AAF_PATH to AGEKIT_AAF. User errors print one line and exit with 2.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # aaf-pack runs MTCNN in threads; spinning OpenMP waits stall them

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from agekit.data.aaf import (
    DEFAULT_AAF_MANIFEST,
    IMAGES_DIR,
    AAFError,
    AlignedFaceReader,
    resolve_aaf_root,
    split_aaf,
)
from agekit.data.audit import (
    NearDuplicateRule,
    audit_folder,
    format_report,
    write_audit,
)
from agekit.data.dataset import load_pack
from agekit.data.pack import (
    CODECS,
    DEFAULT_CODEC,
    DEFAULT_QUALITY,
    SPLIT_CODES,
    PackError,
    measure_codecs,
    read_pack,
    write_pack,
)
from agekit.data.split import (
    DEFAULT_MANIFEST,
    SPLITS,
    ManifestError,
    describe_split,
    load_manifest,
    split_folder,
    write_manifest,
)
from agekit.data.test_faces import TEST_FACES_PACK, TEST_FACES_QUALITY, TEST_FACES_SIZE, checksum_path, write_test_faces
from agekit.data.utkface import ENV_VAR, DataRootError, resolve_data_root

PATH_HELP = f"UTKFace folder (the unpacked UTKFace.tar.gz); default: ${ENV_VAR}"


def _add_rule_options(parser: argparse.ArgumentParser) -> None:
    default = NearDuplicateRule()
    parser.add_argument("--max-hash-distance", type=int, default=default.max_hash_distance,
                        help="near-duplicates: at most this many differing pHash bits (default %(default)s)")
    parser.add_argument("--min-correlation", type=float, default=default.min_correlation,
                        help="near-duplicates: thumbnail correlation at least this (default %(default)s)")


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _codec_settings(text: str) -> list[tuple[str, int]]:
    settings = []
    for item in text.split(","):
        codec, _, quality = item.partition(":")
        if codec not in CODECS or not quality.isdigit():
            raise argparse.ArgumentTypeError(f"expected codec:quality pairs like webp:90,jpeg:95, got {item!r}")
        settings.append((codec, int(quality)))
    return settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m agekit.data", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    audit = commands.add_parser("audit", help="report malformed names, unreadable images, duplicates, class counts",
                                description="Read and fully decode every file; print a report and write "
                                            "utkface_audit_findings.csv (file, kind, detail) and utkface_audit.json.")
    audit.add_argument("path", nargs="?", help=PATH_HELP)
    audit.add_argument("--out", type=Path, default=Path("runs/audit"), help="folder for the CSV + JSON (default %(default)s)")
    audit.add_argument("--workers", type=int, default=2, help="decoding threads (default %(default)s)")
    audit.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_rule_options(audit)

    split = commands.add_parser("split", help="write the grouped, stratified train/val/test manifest",
                                description="Audit the folder, then split it: duplicate groups stay in one split, "
                                            "conflicting-label groups and malformed names are excluded.")
    split.add_argument("path", nargs="?", help=PATH_HELP)
    split.add_argument("--seed", type=int, default=0, help="shuffling seed (default %(default)s)")
    split.add_argument("--val", type=float, default=0.1, help="validation fraction (default %(default)s)")
    split.add_argument("--test", type=float, default=0.1, help="test fraction (default %(default)s)")
    split.add_argument("--out", type=Path, default=DEFAULT_MANIFEST, help="manifest CSV to write (default: the shipped one)")
    split.add_argument("--workers", type=int, default=2, help="decoding threads (default %(default)s)")
    split.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_rule_options(split)

    pack = commands.add_parser("pack", help="resize + encode the split images into one safetensors file",
                               description="Build a compact pack (encoded images + labels + split codes).")
    pack.add_argument("path", nargs="?", help=PATH_HELP)
    pack.add_argument("--manifest", type=Path, default=None, help="split manifest (default: the shipped one)")
    pack.add_argument("--out", type=Path, default=None, help="pack file (default packs/utkface_<size>.safetensors)")
    pack.add_argument("--size", type=int, default=128, help="image side in pixels (default %(default)s)")
    pack.add_argument("--codec", choices=sorted(CODECS), default=DEFAULT_CODEC, help="default %(default)s")
    pack.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="codec quality 1..100 (default %(default)s)")
    pack.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits to include (default %(default)s)")
    pack.add_argument("--workers", type=int, default=2, help="encoding threads (default %(default)s)")
    pack.add_argument("--quiet", action="store_true", help="no progress bar")

    test_faces = commands.add_parser("test-faces", help="rebuild the test-face pack shipped with the app",
                                     description="Pack the manifest's test split (WebP) and record its sha256 "
                                                 "beside it; the app's Error-analysis tab reads this pack.")
    test_faces.add_argument("path", nargs="?", help=PATH_HELP)
    test_faces.add_argument("--out", type=Path, default=TEST_FACES_PACK, help="pack file (default: the shipped one)")
    test_faces.add_argument("--size", type=int, default=TEST_FACES_SIZE, help="image side in pixels (default %(default)s)")
    test_faces.add_argument("--quality", type=int, default=TEST_FACES_QUALITY,
                            help="WebP quality 1..100 (default %(default)s)")
    test_faces.add_argument("--workers", type=int, default=2, help="encoding threads (default %(default)s)")
    test_faces.add_argument("--quiet", action="store_true", help="no progress bar")

    info = commands.add_parser("info", help="describe a pack file; --decode also times decoding it",
                               description="Print a pack's settings, size and images per split.")
    info.add_argument("pack", type=Path, help="pack file (.safetensors)")
    info.add_argument("--decode", action="store_true", help="decode every split and report the time")
    info.add_argument("--workers", type=int, default=2, help="decoding threads (default %(default)s)")

    codecs = commands.add_parser("codecs", help="measure bytes and PSNR of codec x quality x size on a sample",
                                 description="Encode a random sample of train images and report mean bytes, PSNR "
                                             "against the unencoded resize and decode time.")
    codecs.add_argument("path", nargs="?", help=PATH_HELP)
    codecs.add_argument("--manifest", type=Path, default=None, help="split manifest (default: the shipped one)")
    codecs.add_argument("--n", type=int, default=300, help="images in the sample (default %(default)s)")
    codecs.add_argument("--sizes", type=_int_list, default=[64, 96, 128], help="default 64,96,128")
    codecs.add_argument("--settings", type=_codec_settings,
                        default=[("jpeg", 85), ("jpeg", 95), ("webp", 80), ("webp", 90), ("webp", 95)],
                        help="codec:quality list (default jpeg:85,jpeg:95,webp:80,webp:90,webp:95)")
    codecs.add_argument("--seed", type=int, default=0, help="sampling seed (default %(default)s)")

    aaf_split = commands.add_parser("aaf-split", help="split All-Age-Faces into the grouped train/val/test manifest",
                                    description="Check labels.csv against the file names, find byte-identical and "
                                                "near-duplicate photos, and split in blocks of consecutive file "
                                                "numbers (agekit/data/aaf.py states the policy).")
    aaf_split.add_argument("path", nargs="?", help="All-Age-Faces folder (labels.csv + images/); default $AGEKIT_AAF")
    aaf_split.add_argument("--seed", type=int, default=0, help="shuffling seed (default %(default)s)")
    aaf_split.add_argument("--val", type=float, default=0.1, help="validation fraction (default %(default)s)")
    aaf_split.add_argument("--test", type=float, default=0.1, help="test fraction (default %(default)s)")
    aaf_split.add_argument("--out", type=Path, default=DEFAULT_AAF_MANIFEST, help="manifest CSV (default: the shipped one)")
    aaf_split.add_argument("--workers", type=int, default=2, help="decoding threads (default %(default)s)")
    aaf_split.add_argument("--quiet", action="store_true", help="no progress bar")

    aaf_pack = commands.add_parser("aaf-pack", help="pack All-Age-Faces faces as the app crops them",
                                   description="Detect and frame each photo's largest face with the app's own face "
                                               "path, then resize + encode like `pack`. Photos where the app finds "
                                               "no face are listed as skipped.")
    aaf_pack.add_argument("path", nargs="?", help="All-Age-Faces folder; default $AGEKIT_AAF")
    aaf_pack.add_argument("--manifest", type=Path, default=DEFAULT_AAF_MANIFEST, help="default: the shipped one")
    aaf_pack.add_argument("--out", type=Path, default=None, help="pack file (default packs/aaf_<size>.safetensors)")
    aaf_pack.add_argument("--size", type=int, default=128, help="image side in pixels (default %(default)s)")
    aaf_pack.add_argument("--quality", type=int, default=DEFAULT_QUALITY, help="WebP quality (default %(default)s)")
    aaf_pack.add_argument("--splits", default=",".join(SPLITS), help="comma-separated splits (default %(default)s)")
    aaf_pack.add_argument("--workers", type=int, default=2, help="detection threads (default %(default)s)")
    aaf_pack.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def write_split(frame: pd.DataFrame, out: Path) -> None:
    """Write a split manifest and print its table and hash (the split commands' output)."""
    digest = write_manifest(frame, out)
    print(describe_split(frame))
    print(f"wrote {out} ({len(frame):,} rows), sha256 {digest}")


def split_names(text: str) -> list[str]:
    """'train, val' → ['train', 'val'] (the --splits option)."""
    return [s.strip() for s in text.split(",") if s.strip()]


def run_audit(args: argparse.Namespace) -> None:
    root = resolve_data_root(args.path)
    rule = NearDuplicateRule(args.max_hash_distance, args.min_correlation)
    report = audit_folder(root, rule=rule, workers=args.workers, progress=not args.quiet)
    print(format_report(report))
    csv_path, json_path = write_audit(report, args.out)
    print(f"wrote {csv_path} ({len(report.findings):,} findings) and {json_path}")


def run_split(args: argparse.Namespace) -> None:
    root = resolve_data_root(args.path)
    rule = NearDuplicateRule(args.max_hash_distance, args.min_correlation)
    frame, _ = split_folder(root, seed=args.seed, val=args.val, test=args.test, rule=rule, workers=args.workers,
                            progress=not args.quiet)
    write_split(frame, args.out)


def run_pack(args: argparse.Namespace) -> None:
    root = resolve_data_root(args.path)
    manifest = load_manifest(args.manifest)
    out = args.out or Path(f"packs/utkface_{args.size}.safetensors")
    splits = split_names(args.splits)
    summary = write_pack(root, manifest, out, size=args.size, codec=args.codec, quality=args.quality,
                         splits=splits, workers=args.workers, progress=not args.quiet)
    print(f"wrote {summary.path}: {summary.images:,} images, {summary.file_bytes / 1e6:.1f} MB "
          f"({summary.file_bytes / max(summary.images, 1) / 1e3:.2f} kB/image), {summary.seconds:.1f} s; "
          f"manifest {manifest.hash[:12]}…")
    for file, reason in summary.skipped:
        print(f"  skipped {file}: {reason}")


def run_test_faces(args: argparse.Namespace) -> None:
    summary = write_test_faces(resolve_data_root(args.path), out=args.out, size=args.size, quality=args.quality,
                               workers=args.workers, progress=not args.quiet)
    print(f"wrote {summary.path}: {summary.images:,} test faces, {summary.file_bytes / 1e6:.2f} MB "
          f"({summary.file_bytes / max(summary.images, 1) / 1e3:.2f} kB/face), {summary.seconds:.1f} s; "
          f"sha256 in {checksum_path(summary.path).name}")
    for file, reason in summary.skipped:
        print(f"  skipped {file}: {reason}")


def run_info(args: argparse.Namespace) -> None:
    pack = read_pack(args.pack)
    counts = Counter(int(c) for c in pack.split)
    print(f"{pack.path}: {len(pack):,} images {pack.size}x{pack.size} {pack.codec} q{pack.quality}, "
          f"{pack.path.stat().st_size / 1e6:.1f} MB, mean {np.diff(pack.offsets).mean() if len(pack) else 0:.0f} B/image, "
          f"manifest {pack.manifest_hash}")
    print("  " + ", ".join(f"{name} {counts.get(code, 0):,}" for name, code in SPLIT_CODES.items())
          + f", skipped {len(pack.skipped)}")
    if args.decode:
        for split in SPLITS:
            started = time.perf_counter()
            faces = load_pack(args.pack, split, workers=args.workers)
            seconds = time.perf_counter() - started
            print(f"  decode {split:<5} {len(faces):>6,} images in {seconds:5.2f} s "
                  f"({seconds / max(len(faces), 1) * 1e3:.3f} ms/image, {args.workers} threads), "
                  f"{faces.images.numel() / 1e6:.0f} MB uint8")


def run_codecs(args: argparse.Namespace) -> None:
    root = resolve_data_root(args.path)
    train = load_manifest(args.manifest).files("train")
    rng = np.random.default_rng(args.seed)
    sample = sorted(rng.choice(train, size=min(args.n, len(train)), replace=False).tolist())
    table = measure_codecs(root, sample, sizes=args.sizes, settings=args.settings)
    table["pack_MB_per_10k"] = table["mean_bytes"] * 1e4 / 1e6
    print(f"{len(sample)} train images, PSNR against the unencoded Lanczos resize")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))


def run_aaf_split(args: argparse.Namespace) -> None:
    frame = split_aaf(resolve_aaf_root(args.path), seed=args.seed, val=args.val, test=args.test,
                      workers=args.workers, progress=not args.quiet)
    write_split(frame, args.out)


def run_aaf_pack(args: argparse.Namespace) -> None:
    root = resolve_aaf_root(args.path)
    manifest = load_manifest(args.manifest)
    out = args.out or Path(f"packs/aaf_{args.size}.safetensors")
    splits = split_names(args.splits)
    import torch

    torch.set_num_threads(1)  # one detector per worker thread, one torch thread each (as the app runs MTCNN)
    summary = write_pack(root / IMAGES_DIR, manifest, out, size=args.size, quality=args.quality, splits=splits,
                         workers=args.workers, progress=not args.quiet, reader=AlignedFaceReader())
    print(f"wrote {summary.path}: {summary.images:,} faces, {summary.file_bytes / 1e6:.1f} MB, {summary.seconds:.1f} s; "
          f"{len(summary.skipped)} photos without a face the app would find; manifest {manifest.hash[:12]}…")
    for file, reason in summary.skipped:
        print(f"  skipped {file}: {reason}")


COMMANDS = {"audit": run_audit, "split": run_split, "pack": run_pack, "test-faces": run_test_faces, "info": run_info,
            "codecs": run_codecs, "aaf-split": run_aaf_split, "aaf-pack": run_aaf_pack}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (AAFError, DataRootError, ManifestError, PackError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
