"""Audit of a UTKFace folder: names, decodability, label ranges, duplicates, class balance.

`audit_folder(root)` reads every file once (2 threads), fully decodes it with PIL and records:

- malformed names (labels unknown) and names with a non-standard suffix (labels still parsed);
- unreadable or truncated images, with PIL's reason — reported and skipped, never a crash;
- labels outside age 0..116, gender {0,1}, race 0..4;
- byte-identical copies (sha256 of the file bytes) and which copy groups carry conflicting labels;
- near-duplicates: the same photograph re-encoded, resized, recoloured or watermarked. Two images are
  near-duplicates when their 64-bit pHash differ in at most `max_hash_distance` bits AND their 32x32
  luma thumbnails correlate at `min_correlation` or more. pHash alone is not enough on UTKFace: the
  faces are aligned, so different people already collide at 6 differing bits; the correlation check
  separates re-encodes (r >= 0.97) from look-alikes (r <= 0.94). See NearDuplicateRule;
- class counts per task and per UTK7 age bin.

Findings go to a CSV (one row per finding: file, kind, detail) and the numbers to a JSON summary.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from tqdm import tqdm

from agekit.data.image_hash import gray_thumbnail, near_pairs, phash_from_thumbnails
from agekit.data.utkface import (
    FaceRecord,
    LabelOutOfRange,
    MalformedName,
    has_standard_suffix,
    list_files,
    parse_filename,
)
from agekit.labels import ETHNICITY_NAMES, GENDER_NAMES, UTK7

EXPECTED_SIZE = (200, 200)  # UTKFace aligned & cropped faces, width x height in pixels
FINDINGS_CSV = "utkface_audit_findings.csv"
SUMMARY_JSON = "utkface_audit.json"
SWEEP_DISTANCES = (0, 2, 4, 6, 8, 10)  # pHash thresholds measured in the summary (pHash distances are even here)


@dataclass(frozen=True)
class NearDuplicateRule:
    """When two different files count as the same photograph.

    Defaults chosen on the real data (see the audit's near_duplicate_sweep and the notes): at <= 8 bits
    with r >= 0.96 the pairs inspected were re-encodes, crops, colour edits or watermarked copies of one
    photo; below r = 0.96 different people start to appear.
    """

    max_hash_distance: int = 8  # differing pHash bits (0..64)
    min_correlation: float = 0.96  # Pearson correlation of the 32x32 luma thumbnails (-1..1)


DEFAULT_RULE = NearDuplicateRule()


@dataclass(frozen=True)
class FileScan:
    """What reading one file produced. `error` is None when PIL fully decoded it."""

    file: str
    n_bytes: int
    sha256: str
    width: int = 0  # pixels; 0 when unreadable
    height: int = 0
    mode: str = ""
    error: str | None = None
    thumbnail: np.ndarray | None = field(default=None, repr=False)  # (32, 32) uint8 luma


@dataclass(frozen=True)
class NearPair:
    """Two files with different bytes that show the same photograph."""

    a: str
    b: str
    hash_distance: int  # differing pHash bits
    correlation: float  # thumbnail correlation


@dataclass(frozen=True)
class Finding:
    """One row of the findings CSV."""

    file: str
    kind: str
    detail: str


@dataclass
class AuditReport:
    """Everything the audit learned about a folder; `summary` is the JSON-ready digest."""

    root: Path
    files: list[str]
    records: dict[str, FaceRecord]  # files whose names parsed with labels in range
    name_errors: dict[str, MalformedName]
    scans: dict[str, FileScan]
    exact_groups: list[list[str]]  # byte-identical files, each group sorted, >= 2 files
    near_pairs: list[NearPair]  # between the first copies of different contents
    duplicate_groups: list[list[str]]  # connected over exact + near, each sorted, >= 2 files
    findings: list[Finding]
    summary: dict
    seconds: float = 0.0

    @property
    def unreadable(self) -> dict[str, str]:
        """file -> reason, for files PIL could not fully decode."""
        return {f: s.error for f, s in self.scans.items() if s.error is not None}


def _error_reason(exc: BaseException) -> str:
    if isinstance(exc, UnidentifiedImageError):
        return "not an image PIL can read (unknown or corrupt header)"
    return f"{type(exc).__name__}: {exc}"


def scan_file(path: Path) -> FileScan:
    """Hash and fully decode one file; decoding problems land in `error`, nothing is raised."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return FileScan(path.name, 0, "", error=f"cannot read file: {exc.strerror or exc}")
    digest = hashlib.sha256(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # full decode: truncated JPEGs raise here
            if image.format == "JPEG" and data.rfind(b"\xff\xd9") < 0:
                # caught even when some other module set ImageFile.LOAD_TRUNCATED_IMAGES = True
                return FileScan(path.name, len(data), digest, error="truncated JPEG: end-of-image marker missing")
            return FileScan(path.name, len(data), digest, image.width, image.height, image.mode, None,
                            gray_thumbnail(image))
    except Exception as exc:  # noqa: BLE001 — any decoder failure is a finding, not a crash
        return FileScan(path.name, len(data), digest, error=_error_reason(exc))


def scan_folder(root: Path, files: Sequence[str], workers: int = 2, progress: bool = True) -> list[FileScan]:
    """scan_file over `files` in `root` with a thread pool (PIL and hashlib release the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(scan_file, (root / f for f in files))
        return list(tqdm(results, total=len(files), desc="read+decode", unit="img", disable=not progress))


def connected_groups(files: Sequence[str], links: Iterable[Sequence[str]]) -> list[list[str]]:
    """Union-find: merge every collection in `links` (groups or pairs of file names) into components.

    Returns the components with at least 2 files, each sorted, ordered by their first file.
    Names in `links` that are not in `files` are ignored.
    """
    index = {f: i for i, f in enumerate(files)}
    rows: list[int] = []
    cols: list[int] = []
    for link in links:
        ids = [index[f] for f in link if f in index]
        rows.extend(ids[:-1])
        cols.extend(ids[1:])
    n = len(files)
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    members: dict[int, list[str]] = {}
    for f, label in zip(files, labels):
        members.setdefault(int(label), []).append(f)
    return sorted((sorted(m) for m in members.values() if len(m) > 1), key=lambda m: m[0])


def _label_values(group: Sequence[str], records: dict[str, FaceRecord]) -> dict[str, list[int]]:
    known = [records[f] for f in group if f in records]
    return {task: sorted({getattr(r, task) for r in known}) for task in ("age", "gender", "ethnicity")}


def conflicting_tasks(group: Sequence[str], records: dict[str, FaceRecord]) -> list[str]:
    """Tasks on which the files of `group` with known labels disagree (files without labels are ignored)."""
    return [task for task, values in _label_values(group, records).items() if len(values) > 1]


def label_conflict(group: Sequence[str], records: dict[str, FaceRecord]) -> str | None:
    """'age 24 vs 31; gender 0 vs 1' when files of `group` with known labels disagree, else None."""
    parts = [f"{task} " + " vs ".join(map(str, values))
             for task, values in _label_values(group, records).items() if len(values) > 1]
    return "; ".join(parts) or None


@dataclass(frozen=True)
class ConflictingCopies:
    """Two files showing one photograph whose names carry different labels."""

    a: str
    b: str
    kind: str  # "byte-identical" or "near-duplicate"
    conflict: str  # e.g. "age 24 vs 31; gender 0 vs 1"
    age_gap: int  # years between the two labelled ages (0 when only gender or ethnicity differ)


def conflicting_copies(report: AuditReport) -> list[ConflictingCopies]:
    """Every pair of copies with different labels: byte-identical ones (each group's first file against each
    other file) first, then near-duplicate pairs, each in file order. Files without labels are skipped."""
    candidates = [("byte-identical", g[0], other) for g in report.exact_groups for other in g[1:]]
    candidates += [("near-duplicate", p.a, p.b) for p in report.near_pairs]
    out = []
    for kind, a, b in candidates:
        conflict = label_conflict((a, b), report.records)
        if conflict:  # implies both files have labels
            gap = abs(report.records[a].age - report.records[b].age)
            out.append(ConflictingCopies(a, b, kind, conflict, gap))
    return out


def exact_duplicate_groups(scans: Sequence[FileScan]) -> list[list[str]]:
    """Files with identical bytes (sha256), >= 2 per group, each sorted, ordered by first file."""
    by_hash: dict[str, list[str]] = {}
    for scan in scans:
        if scan.sha256:
            by_hash.setdefault(scan.sha256, []).append(scan.file)
    return sorted((sorted(g) for g in by_hash.values() if len(g) > 1), key=lambda g: g[0])


@dataclass(frozen=True)
class NearCandidates:
    """Near-duplicate candidates among one representative file per distinct content."""

    files: list[str]
    pairs: np.ndarray  # (M, 2) indices into files
    hash_distance: np.ndarray  # (M,)
    correlation: np.ndarray  # (M,)


def near_duplicate_candidates(scans: Sequence[FileScan], max_hash_distance: int, chunk: int = 8192) -> NearCandidates:
    """pHash pairs within `max_hash_distance` bits plus their thumbnail correlation, one file per content."""
    seen: set[str] = set()
    unique = []
    for scan in sorted(scans, key=lambda s: s.file):
        if scan.thumbnail is not None and scan.sha256 not in seen:
            seen.add(scan.sha256)
            unique.append(scan)
    if len(unique) < 2:
        empty = np.zeros(0)
        return NearCandidates([s.file for s in unique], np.zeros((0, 2), dtype=np.int64), empty, empty)
    thumbs = np.stack([s.thumbnail for s in unique]).astype(np.float32)
    hashes = phash_from_thumbnails(thumbs)
    pairs = near_pairs(hashes, max_hash_distance)
    distance = np.bitwise_count(hashes[pairs[:, 0]] ^ hashes[pairs[:, 1]]).astype(np.int64)
    flat = thumbs.reshape(len(thumbs), -1)
    flat -= flat.mean(axis=1, keepdims=True)
    flat /= np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-6)  # flat images get r = 0
    corr = np.concatenate([
        np.einsum("ij,ij->i", flat[pairs[s:s + chunk, 0]], flat[pairs[s:s + chunk, 1]])
        for s in range(0, len(pairs), chunk)
    ]) if len(pairs) else np.zeros(0, dtype=np.float32)
    return NearCandidates([s.file for s in unique], pairs, distance, corr.astype(np.float64))


def select_near_pairs(cand: NearCandidates, rule: NearDuplicateRule) -> list[NearPair]:
    """The candidate pairs that `rule` calls near-duplicates (hash distance and thumbnail correlation)."""
    keep = cand.hash_distance <= rule.max_hash_distance
    keep &= cand.correlation >= rule.min_correlation
    return [NearPair(cand.files[i], cand.files[j], int(d), round(float(r), 4))
            for (i, j), d, r in zip(cand.pairs[keep], cand.hash_distance[keep], cand.correlation[keep])]


def near_duplicate_sweep(cand: NearCandidates, correlations: Sequence[float | None]) -> list[dict]:
    """How many near-duplicate groups (beyond byte-identical copies) each threshold setting finds."""
    rows = []
    for distance in SWEEP_DISTANCES:
        for min_corr in correlations:
            rule = NearDuplicateRule(distance, -2.0 if min_corr is None else min_corr)
            pairs = select_near_pairs(cand, rule)
            groups = connected_groups(cand.files, ((p.a, p.b) for p in pairs))
            rows.append({
                "max_hash_distance": distance, "min_correlation": min_corr, "pairs": len(pairs),
                "groups": len(groups), "distinct_images_in_groups": sum(len(g) for g in groups),
                "largest_group": max((len(g) for g in groups), default=0),
            })
    return rows


def _class_counts(records: Iterable[FaceRecord]) -> dict[str, dict[str, int]]:
    records = list(records)
    ages = Counter(r.age for r in records)
    bins = Counter(int(UTK7.bin_of(r.age)) for r in records)
    return {
        "age": {str(a): ages[a] for a in sorted(ages)},
        "age_bin_utk7": {name: bins[i] for i, name in enumerate(UTK7.names)},
        "gender": {name: sum(r.gender == i for r in records) for i, name in enumerate(GENDER_NAMES)},
        "ethnicity": {name: sum(r.ethnicity == i for r in records) for i, name in enumerate(ETHNICITY_NAMES)},
    }


def _findings(report: AuditReport) -> list[Finding]:
    out: list[Finding] = []
    for file, err in report.name_errors.items():
        kind = f"{err.field}_out_of_range" if isinstance(err, LabelOutOfRange) else "malformed_name"
        out.append(Finding(file, kind, str(err)))
    for file in report.files:
        if file not in report.name_errors and not has_standard_suffix(file):
            out.append(Finding(file, "nonstandard_name", "labels parsed, but the name does not end in .jpg.chip.jpg"))
        scan = report.scans[file]
        if scan.error is not None:
            out.append(Finding(file, "unreadable", scan.error))
        elif (scan.width, scan.height) != EXPECTED_SIZE or scan.mode != "RGB":
            out.append(Finding(file, "unexpected_format", f"{scan.width}x{scan.height} {scan.mode}, expected 200x200 RGB"))
    for number, group in enumerate(report.exact_groups):
        conflict = label_conflict(group, report.records)
        kind = "exact_duplicate_conflicting_labels" if conflict else "exact_duplicate"
        for file in group:
            others = ", ".join(f for f in group if f != file)
            detail = f"exact group {number} ({len(group)} files): same bytes as {others}"
            out.append(Finding(file, kind, detail + (f"; labels differ: {conflict}" if conflict else "")))
    partners: dict[str, list[str]] = {}
    for pair in report.near_pairs:
        partners.setdefault(pair.a, []).append(f"{pair.b} (pHash {pair.hash_distance} bits, r={pair.correlation:.3f})")
        partners.setdefault(pair.b, []).append(f"{pair.a} (pHash {pair.hash_distance} bits, r={pair.correlation:.3f})")
    for number, group in enumerate(report.duplicate_groups):
        near = [f for f in group if f in partners]
        if not near:
            continue
        conflict = label_conflict(group, report.records)
        kind = "near_duplicate_conflicting_labels" if conflict else "near_duplicate"
        for file in near:
            detail = f"duplicate group {number} ({len(group)} files): looks like " + ", ".join(partners[file])
            out.append(Finding(file, kind, detail + (f"; labels differ: {conflict}" if conflict else "")))
    return sorted(out, key=lambda f: (f.file, f.kind))


def _summary(report: AuditReport, rule: NearDuplicateRule, sweep: list[dict]) -> dict:
    kinds = Counter(f.kind for f in report.findings)
    malformed = sorted(f for f, e in report.name_errors.items() if not isinstance(e, LabelOutOfRange))
    out_of_range = Counter(e.field for e in report.name_errors.values() if isinstance(e, LabelOutOfRange))
    exact_conflicts = [g for g in report.exact_groups if label_conflict(g, report.records)]
    near_files = {p.a for p in report.near_pairs} | {p.b for p in report.near_pairs}
    near_groups = [g for g in report.duplicate_groups if near_files.intersection(g)]
    near_conflicts = [g for g in near_groups if label_conflict(g, report.records)]
    scans = report.scans.values()

    def conflict_fields(groups: list[list[str]]) -> dict[str, int]:
        per_group = [conflicting_tasks(g, report.records) for g in groups]
        return {t: sum(t in tasks for tasks in per_group) for t in ("age", "gender", "ethnicity")}

    return {
        "folder": report.root.name,
        "files_read": len(report.files),
        "images_decoded": sum(s.error is None for s in scans),
        "malformed_names": len(malformed),
        "malformed_files": malformed,
        "nonstandard_names": sorted(f.file for f in report.findings if f.kind == "nonstandard_name"),
        "unreadable_images": len(report.unreadable),
        "unreadable_files": dict(sorted(report.unreadable.items())),
        "labels_out_of_range": {t: out_of_range.get(t, 0) for t in ("age", "gender", "ethnicity")},
        "image_sizes": dict(Counter(f"{s.width}x{s.height}" for s in scans if s.error is None).most_common()),
        "image_modes": dict(Counter(s.mode for s in scans if s.error is None).most_common()),
        "total_bytes": sum(s.n_bytes for s in scans),
        "exact_duplicates": {
            "groups": len(report.exact_groups),
            "extra_copies": sum(len(g) - 1 for g in report.exact_groups),
            "group_sizes": {str(k): v for k, v in sorted(Counter(len(g) for g in report.exact_groups).items())},
            "groups_with_conflicting_labels": len(exact_conflicts),
            "conflicting_field_counts": conflict_fields(exact_conflicts),
        },
        "near_duplicates": {
            "rule": asdict(rule),
            "pairs": len(report.near_pairs),
            "groups_beyond_exact": len(near_groups),
            "images_in_those_groups": sum(len(g) for g in near_groups),
            "groups_with_conflicting_labels": len(near_conflicts),
            "conflicting_field_counts": conflict_fields(near_conflicts),
        },
        "duplicate_groups_total": len(report.duplicate_groups),
        "near_duplicate_sweep": sweep,
        "class_counts": _class_counts(report.records.values()),
        "findings_by_kind": dict(sorted(kinds.items())),
    }


def audit_folder(root: Path, rule: NearDuplicateRule = DEFAULT_RULE, workers: int = 2,
                 progress: bool = True, sweep: bool = True) -> AuditReport:
    """Audit every file directly inside `root` (a resolved UTKFace folder); never raises on bad files."""
    started = time.perf_counter()
    root = Path(root)
    files = list_files(root)
    records: dict[str, FaceRecord] = {}
    name_errors: dict[str, MalformedName] = {}
    for file in files:
        try:
            records[file] = parse_filename(file)
        except MalformedName as err:
            name_errors[file] = err
    scan_list = scan_folder(root, files, workers=workers, progress=progress)
    scans = {s.file: s for s in scan_list}
    exact = exact_duplicate_groups(scan_list)
    max_distance = max(max(SWEEP_DISTANCES) if sweep else 0, rule.max_hash_distance)
    candidates = near_duplicate_candidates(scan_list, max_distance)
    pairs = select_near_pairs(candidates, rule)
    groups = connected_groups(files, [*exact, *((p.a, p.b) for p in pairs)])
    report = AuditReport(root, files, records, name_errors, scans, exact, pairs, groups, [], {})
    report.findings = _findings(report)
    sweep_rows = near_duplicate_sweep(candidates, (None, rule.min_correlation)) if sweep else []
    report.summary = _summary(report, rule, sweep_rows)
    report.seconds = time.perf_counter() - started
    return report


def write_audit(report: AuditReport, out_dir: Path) -> tuple[Path, Path]:
    """Write the findings CSV (file, kind, detail) and the JSON summary into `out_dir`; returns both paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = out_dir / FINDINGS_CSV, out_dir / SUMMARY_JSON
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["file", "kind", "detail"])
        writer.writerows((f.file, f.kind, f.detail) for f in report.findings)
    json_path.write_text(json.dumps(report.summary, indent=1) + "\n", encoding="utf-8")
    return csv_path, json_path


def format_report(report: AuditReport) -> str:
    """Human-readable audit report (what the CLI prints)."""
    s = report.summary
    ex, near = s["exact_duplicates"], s["near_duplicates"]
    rule = near["rule"]
    lines = [
        f"UTKFace audit of {report.root} ({report.seconds:.1f} s)",
        f"  files read            {s['files_read']:>7,}   decoded: {s['images_decoded']:,}",
        f"  malformed names       {s['malformed_names']:>7,}   {', '.join(s['malformed_files'][:5])}",
        f"  non-standard names    {len(s['nonstandard_names']):>7,}   {', '.join(s['nonstandard_names'][:5])}",
        f"  unreadable images     {s['unreadable_images']:>7,}",
    ]
    lines += [f"      {f}: {why}" for f, why in list(s["unreadable_files"].items())[:10]]
    lines += [
        "  labels out of range   " + ", ".join(f"{k} {v}" for k, v in s["labels_out_of_range"].items()),
        "  image sizes           " + ", ".join(f"{k} x{v:,}" for k, v in s["image_sizes"].items()),
        (f"  exact duplicates      {ex['groups']:>7,} groups, {ex['extra_copies']:,} extra copies, "
         f"{ex['groups_with_conflicting_labels']:,} groups with conflicting labels {ex['conflicting_field_counts']}"),
        (f"  near duplicates       {near['groups_beyond_exact']:>7,} groups beyond the exact ones "
         f"({near['images_in_those_groups']:,} images, {near['pairs']:,} pairs; pHash <= {rule['max_hash_distance']} "
         f"bits and r >= {rule['min_correlation']}), {near['groups_with_conflicting_labels']:,} with conflicting labels"),
    ]
    if s["near_duplicate_sweep"]:
        lines.append("  near-duplicate sweep  (pHash bits, min r) -> groups / distinct images / largest group")
        lines += [f"      <= {row['max_hash_distance']:>2} bits, r >= {row['min_correlation'] or '-':<5}"
                  f" {row['groups']:>7,} / {row['distinct_images_in_groups']:,} / {row['largest_group']}"
                  for row in s["near_duplicate_sweep"]]
    counts = s["class_counts"]
    for task in ("gender", "ethnicity", "age_bin_utk7"):
        lines.append(f"  {task:<21} " + ", ".join(f"{k} {v:,}" for k, v in counts[task].items()))
    lines.append("  findings by kind      " + ", ".join(f"{k} {v:,}" for k, v in s["findings_by_kind"].items()))
    return "\n".join(lines)
