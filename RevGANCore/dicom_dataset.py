"""Datasets from a DICOM tree: series grouped into domains by reconstruction kernel.

Every CT series under the folder becomes a volume file; the series of one study
(StudyInstanceUID) form one case, keyed by their ConvolutionKernel (0018,1210). Two
reconstructions of the same study with different kernels (e.g. B50f and B30f) are then a
pair for the "kernel" task: the source domain is the sharpest kernel found and the
target the smoothest, unless named. Kernel sharpness is read from the number in the
name (Siemens B30f = 30, B50f = 50); name the domains yourself for other vendors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional

from . import __version__
from .dicom import DicomSeriesInfo, find_series, kernel_sharpness, normalise_kernel, read_series
from .errors import ConfigError, VolumeError
from .file_labels import unique_file_labels
from .manifest import new_manifest, relative_path, write_manifest
from .volume_io import write_volume


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def write_dicom_dataset(dicom_dir, out_dir, source_kernel: Optional[str] = None,
                        target_kernel: Optional[str] = None, overwrite: bool = False,
                        progress: Optional[Callable[[str], None]] = None) -> dict:
    """Scan ``dicom_dir`` recursively, write each CT series as ``OUT/caseNNN/<kernel>.nii.gz``
    (int16 HU) and ``OUT/manifest.json``; returns a summary (manifest path, cases, domains,
    the kernel task if any, paired cases, skipped series with reasons)."""
    root = Path(dicom_dir)
    folder = Path(out_dir)
    if not root.is_dir():
        raise VolumeError(f"{root}: no such folder")
    if _inside(folder, root):
        raise ConfigError(f"{folder}: the output folder must not be inside the DICOM folder {root}")
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not overwrite)):
        raise ConfigError(f"{folder}: exists and is not an empty folder; choose a new folder (or allow overwriting)")
    say = progress or (lambda message: None)
    say(f"scanning {root}")
    found = find_series(root, recursive=True)
    if not found:
        raise VolumeError(f"{root}: no DICOM series found (an empty folder, or no DICOM files in it)")
    skipped: List[str] = []
    studies: Dict[str, Dict[str, DicomSeriesInfo]] = {}
    # Domain names become file names (OUT/caseNNN/<domain>.nii.gz): one safe label per kernel.
    labels = unique_file_labels(info.kernel for info in found)
    for info in found:
        if info.modality and info.modality != "CT":
            skipped.append(f"{info.folder} series {info.series_uid}: modality {info.modality}, not CT")
            continue
        domain = labels[info.kernel]
        study = studies.setdefault(info.study_uid or f"no-study-{info.series_uid}", {})
        kept = study.get(domain)
        if kept is None or (info.number_of_files, -(info.slice_thickness_mm or 0)) > (
                kept.number_of_files, -(kept.slice_thickness_mm or 0)):
            if kept is not None:
                skipped.append(f"{kept.folder} series {kept.series_uid}: another {domain} series of the same "
                               "study has more slices")
            study[domain] = info
        else:
            skipped.append(f"{info.folder} series {info.series_uid}: another {domain} series of the same study "
                           "has more slices")
    if not studies:
        raise VolumeError(f"{root}: holds no CT series ({len(skipped)} other series skipped)")
    domains = sorted({domain for study in studies.values() for domain in study})
    kernels = {label: kernel for kernel, label in labels.items()}
    task = _kernel_task(domains, labels, source_kernel, target_kernel, skipped)
    manifest = new_manifest(
        domains={domain: {"description": f"CT series reconstructed with kernel {kernels[domain]}",
                          "kernel": kernels[domain]} for domain in domains},
        tasks={"kernel": task} if task else {},
        created_by=f"RevGANCore {__version__} (revgan dataset)")
    manifest["source"] = {"dicom_dir": str(root.resolve())}
    ordered = sorted(studies.items(), key=lambda item: (next(iter(item[1].values())).patient_id, item[0]))
    written = 0
    paired = 0
    for study_uid, series in ordered:
        # Numbered by cases written, so that a study whose series all fail leaves no gap.
        case_id = f"case{len(manifest['cases']):03d}"
        files, details = {}, {}
        for domain, info in sorted(series.items()):
            say(f"{case_id}: reading {domain} series {info.series_uid} ({info.number_of_files} files)")
            try:
                volume = read_series(info)
            except VolumeError as error:
                skipped.append(f"{info.folder} series {info.series_uid}: {error}")
                continue
            path = write_volume(volume, folder / case_id / f"{domain}.nii.gz")
            if not Path(path).is_file():
                raise VolumeError(f"{path}: was not written; the manifest cannot list it")
            files[domain] = relative_path(path, folder)
            details[domain] = {"series_uid": info.series_uid, "folder": str(Path(info.folder).resolve()),
                               "number_of_files": info.number_of_files,
                               "slice_thickness_mm": info.slice_thickness_mm, "description": info.description,
                               "shape_zyx": list(volume.shape), "spacing_xyz_mm": list(volume.spacing)}
            written += 1
        if not files:
            continue
        if task and task["source"] in files and task["target"] in files:
            paired += 1
        manifest["cases"].append({"id": case_id, "files": files, "study_uid": study_uid,
                                  "patient_id": next(iter(series.values())).patient_id, "series": details})
    if not manifest["cases"]:
        raise VolumeError(f"{root}: no series could be read: " + "; ".join(skipped[:5]))
    manifest["skipped"] = skipped
    path = write_manifest(manifest, folder)
    return {"manifest": str(path), "cases": len(manifest["cases"]), "domains": domains, "task": task,
            "paired_cases": paired, "series_written": written, "skipped": skipped}


def _kernel_task(domains: List[str], labels: Dict[str, str], source: Optional[str], target: Optional[str],
                 notes: List[str]) -> Optional[dict]:
    """The kernel task's source and target domains: named (by kernel or by label), or the
    sharpest and the smoothest kernel found."""
    chosen: Dict[str, Optional[str]] = {}
    for name, value in (("source", source), ("target", target)):
        label = None if value is None else labels.get(normalise_kernel(value), value)
        if label is not None and label not in domains:
            raise ConfigError(f"--{name}-kernel {value!r} is not among the kernels found: {', '.join(domains)}")
        chosen[name] = label
    if chosen["source"] is not None and chosen["target"] is not None:
        if chosen["source"] == chosen["target"]:
            raise ConfigError("source and target kernels must differ")
        return {"source": chosen["source"], "target": chosen["target"]}
    if len(domains) < 2:
        return None
    ranked = sorted(domains, key=lambda k: (-kernel_sharpness(k), k))
    if source is None and target is None and kernel_sharpness(ranked[0]) == kernel_sharpness(ranked[-1]):
        notes.append(f"kernels {', '.join(domains)} have no sharpness number; name --source-kernel and "
                     "--target-kernel to define the kernel task")
        return None
    chosen_source = chosen["source"] or ranked[0]
    chosen_target = chosen["target"] or next(k for k in reversed(ranked) if k != chosen_source)
    return {"source": chosen_source, "target": chosen_target}
