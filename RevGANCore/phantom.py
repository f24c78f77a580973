"""A seeded synthetic chest CT: the "object" (noise-free HU) that the degradations image.

The anatomy is laid out in an adult reference frame ("adult millimetres", LPS: x to the
patient's left, y posterior, z superior, origin mid-chest) and scaled isotropically so the
body fills about 85 % of the in-plane field of view. A small grid therefore shows a small
but complete chest rather than a crop, at the spacing the caller chose; the kernel and
resolution physics then act in real millimetres on that grid.

Tissues and values (HU, before imaging; "label" is the label map's value):

============================  ========  ======
tissue                        HU        label
============================  ========  ======
air outside the body          -1000     0  background
subcutaneous/mediastinal fat  -100      1  fat
skin, muscle, organs, walls   40 - 60   2  soft_tissue
lung parenchyma               -850 +/- texture  3  lung
airway lumen                  -1000     4  airway
bone (cortex / inner)         1100 / 500-600  5  bone
nodules (solid / ground glass) 30 / -550  6  nodule
blood (heart, vessels)        40        7  vessel
============================  ========  ======

What varies with the seed: body size and fat, heart size and position, diaphragm heights,
rib spacing, the branching of the airway and both vascular trees, the lung texture,
number, size, place and type of nodules, a gastric air bubble.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from .errors import ConfigError
from .phantom_shapes import Canvas, Capsules, grow_tree, rasterise_capsules
from .volume import Volume

TISSUE_LABELS: Dict[str, int] = {
    "background": 0, "fat": 1, "soft_tissue": 2, "lung": 3, "airway": 4, "bone": 5,
    "nodule": 6, "vessel": 7,
}

HU = {
    "air": -1000.0, "fat": -100.0, "skin": 40.0, "muscle": 50.0, "soft": 40.0, "liver": 60.0,
    "blood": 40.0, "lung": -850.0, "cartilage": 120.0, "disc": 90.0, "csf": 15.0,
    "cortex": 1100.0, "vertebra": 500.0, "rib": 600.0, "nodule": 30.0, "ground_glass": -550.0,
}

#: Default grid of ``generate_chest_phantom`` and of ``revgan phantom``.
DEFAULT_SHAPE: Tuple[int, int, int] = (64, 128, 128)
DEFAULT_SPACING: Tuple[float, float, float] = (0.8, 0.8, 1.25)

# Reference adult half-width and half-depth (mm) used to scale the anatomy to the grid.
_REFERENCE_HALF_WIDTH = 165.0
_REFERENCE_HALF_DEPTH = 120.0
_BODY_FILL = 0.85
# Lung texture: standard deviation (HU) and correlation length (in-plane voxels).
_LUNG_TEXTURE_STD = 25.0
_LUNG_TEXTURE_VOXELS = 1.2


@dataclass(frozen=True)
class Anatomy:
    """Per-seed anatomical parameters, adult millimetres."""

    body_half_width: float
    body_half_depth: float
    fat_thickness: float
    muscle_thickness: float
    heart_centre: Tuple[float, float, float]
    heart_axes: Tuple[float, float, float]
    heart_turn: float
    dome_right: float
    dome_left: float
    rib_pitch: float
    gastric_bubble: bool


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    dome_right = rng.uniform(-50, -30)
    return Anatomy(
        body_half_width=rng.uniform(150, 175), body_half_depth=rng.uniform(108, 122),
        fat_thickness=rng.uniform(6, 22), muscle_thickness=rng.uniform(9, 15),
        heart_centre=(rng.uniform(15, 28), rng.uniform(-42, -30), rng.uniform(-60, -45)),
        heart_axes=tuple(np.array([55.0, 44.0, 48.0]) * rng.uniform(0.9, 1.1)),  # type: ignore[arg-type]
        heart_turn=np.radians(rng.uniform(20, 40)), dome_right=dome_right,
        dome_left=dome_right - rng.uniform(8, 18), rib_pitch=rng.uniform(23, 27),
        gastric_bubble=bool(rng.random() < 0.7))


# =========================================================================== geometry


class _ChestGeometry:
    """Analytic signed distances (mm, negative inside) of the main organs; usable on
    broadcastable coordinate arrays or on (N, 3) point lists (for tree growth)."""

    spine_y = 48.0          # vertebral body centre (y)
    spine_radius = 20.0
    canal_offset = 32.0     # spinal canal centre behind the body centre
    trachea_y = 2.0
    carina_z = 35.0
    apex_z = 140.0
    taper_start_z = 15.0

    def __init__(self, anatomy: Anatomy) -> None:
        self.anatomy = anatomy
        a, b = anatomy.body_half_width, anatomy.body_half_depth
        wall = 1.5 + anatomy.fat_thickness + anatomy.muscle_thickness + 6.0
        self.cavity_a = a - wall
        self.cavity_b = b - wall * 0.8
        self.cavity_y = -0.5 * (b - b * 0.92)
        self.sternum_y = -b + 1.5 + anatomy.fat_thickness * 0.6 + 9.0

    def body(self, x, y):
        """Body outline: an ellipse, slightly flatter at the back."""
        a = self.anatomy.body_half_width
        b = np.where(y > 0, self.anatomy.body_half_depth * 0.92, self.anatomy.body_half_depth)
        return _ellipse_distance(x, y, a, b)

    def cavity_scale(self, z):
        """Thoracic cavity size relative to mid-chest: it narrows towards the apex."""
        rise = np.clip((z - self.taper_start_z) / (self.apex_z - self.taper_start_z), 0.0, 1.0)
        return np.sqrt(np.maximum(1.0 - rise ** 2, 0.0))

    def dome(self, x, y):
        """Height of the diaphragm under (x, y): two domes, lower at the sides and back."""
        top = np.where(x < 0, self.anatomy.dome_right, self.anatomy.dome_left)
        centre = np.where(x < 0, -50.0, 50.0)
        return top - 75.0 * (((x - centre) / 100.0) ** 2 + (np.maximum(y, -20) + 20) ** 2 / 130.0 ** 2)

    def lung(self, x, y, z):
        """Both lungs: the cavity above the diaphragm, outside the mediastinum and spine."""
        scale = self.cavity_scale(z)
        cavity = _ellipse_distance(x, y - self.cavity_y, self.cavity_a * scale + 1e-3,
                                   self.cavity_b * scale + 1e-3)
        mediastinum = 7.0 - np.abs(x)  # the anterior and posterior junction lines
        diaphragm = self.dome(x, y) - z
        spine = 38.0 - np.hypot(x / 1.1, (y - self.spine_y - 12.0) / 1.3)
        apex = z - self.apex_z
        return np.maximum(np.maximum(np.maximum(cavity, mediastinum), np.maximum(diaphragm, spine)), apex)

    def heart(self, x, y, z):
        cx, cy, cz = self.anatomy.heart_centre
        ax, ay, az = self.anatomy.heart_axes
        c, s = np.cos(self.anatomy.heart_turn), np.sin(self.anatomy.heart_turn)
        u = (x - cx) * c + (y - cy) * s
        v = -(x - cx) * s + (y - cy) * c
        return _ellipsoid_distance(u, v, z - cz, ax, ay, az)

    def lung_points(self, points: np.ndarray) -> np.ndarray:
        """Signed lung distance of (N, 3) points, heart excluded."""
        x, y, z = points[:, 0], points[:, 1], points[:, 2]
        return np.maximum(self.lung(x, y, z), -self.heart(x, y, z))


def _ellipse_distance(x, y, a, b):
    """Approximate signed distance to an ellipse: radial distance to its boundary."""
    q = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    r = np.sqrt(x * x + y * y)
    return np.where(q > 1e-6, r * (1.0 - 1.0 / np.maximum(q, 1e-6)), -np.minimum(a, b))


def _ellipsoid_distance(x, y, z, a, b, c):
    q = np.sqrt((x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2)
    r = np.sqrt(x * x + y * y + z * z)
    return np.where(q > 1e-6, r * (1.0 - 1.0 / np.maximum(q, 1e-6)), -min(a, b, c))


# =========================================================================== the phantom


def phantom_scale(shape, spacing) -> float:
    """Physical mm per adult mm: the body fills ~85 % of the in-plane field of view."""
    width = shape[2] * spacing[0]
    depth = shape[1] * spacing[1]
    return float(min(_BODY_FILL * width / (2 * _REFERENCE_HALF_WIDTH),
                     _BODY_FILL * depth / (2 * _REFERENCE_HALF_DEPTH)))


def _checked_grid(shape, spacing) -> Tuple[Tuple[int, int, int], Tuple[float, float, float]]:
    try:
        shape_t = tuple(int(n) for n in shape)
        spacing_t = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise ConfigError(f"phantom shape and spacing must be numbers, got {shape!r} and {spacing!r}") from None
    if len(shape_t) != 3 or min(shape_t) < 8:
        raise ConfigError(f"phantom shape (z, y, x) needs 3 sizes of at least 8 voxels, got {shape!r}")
    if len(spacing_t) != 3 or not all(np.isfinite(spacing_t)) or min(spacing_t) <= 0:
        raise ConfigError(f"phantom spacing (x, y, z) needs 3 positive numbers, got {spacing!r}")
    return shape_t, spacing_t  # type: ignore[return-value]


def generate_chest_phantom(shape=DEFAULT_SHAPE, spacing=DEFAULT_SPACING, seed: int = 0,
                           with_labels: bool = False):
    """A noise-free chest CT in HU (float32 Volume, identity direction, centred on the
    origin) on a ``shape`` (z, y, x) grid with ``spacing`` (x, y, z) mm.

    The same arguments always give the same voxels. With ``with_labels`` returns
    ``(volume, labels)`` where ``labels`` is a uint8 Volume of :data:`TISSUE_LABELS`."""
    shape, spacing = _checked_grid(shape, spacing)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7068616E]))
    anatomy = sample_anatomy(rng)
    scale = phantom_scale(shape, spacing)
    voxel_adult = (spacing[2] / scale, spacing[1] / scale, spacing[0] / scale)  # (z, y, x)
    first = tuple(-(n - 1) / 2 * h for n, h in zip(shape, voxel_adult))
    canvas = Canvas(shape, voxel_adult, first, HU["air"])
    geometry = _ChestGeometry(anatomy)
    _paint_body(canvas, geometry)
    _paint_thorax(canvas, geometry, rng)
    _paint_lung_contents(canvas, geometry, rng)
    _paint_skeleton(canvas, geometry)
    origin = tuple(-(n - 1) / 2 * s for n, s in zip(shape[::-1], spacing))
    volume = Volume(canvas.hu, spacing, origin, source=f"chest phantom (seed {seed})")
    if not with_labels:
        return volume
    return volume, volume.with_array(canvas.labels, source=f"chest phantom labels (seed {seed})")


def _paint_body(canvas: Canvas, geometry: _ChestGeometry) -> None:
    """Skin, subcutaneous fat and chest-wall muscle: the same in every slice."""
    anatomy = geometry.anatomy
    x = canvas.x[None, :]
    y = canvas.y[:, None]
    outline = geometry.body(x, y)
    depth = -outline
    angle = np.arctan2(y, x)
    # Fat is thicker at the sides and front than over the spine.
    fat = anatomy.fat_thickness * (1.0 + 0.35 * np.cos(2 * angle) - 0.3 * np.sin(angle))
    muscle = anatomy.muscle_thickness * (1.0 + 0.8 * np.clip(np.sin(angle), 0, None))  # back muscles
    # Paint one slice, then copy it to all.
    layer = Canvas((1,) + outline.shape, canvas.voxel, canvas.first, HU["air"])
    layer.paint(layer.coverage(outline)[None], HU["skin"], TISSUE_LABELS["soft_tissue"])
    layer.paint(layer.coverage(1.5 - depth)[None], HU["fat"], TISSUE_LABELS["fat"])
    layer.paint(layer.coverage(1.5 + fat - depth)[None], HU["muscle"], TISSUE_LABELS["soft_tissue"])
    canvas.hu[:] = layer.hu
    canvas.labels[:] = layer.labels
    # Inside the chest wall muscles: intercostal muscle / soft tissue around the cavity.
    inner = 1.5 + fat + muscle - depth
    canvas.paint(np.broadcast_to(canvas.coverage(inner), canvas.shape), HU["soft"], TISSUE_LABELS["soft_tissue"])


def _paint_thorax(canvas: Canvas, geometry: _ChestGeometry, rng: np.random.Generator) -> None:
    """Mediastinal fat, abdomen below the diaphragm, the lungs, heart and great vessels."""
    anatomy = geometry.anatomy
    z = canvas.z[:, None, None]
    y = canvas.y[None, :, None]
    x = canvas.x[None, None, :]
    scale = geometry.cavity_scale(z)
    cavity = _ellipse_distance(x, y - geometry.cavity_y, geometry.cavity_a * scale + 1e-3,
                               geometry.cavity_b * scale + 1e-3).astype(np.float32)
    canvas.paint(canvas.coverage(cavity), HU["fat"], TISSUE_LABELS["fat"])
    # Abdomen: liver on the right, spleen/stomach on the left, under the domes.
    below = (z - geometry.dome(x, y)).astype(np.float32)
    abdomen = np.maximum(cavity - 8.0, below)
    organ_hu = np.where(x < 10.0, HU["liver"], HU["soft"] + 5.0).astype(np.float32)
    canvas.paint(canvas.coverage(abdomen), organ_hu, TISSUE_LABELS["soft_tissue"])
    if anatomy.gastric_bubble:
        bubble = _ellipsoid_distance(x - 62.0, y + 5.0, z - (anatomy.dome_left - 28.0), 28.0, 22.0, 14.0)
        bubble = np.maximum(bubble, -below - 6.0).astype(np.float32)  # stays under the diaphragm
        canvas.paint(canvas.coverage(bubble), HU["air"], TISSUE_LABELS["airway"])
    # Lungs with parenchymal texture; the great vessels carve their own space.
    lung = geometry.lung(x, y, z).astype(np.float32)
    lung = np.maximum(lung, -geometry.heart(x, y, z).astype(np.float32) + 3.0)
    vessels = _great_vessels(geometry)
    esophagus = Capsules.polyline([(6.0, 20.0, 160.0), (8.0, 22.0, 0.0), (14.0, 5.0, geometry.anatomy.dome_left - 10)],
                                  [8.0, 8.0, 8.0])
    trachea = Capsules.polyline([(0.0, geometry.trachea_y - 6.0, 200.0), (0.0, geometry.trachea_y, geometry.carina_z)],
                                [11.0, 10.5])
    # The mediastinum is what surrounds its organs: fat within a few mm of them.
    keep_out = rasterise_capsules(canvas, vessels + esophagus + trachea, mode="distance", margin=8.0)
    lung = np.maximum(lung, 6.0 - keep_out)
    texture = _lung_texture(canvas.shape, rng)
    canvas.paint(canvas.coverage(lung), HU["lung"] + texture, TISSUE_LABELS["lung"])
    # Heart (blood and myocardium alike without contrast), then the great vessels.
    heart = geometry.heart(x, y, z).astype(np.float32)
    canvas.paint(canvas.coverage(heart), HU["blood"], TISSUE_LABELS["vessel"])
    canvas.paint(rasterise_capsules(canvas, vessels.visible_at(canvas.edge)), HU["blood"],
                 TISSUE_LABELS["vessel"])
    canvas.paint(rasterise_capsules(canvas, esophagus), HU["soft"], TISSUE_LABELS["soft_tissue"])


def _great_vessels(geometry: _ChestGeometry) -> Capsules:
    """Aorta (ascending, arch, descending), superior vena cava, pulmonary trunk and arteries."""
    hx, hy, hz = geometry.anatomy.heart_centre
    top_of_heart = hz + geometry.anatomy.heart_axes[2] * 0.7
    arch_z = 72.0
    angles = np.linspace(0, np.pi, 9)
    arch = np.stack([-6.0 + 36.0 * (1 - np.cos(angles)) / 2, -28.0 + 55.0 * (1 - np.cos(angles)) / 2,
                     arch_z + 14.0 * np.sin(angles)], axis=1)
    aorta = Capsules.polyline(np.concatenate([[(-6.0, -35.0, top_of_heart)], arch,
                                              [(30.0, 28.0, -60.0), (22.0, 30.0, -200.0)]]),
                              [14.0] * 6 + [12.0] * 6)
    svc = Capsules.polyline([(-32.0, -12.0, 170.0), (-30.0, -15.0, 40.0), (-26.0, -20.0, hz + 15.0)], [9.0, 9.0, 10.0])
    trunk = Capsules.polyline([(hx - 5.0, hy - 20.0, top_of_heart - 10.0), (8.0, -22.0, 28.0)], [13.0, 12.0])
    arteries = Capsules.polyline([(8.0, -22.0, 28.0), (-20.0, -5.0, 30.0), (-42.0, 4.0, 26.0)], [10.0, 10.0, 9.0])
    arteries = arteries + Capsules.polyline([(8.0, -22.0, 28.0), (28.0, 2.0, 36.0), (44.0, 10.0, 32.0)],
                                            [10.0, 9.5, 9.0])
    ivc = Capsules.polyline([(-20.0, 0.0, hz - 20.0), (-22.0, 8.0, -200.0)], [12.0, 12.0])
    return aorta + svc + trunk + arteries + ivc


def _lung_texture(shape: Tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Correlated noise (HU) for the parenchyma: Gaussian-filtered white noise made on a
    half-resolution grid (a quarter of the work) and interpolated up."""
    import torch

    coarse = tuple(max(2, (n + 1) // 2) for n in shape)
    white = rng.standard_normal(coarse).astype(np.float32)
    spectrum = np.fft.rfftn(white)
    sigma = _LUNG_TEXTURE_VOXELS / 2.0  # in coarse voxels
    frequencies = np.meshgrid(*(np.fft.fftfreq(n) for n in coarse[:2]), np.fft.rfftfreq(coarse[2]),
                              indexing="ij", sparse=True)
    gain = np.exp(-2 * np.pi ** 2 * sigma ** 2 * sum(f ** 2 for f in frequencies))
    smooth = np.fft.irfftn(spectrum * gain, s=coarse, axes=(0, 1, 2)).astype(np.float32)
    smooth *= _LUNG_TEXTURE_STD / max(float(smooth.std()), 1e-6)
    with torch.no_grad():
        fine = torch.nn.functional.interpolate(torch.from_numpy(smooth)[None, None], size=shape,
                                               mode="trilinear", align_corners=False)
    return fine[0, 0].numpy()


def _paint_lung_contents(canvas: Canvas, geometry: _ChestGeometry, rng: np.random.Generator) -> None:
    """Trachea and bronchial tree, pulmonary arteries alongside, veins, nodules."""
    edge = canvas.edge
    min_radius = max(0.7, 0.45 * edge)

    def inside_lung(points):
        return geometry.lung_points(points) < -1.0

    # Points spread through the lungs (inside the grid) steer the trees so they fill them.
    lows = np.array([canvas.x[0], canvas.y[0], canvas.z[0]])
    highs = np.array([canvas.x[-1], canvas.y[-1], canvas.z[-1]])
    samples = lows + (highs - lows) * rng.random((6000, 3))
    targets = samples[geometry.lung_points(samples) < -3.0]

    carina = np.array([0.0, geometry.trachea_y, geometry.carina_z])
    trachea = Capsules.polyline([(0.0, geometry.trachea_y - 6.0, 200.0), carina], [9.0, 8.5])
    main = np.array([[-1.0, 0.25, -0.55], [1.0, 0.3, -0.85]])
    main /= np.linalg.norm(main, axis=1, keepdims=True)
    bronchi = Capsules.polyline([carina, carina + main[0] * 28.0], [6.5, 6.0]) + Capsules.polyline(
        [carina, carina + main[1] * 45.0], [6.0, 5.5])
    lobar_roots = np.stack([carina + main[0] * 28.0, carina + main[1] * 45.0])
    airway_tree = grow_tree(rng, lobar_roots, main, np.array([5.5, 5.0]), inside_lung,
                            min_radius * 1.6, length_per_radius=5.0, targets=targets)
    # Pulmonary arteries run beside the bronchi (bronchovascular bundles).
    side = rng.normal(size=(len(airway_tree), 3))
    side -= ((side * (airway_tree.ends - airway_tree.starts)).sum(1, keepdims=True)
             / np.maximum(((airway_tree.ends - airway_tree.starts) ** 2).sum(1, keepdims=True), 1e-9)
             * (airway_tree.ends - airway_tree.starts))
    side /= np.maximum(np.linalg.norm(side, axis=1, keepdims=True), 1e-9)
    shift = side * (airway_tree.start_radii[:, None] * 2.2)
    arteries = Capsules(airway_tree.starts + shift, airway_tree.ends + shift, airway_tree.start_radii * 1.05,
                        airway_tree.end_radii * 1.05, np.ones(len(airway_tree)))
    # Distal arteries continue past the smallest drawn airways.
    distal = grow_tree(rng, arteries.ends[arteries.end_radii < min_radius * 2.2],
                       (arteries.ends - arteries.starts)[arteries.end_radii < min_radius * 2.2],
                       arteries.end_radii[arteries.end_radii < min_radius * 2.2], inside_lung, min_radius,
                       length_per_radius=6.0, max_generations=4, targets=targets)
    # Superior and inferior pulmonary veins of each lung, draining to the left atrium.
    veins = grow_tree(rng, np.array([[-36.0, 6.0, 12.0], [-36.0, 16.0, -8.0], [36.0, 10.0, 14.0], [36.0, 18.0, -6.0]]),
                      np.array([[-1.0, -0.3, 0.6], [-1.0, 0.3, -0.5], [1.0, -0.3, 0.6], [1.0, 0.3, -0.5]]),
                      np.full(4, 5.5), inside_lung, min_radius, length_per_radius=5.0, targets=targets)
    vessel_field = rasterise_capsules(canvas, (arteries + distal + veins).visible_at(edge))
    canvas.paint(vessel_field, HU["blood"], TISSUE_LABELS["vessel"])
    airways = trachea + bronchi + airway_tree
    wall = rasterise_capsules(canvas, airways.offset(1.0 + 0.08 * 6).visible_at(edge))
    canvas.paint(wall, HU["soft"], TISSUE_LABELS["soft_tissue"])
    lumen = rasterise_capsules(canvas, airways.visible_at(edge))
    canvas.paint(lumen, HU["air"], TISSUE_LABELS["airway"])
    _paint_nodules(canvas, geometry, rng)


def _paint_nodules(canvas: Canvas, geometry: _ChestGeometry, rng: np.random.Generator) -> None:
    count = int(rng.integers(1, 5))
    # Candidates spread over the lungs (inside the grid): keep those deep inside a lung.
    lows = np.array([canvas.x[0], canvas.y[0], canvas.z[0]])
    highs = np.array([canvas.x[-1], canvas.y[-1], canvas.z[-1]])
    candidates = lows + (highs - lows) * rng.random((4000, 3))
    depth = -geometry.lung_points(candidates)
    for _ in range(count):
        radius = max(rng.uniform(3.0, 10.0), 1.6 * canvas.edge)
        usable = np.flatnonzero(depth > radius + 4.0)
        if usable.size == 0:
            return
        centre = candidates[rng.choice(usable)]
        solid = bool(rng.random() < 0.75)
        lobes = rng.normal(size=(3, 3))
        lobes /= np.linalg.norm(lobes, axis=1, keepdims=True)
        reach = int(np.ceil((radius * 1.4 + canvas.edge) / canvas.voxel.min()))
        centre_index = np.round((centre[::-1] - canvas.first) / canvas.voxel).astype(int)
        region = tuple(slice(max(0, c - reach), min(n, c + reach + 1)) for c, n in zip(centre_index, canvas.shape))
        z = canvas.z[region[0]][:, None, None] - centre[2]
        y = canvas.y[region[1]][None, :, None] - centre[1]
        x = canvas.x[region[2]][None, None, :] - centre[0]
        r = np.sqrt(x * x + y * y + z * z) + 1e-6
        # A lobulated surface: the radius varies smoothly with direction.
        bumps = sum(np.abs((x * v[0] + y * v[1] + z * v[2]) / r) for v in lobes) / 3.0
        surface = radius * (0.85 + 0.3 * bumps)
        value = HU["nodule"] if solid else HU["ground_glass"]
        canvas.paint(canvas.coverage((r - surface).astype(np.float32)), value, TISSUE_LABELS["nodule"], region)


def _paint_skeleton(canvas: Canvas, geometry: _ChestGeometry) -> None:
    """Vertebrae with discs and posterior arches, ribs with costal cartilage, sternum."""
    anatomy = geometry.anatomy
    z = canvas.z[:, None, None]
    y = canvas.y[None, :, None]
    x = canvas.x[None, None, :]
    # Vertebral bodies (cortex over cancellous bone) separated by discs every rib pitch.
    body_plane = (np.hypot(x, (y - geometry.spine_y) * 1.1) - geometry.spine_radius).astype(np.float32)
    phase = np.mod(z - 2.0, anatomy.rib_pitch)
    disc = np.minimum(phase, anatomy.rib_pitch - phase) < 2.5
    bone_or_disc_hu = np.where(disc, HU["disc"], HU["cortex"]).astype(np.float32)
    inner_hu = np.where(disc, HU["disc"], HU["vertebra"]).astype(np.float32)
    canvas.paint(np.broadcast_to(canvas.coverage(body_plane), canvas.shape), bone_or_disc_hu,
                 TISSUE_LABELS["bone"])
    canvas.paint(np.broadcast_to(canvas.coverage(body_plane + 2.0), canvas.shape), inner_hu,
                 TISSUE_LABELS["bone"])
    canvas.labels[np.broadcast_to(disc & (body_plane < 0), canvas.shape)] = TISSUE_LABELS["soft_tissue"]
    # Posterior arch around the spinal canal, and spinous processes.
    canal_y = geometry.spine_y + geometry.canal_offset
    ring = np.hypot(x, (y - canal_y) * 1.15)
    arch = np.maximum(ring - 15.0, 8.5 - ring).astype(np.float32)
    canvas.paint(np.broadcast_to(canvas.coverage(arch), canvas.shape), HU["cortex"] * 0.8, TISSUE_LABELS["bone"])
    canal = (ring - 8.5).astype(np.float32)
    canvas.paint(np.broadcast_to(canvas.coverage(canal), canvas.shape), HU["csf"], TISSUE_LABELS["soft_tissue"])
    levels = np.arange(-220.0, 221.0, anatomy.rib_pitch)
    spinous = Capsules(np.stack([np.zeros_like(levels), np.full_like(levels, canal_y + 12.0), levels], 1),
                       np.stack([np.zeros_like(levels), np.full_like(levels, canal_y + 34.0), levels - 14.0], 1),
                       np.full(levels.shape, 5.0), np.full(levels.shape, 3.5), np.ones(levels.shape))
    transverse = Capsules.empty()
    for side in (-1.0, 1.0):
        transverse = transverse + Capsules(
            np.stack([np.full_like(levels, side * 8.0), np.full_like(levels, canal_y), levels], 1),
            np.stack([np.full_like(levels, side * 34.0), np.full_like(levels, canal_y - 4.0), levels + 2.0], 1),
            np.full(levels.shape, 5.0), np.full(levels.shape, 4.0), np.ones(levels.shape))
    ribs, cartilage = _ribs(geometry, canvas)
    canvas.paint(rasterise_capsules(canvas, cartilage.visible_at(canvas.edge)), HU["cartilage"],
                 TISSUE_LABELS["soft_tissue"])
    bones = (spinous + transverse + ribs).visible_at(canvas.edge)
    canvas.paint(rasterise_capsules(canvas, bones), HU["cortex"], TISSUE_LABELS["bone"])
    marrow = ribs.offset(-2.0)
    marrow = Capsules(marrow.starts, marrow.ends, np.maximum(marrow.start_radii, 0.1),
                      np.maximum(marrow.end_radii, 0.1), marrow.contrast)
    canvas.paint(rasterise_capsules(canvas, marrow), HU["rib"], TISSUE_LABELS["bone"])
    # Sternum: a flat bone in front of the heart, from the manubrium to the xiphoid.
    width = np.where(z > 55.0, 26.0, 16.0)
    sternum = _ellipse_distance(x, y - geometry.sternum_y, width, 7.0)
    sternum = np.maximum(sternum, np.maximum(z - 85.0, -110.0 - z)).astype(np.float32)
    canvas.paint(canvas.coverage(sternum), HU["cortex"] * 0.8, TISSUE_LABELS["bone"])
    canvas.paint(canvas.coverage(sternum + 2.5), HU["vertebra"], TISSUE_LABELS["bone"])


def _ribs(geometry: _ChestGeometry, canvas: Canvas) -> Tuple[Capsules, Capsules]:
    """Twelve rib pairs hugging the cavity, sloping down towards the front; the upper
    seven reach the sternum through costal cartilage."""
    anatomy = geometry.anatomy
    ribs = Capsules.empty()
    cartilage = Capsules.empty()
    top = geometry.apex_z - 12.0
    for number in range(12):
        z_back = top - number * anatomy.rib_pitch
        reach = np.radians(150.0 if number < 7 else 150.0 - 18.0 * (number - 6))
        drop = 70.0 + 3.0 * number
        u = np.linspace(0.0, 1.0, 14)
        angle = np.radians(28.0) + (reach - np.radians(28.0)) * u
        z_path = z_back - drop * u ** 1.3
        scale = geometry.cavity_scale(z_path)
        for side in (-1.0, 1.0):
            x_path = side * (geometry.cavity_a * scale + 5.0) * np.sin(angle)
            y_path = geometry.cavity_y + (geometry.cavity_b * scale + 5.0) * np.cos(angle)
            points = np.stack([x_path, y_path, z_path], axis=1)
            points[0] = (side * 22.0, geometry.spine_y + 14.0, z_back + 4.0)  # rib head at the spine
            ribs = ribs + Capsules.polyline(points, 5.0)
            if number < 7:
                end = points[-1]
                joint = (side * 20.0, geometry.sternum_y, min(z_path[-1] - 4.0, 80.0 - 10 * number))
                cartilage = cartilage + Capsules.polyline([end, joint], [4.5, 4.0])
    return ribs, cartilage
