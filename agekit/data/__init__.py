"""UTKFace data layer: file-name labels, audit, grouped split manifest, compact packs, in-memory tensors.

Typical use::

    from agekit.data import load_manifest, load_pack, load_folder
    manifest = load_manifest()                                  # shipped split, manifest.hash -> ModelCard
    train = load_pack("packs/utkface_128.safetensors", "train", expected_manifest_hash=manifest.hash)
    test = load_folder("/path/to/UTKFace", manifest, "test", size=128)   # straight from the JPEGs
"""

from agekit.data.audit import (
    AuditReport,
    Finding,
    NearDuplicateRule,
    audit_folder,
    write_audit,
)
from agekit.data.dataset import FaceTensors, load_files, load_folder, load_pack
from agekit.data.leakage import LeakySplit, random_file_split, straddling_groups
from agekit.data.pack import PackError, read_pack, write_pack
from agekit.data.split import (
    DEFAULT_MANIFEST,
    SPLITS,
    ManifestError,
    SplitManifest,
    assign_splits,
    load_manifest,
    split_folder,
    write_manifest,
)
from agekit.data.utkface import (
    DataRootError,
    FaceRecord,
    LabelOutOfRange,
    MalformedName,
    parse_filename,
    read_face,
    resolve_data_root,
)

__all__ = [
    "DEFAULT_MANIFEST", "SPLITS", "AuditReport", "DataRootError", "FaceRecord", "FaceTensors", "Finding",
    "LabelOutOfRange", "LeakySplit", "MalformedName", "ManifestError", "NearDuplicateRule", "PackError",
    "SplitManifest", "assign_splits", "audit_folder", "load_files", "load_folder", "load_manifest", "load_pack",
    "parse_filename", "random_file_split", "read_face", "read_pack", "resolve_data_root", "split_folder",
    "straddling_groups", "write_audit", "write_manifest", "write_pack",
]
