"""Which DICOM series of a study are a real pair for kernel conversion.

Two reconstructions are a training pair only when they are the same acquisition seen
through two kernels: voxel for voxel the same anatomy. Being in one study is not enough
(a study may hold a scan before and after contrast, or a repeat). Two series count as one
acquisition when they share a FrameOfReferenceUID (0020,0052), or, for files whose frame
of reference was dropped or renewed (anonymisers do this), when their volumes lie on the
same grid. A series this project wrote itself is a result, not a reconstruction: it is
recognised here so that it never becomes a new kernel domain.
"""

from __future__ import annotations

from typing import List, Sequence, Set, Tuple

from .dicom import DicomSeriesInfo
from .volume import Volume

#: Grids closer than this (mm, and direction cosines) are the same grid.
SAME_GRID_TOLERANCE = 1e-3

#: How this project marks a series it wrote (see :mod:`.dicom_writer`).
OUR_MANUFACTURER = "RevGAN for 3D Slicer"
OUR_SOFTWARE_PREFIX = "RevGANCore"


def is_our_derived_series(info: DicomSeriesInfo) -> bool:
    """True for a DERIVED series written by RevGANCore (a translated or super-resolved result)."""
    ours = info.manufacturer.strip() == OUR_MANUFACTURER or \
        info.software_versions.strip().startswith(OUR_SOFTWARE_PREFIX)
    return "DERIVED" in info.image_type and ours


def same_acquisition(first: Tuple[DicomSeriesInfo, Volume], second: Tuple[DicomSeriesInfo, Volume]) -> str:
    """Why two series are one acquisition ("same frame of reference", "same geometry"), or
    "" when they are not."""
    (first_info, first_volume), (second_info, second_volume) = first, second
    frame = first_info.frame_of_reference_uid
    if frame and frame == second_info.frame_of_reference_uid:
        return "same frame of reference"
    if first_volume.same_geometry(second_volume, tolerance=SAME_GRID_TOLERANCE):
        return "same geometry"
    return ""


def acquisition_groups(series: Sequence[Tuple[DicomSeriesInfo, Volume]]) -> List[Tuple[List[int], str]]:
    """The series of one study (one per kernel) split into acquisitions: lists of indices
    into ``series``, each with the reason its members belong together ("" for a series on
    its own); groups of several series first, then in input order."""
    groups: List[Tuple[List[int], Set[str]]] = []
    for index, item in enumerate(series):
        for members, reasons in groups:
            reason = same_acquisition(series[members[0]], item)
            if reason:
                members.append(index)
                reasons.add(reason)
                break
        else:
            groups.append(([index], set()))
    ordered = sorted(groups, key=lambda group: (-len(group[0]), group[0][0]))
    return [(members, " and ".join(sorted(reasons))) for members, reasons in ordered]
