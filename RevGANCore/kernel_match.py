"""Does a CT series' reconstruction kernel fit the domain a model translates from?

Domain names are free text (the shipped models say ``sharp`` and ``smooth``, ``revgan
dataset`` names domains after kernels such as ``B50f``) and kernel names are vendor
specific, so the judgement is deliberately modest. The series' kernel is placed in the
model's source or target domain only when one of these says so, in this order:

1. by name: the kernel label equals a domain name (ignoring case);
2. by number: both domain names carry different sharpness numbers, and so does the kernel
   (Siemens B30f = 30, B50f = 50; :func:`~RevGANCore.dicom.kernel_sharpness`): the nearer wins;
3. by class: the two domains are of different classes, sharp or smooth, and the kernel is
   of one of them. A class comes from words (``sharp``, ``bone``, ``lung``, ``edge``,
   ``detail``; ``smooth``, ``soft``, ``standard``) or, failing those, from the Siemens-style
   number (up to 40 smooth, from 45 sharp).

Otherwise nothing is said: super-resolution domains (``lr``, ``hr``) have no kernel.
"""

from __future__ import annotations

import re
from typing import Optional

from .dicom import kernel_sharpness

SHARP_WORDS = ("sharp", "bone", "lung", "edge", "detail")
SMOOTH_WORDS = ("smooth", "soft", "standard")
#: Siemens-style kernel numbers: B30f is smooth, B50f sharp; B41-B44 are left undecided.
SMOOTH_UP_TO = 40.0
SHARP_FROM = 45.0


def kernel_class(name: str) -> Optional[str]:
    """'sharp', 'smooth' or None for a kernel or domain name."""
    words = [word for word in re.split(r"[^a-z0-9]+", name.lower()) if word]
    if any(word.startswith(SHARP_WORDS) for word in words):
        return "sharp"
    if any(word.startswith(SMOOTH_WORDS) for word in words):
        return "smooth"
    number = kernel_sharpness(name)
    if number <= 0:
        return None
    if number <= SMOOTH_UP_TO:
        return "smooth"
    return "sharp" if number >= SHARP_FROM else None


def kernel_domain(kernel: str, source_domain: str, target_domain: str) -> Optional[str]:
    """'source' or 'target': the model domain a series of ``kernel`` belongs to, or None
    when that cannot be told (see the module documentation)."""
    if not kernel or kernel == "unknown":
        return None
    for side, domain in (("source", source_domain), ("target", target_domain)):
        if kernel.lower() == domain.lower():
            return side
    numbers = [kernel_sharpness(name) for name in (kernel, source_domain, target_domain)]
    if min(numbers) > 0 and numbers[1] != numbers[2] and abs(numbers[0] - numbers[1]) != abs(numbers[0] - numbers[2]):
        return "source" if abs(numbers[0] - numbers[1]) < abs(numbers[0] - numbers[2]) else "target"
    classes = [kernel_class(name) for name in (kernel, source_domain, target_domain)]
    if classes[0] is None or classes[1] == classes[2] or classes[0] not in classes[1:]:
        return None
    return "source" if classes[0] == classes[1] else "target"


def kernel_mismatch(kernel: str, source_domain: str, target_domain: str) -> Optional[str]:
    """A sentence naming both when a series of ``kernel`` looks like the model's target
    domain rather than its source domain; None when it fits or cannot be told."""
    if kernel_domain(kernel, source_domain, target_domain) != "target":
        return None
    return (f"the series' kernel {kernel} looks like the model's target domain {target_domain!r}, not its "
            f"source domain {source_domain!r}: the model would translate a {target_domain} image again")
