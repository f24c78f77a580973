"""Datasets from a DICOM tree: series grouped into domains by reconstruction kernel.

Every usable CT series under the folder becomes a volume file in a domain named after its
ConvolutionKernel (0018,1210). Within one study (StudyInstanceUID), series of different
kernels that are one acquisition (:mod:`.dicom_pairing`: same frame of reference, or the
same grid) form one paired case; every other series becomes a case of its own, unpaired
data of its domain (listed per domain under the manifest's ``"unpaired"``; unpaired
training reads the cases holding either domain). The "kernel" task's source domain is
the sharpest kernel found and its target the smoothest, unless named. Kernel sharpness is
read from the number in the name (Siemens B30f = 30, B50f = 50); name the domains
yourself for other vendors. Non-CT series, series without a kernel and series RevGAN
wrote itself are skipped with a note.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from . import __version__
from .dicom import DicomSeriesInfo, find_series, kernel_sharpness, normalise_kernel, read_series
from .dicom_pairing import acquisition_groups, is_our_derived_series
from .errors import ConfigError, VolumeError
from .file_labels import unique_file_labels
from .manifest import new_manifest, relative_path, write_manifest
from .output_folder import FolderToFill
from .volume import Volume
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
    """Scan ``dicom_dir`` recursively, write each usable CT series as
    ``OUT/caseNNN/<kernel>.nii.gz`` (int16 HU) and ``OUT/manifest.json``; returns a summary:
    manifest path, cases, domains, the kernel task if any, paired cases, unpaired case ids
    per domain, ``found`` (one line per case saying why it is paired or not, and why there
    are no pairs at all) and skipped series with reasons."""
    root = Path(dicom_dir)
    folder = Path(out_dir)
    if not root.is_dir():
        raise VolumeError(f"{root}: no such folder")
    if _inside(folder, root):
        raise ConfigError(f"{folder}: the output folder must not be inside the DICOM folder {root}")
    # Checked before the scan, which may take long.
    target = FolderToFill(folder, ("manifest.json", "case[0-9][0-9][0-9]*"), may_hold_files=overwrite,
                          not_empty_hint="(or allow writing into it: --overwrite, overwrite=True in Python)")
    say = progress or (lambda message: None)
    say(f"scanning {root}")
    found = find_series(root, recursive=True)
    if not found:
        raise VolumeError(f"{root}: no DICOM series found in it or any folder below it (an empty folder, or no "
                          "DICOM files in it)")
    skipped: List[str] = []
    studies: Dict[str, Dict[str, DicomSeriesInfo]] = {}
    usable = [info for info in found if _usable(info, skipped)]
    # Domain names become file names (OUT/caseNNN/<domain>.nii.gz): one safe label per kernel.
    labels = unique_file_labels(info.kernel for info in usable)
    for info in usable:
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
        raise VolumeError(f"{root}: holds no usable CT series: " + "; ".join(skipped[:5]))
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
    found_lines: List[str] = []
    unpaired: Dict[str, List[str]] = {}
    written = 0
    paired = 0
    # A failure half-way (an unreadable file, a full disk, Ctrl-C) leaves no half-written dataset.
    with target:
        for study_uid, series in ordered:
            read: List[Tuple[str, DicomSeriesInfo, Volume]] = []
            for domain, info in sorted(series.items()):
                say(f"study {study_uid}: reading {domain} series {info.series_uid} ({info.number_of_files} files)")
                try:
                    read.append((domain, info, read_series(info)))
                except VolumeError as error:
                    skipped.append(f"{info.folder} series {info.series_uid}: {error}")
            for members, reason in acquisition_groups([(info, volume) for _, info, volume in read]):
                # Numbered by cases written, so that a study whose series all fail leaves no gap.
                case_id = f"case{len(manifest['cases']):03d}"
                files, details = {}, {}
                for domain, info, volume in (read[index] for index in members):
                    path = write_volume(volume, folder / case_id / f"{domain}.nii.gz")
                    if not Path(path).is_file():
                        raise VolumeError(f"{path}: was not written; the manifest cannot list it")
                    files[domain] = relative_path(path, folder)
                    details[domain] = {"series_uid": info.series_uid, "folder": str(Path(info.folder).resolve()),
                                       "number_of_files": info.number_of_files,
                                       "slice_thickness_mm": info.slice_thickness_mm, "description": info.description,
                                       "frame_of_reference_uid": info.frame_of_reference_uid,
                                       "shape_zyx": list(volume.shape), "spacing_xyz_mm": list(volume.spacing)}
                    written += 1
                if len(files) > 1:
                    if task and task["source"] in files and task["target"] in files:
                        paired += 1
                    found_lines.append(f"study {study_uid}: {' + '.join(files)} of one acquisition ({reason}): "
                                       f"paired {case_id}")
                else:
                    domain = next(iter(files))
                    unpaired.setdefault(domain, []).append(case_id)
                    found_lines.append(f"study {study_uid}: {_why_alone(domain, len(read))}: unpaired {domain} data "
                                       f"({case_id})")
                manifest["cases"].append({"id": case_id, "files": files, "study_uid": study_uid,
                                          "patient_id": next(iter(series.values())).patient_id, "series": details})
        if not manifest["cases"]:
            raise VolumeError(f"{root}: no series could be read: " + "; ".join(skipped[:5]))
        if not any(len(case["files"]) > 1 for case in manifest["cases"]):
            found_lines.append(_why_no_pairs(domains))
        manifest["unpaired"] = unpaired
        manifest["skipped"] = skipped
        path = write_manifest(manifest, folder)
    return {"manifest": str(path), "cases": len(manifest["cases"]), "domains": domains, "task": task,
            "paired_cases": paired, "unpaired": unpaired, "series_written": written, "found": found_lines,
            "skipped": skipped}


def _usable(info: DicomSeriesInfo, notes: List[str]) -> bool:
    """Whether a series can be a kernel domain's data; if not, a note says why."""
    where = f"{info.folder} series {info.series_uid}"
    if info.modality and info.modality != "CT":
        notes.append(f"{where}: modality {info.modality}, not CT")
    elif is_our_derived_series(info):
        notes.append(f"{where}: a derived series written by RevGAN ({info.description!r}), a result and not "
                     "a reconstruction kernel")
    elif info.kernel == "unknown":
        notes.append(f"{where}: no ConvolutionKernel (0018,1210), so no kernel domain to put it in")
    else:
        return True
    return False


def _why_alone(domain: str, series_in_study: int) -> str:
    if series_in_study == 1:
        return f"one series ({domain})"
    return (f"the {domain} series is not of the same acquisition as the study's other series (neither the same "
            "frame of reference nor the same geometry)")


def _why_no_pairs(domains: List[str]) -> str:
    if len(domains) == 1:
        return (f"no paired cases: every series has kernel {domains[0]}; a pair needs two kernels of one "
                "acquisition")
    return (f"no paired cases: no study holds two of the kernels {', '.join(domains)} from one acquisition "
            "(same frame of reference or same geometry)")


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
