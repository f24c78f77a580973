"""The training objectives on real phantom volumes: the unpaired objective must not prefer
"do nothing" to the right answer, and its pair-free terms must be exact where the physics is
known (the kernel oracle, the low-resolution operator)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from RevGANCore.config import ObjectiveConfig
from RevGANCore.degradations import kernel_oracle, low_resolution
from RevGANCore.errors import ConfigError
from RevGANCore.objectives import Objective
from RevGANCore.phantom_dataset import PhantomRecipe, case_seeds, make_phantom_case
from RevGANCore.tensor_filters import LowResolution, on_grid, spectrum_distance
from RevGANCore.volume import hu_to_unit, resample_to_grid, super_resolution_grid

SHAPE = (32, 64, 64)
FACTORS_ZYX = (4, 2, 2)
#: 20 HU in network units (the HU window is 1500 HU wide over [-1, 1]).
TWENTY_HU = 20.0 / 750.0


@pytest.fixture(scope="module")
def cases():
    """Two phantom cases: the source domain is read from one, the target domain from the
    other, as in unpaired training."""
    recipe = PhantomRecipe(shape=SHAPE)
    return make_phantom_case(case_seeds(0, 1), recipe), make_phantom_case(case_seeds(0, 2), recipe)


def unit(volume) -> torch.Tensor:
    return torch.from_numpy(hu_to_unit(volume.array, clip=False))[None, None]


def generator_cost(objective: Objective, x, y, fake_y, fake_x, cycle_x, cycle_y) -> float:
    """The unpaired generator objective (default weights: no identity term) without its
    adversarial term."""
    assert not objective.uses_identity
    outputs = {"fake_y": fake_y, "fake_x": fake_x, "cycle_x": cycle_x, "cycle_y": cycle_y}
    return float(objective.weighted_total(objective.reconstruction_terms(x, y, outputs)))


def test_kernel_exact_answer_costs_no_more_than_the_identity(cases):
    """x: sharp of case A, y: smooth of case B. The exact answer converts each with the
    kernel oracle (the smooth image of A; the sharp image of B, whose smooth image is y) and
    cycles back exactly; "do nothing" returns its inputs, which also cycle back exactly."""
    a, b = cases
    objective = Objective(ObjectiveConfig(mode="unpaired"), "kernel")
    x, y = unit(a["sharp"]), unit(b["smooth"])
    exact_y = unit(kernel_oracle(a["sharp"], pad_mm=0))
    assert torch.allclose(exact_y, unit(a["smooth"]), atol=1e-5)  # the oracle is exact on the phantom
    exact = generator_cost(objective, x, y, exact_y, unit(b["sharp"]), x, y)
    identity = generator_cost(objective, x, y, x, y, x, y)
    assert exact <= identity
    biased = generator_cost(objective, x, y, exact_y + TWENTY_HU, unit(b["sharp"]) - TWENTY_HU, x, y)
    assert biased > exact  # a bias that G adds and F removes is no longer free


def test_super_resolution_exact_answer_costs_no_more_than_the_identity(cases):
    """In-network upsampling: x is the low-resolution patch on its own grid, G(x) the high-
    resolution one. The exact answer is the clean high-resolution volume; its degradation is x
    exactly, so the physics terms vanish. "Do nothing" is trilinear upsampling (and averaging
    down for F)."""
    a, b = cases
    objective = Objective(ObjectiveConfig(mode="unpaired"), "super_resolution", FACTORS_ZYX)
    x, y = unit(a["lr"]), unit(b["hr"])
    assert tuple(x.shape[2:]) == tuple(n // f for n, f in zip(SHAPE, FACTORS_ZYX))
    physics = objective.physics_terms(x, y, unit(a["hr"]), unit(b["lr"]))
    assert float(physics["forward"]) < 1e-6 and float(physics["inverse"]) < 1e-6
    exact = generator_cost(objective, x, y, unit(a["hr"]), unit(b["lr"]), x, y)
    fake_y, fake_x = on_grid(x, y.shape[2:]), on_grid(y, x.shape[2:])
    identity = generator_cost(objective, x, y, fake_y, fake_x, on_grid(fake_y, x.shape[2:]),
                              on_grid(fake_x, y.shape[2:]))
    assert exact <= identity


def test_degraded_pairs_term_is_zero_at_the_exact_answer_and_not_at_interpolation(cases):
    """Unpaired super-resolution with degraded pairs: the target patch degraded by the known
    operator is its own source; the exact upsampler returns the target, interpolation does not,
    and the term counts in the generator cost and in the pair-free criterion."""
    a, b = cases
    config = ObjectiveConfig(mode="unpaired", lambda_degraded_pairs=100.0)
    objective = Objective(config, "super_resolution", FACTORS_ZYX)
    x, y = unit(a["lr"]), unit(b["hr"])
    degraded = LowResolution(FACTORS_ZYX)(y)
    assert torch.allclose(degraded, unit(b["lr"]), atol=1e-5)  # the phantom's own degradation
    outputs = {"fake_y": unit(a["hr"]), "fake_x": unit(b["lr"]), "cycle_x": x, "cycle_y": y}
    exact = objective.reconstruction_terms(x, y, dict(outputs, fake_degraded=y))
    interpolated = objective.reconstruction_terms(x, y, dict(outputs, fake_degraded=on_grid(degraded, y.shape[2:])))
    assert float(exact["g_degraded_pairs"]) == 0.0
    assert float(interpolated["g_degraded_pairs"]) > TWENTY_HU
    assert float(objective.weighted_total(exact)) < float(objective.weighted_total(interpolated))
    plain = objective.pair_free_criterion(x, y, unit(a["hr"]), unit(b["lr"]))
    checked = objective.pair_free_criterion(x, y, unit(a["hr"]), unit(b["lr"]), on_grid(degraded, y.shape[2:]))
    assert checked["val_unpaired"] == pytest.approx(plain["val_unpaired"] + 100.0 * checked["val_degraded_pairs"])


def test_degraded_pairs_run_the_forward_direction_on_degraded_targets():
    from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d

    generator = RevGANGenerator3d(config=GeneratorConfig(ngf=2, depth=1, upscale_zyx=FACTORS_ZYX)).eval()
    objective = Objective(ObjectiveConfig(mode="unpaired", lambda_degraded_pairs=1.0), "super_resolution", FACTORS_ZYX)
    y = torch.randn(1, 1, 8, 8, 8)
    with torch.no_grad():
        out = objective.generator_phase(generator)(torch.randn(1, 1, 2, 4, 4), y)
        expected = generator(LowResolution(FACTORS_ZYX)(y), "forward")
    assert torch.equal(out["fake_degraded"], expected)
    plain = Objective(ObjectiveConfig(mode="unpaired"), "super_resolution", FACTORS_ZYX)
    with torch.no_grad():
        assert "fake_degraded" not in plain.generator_phase(generator)(torch.randn(1, 1, 2, 4, 4), y)


def test_degraded_means_term_sees_a_bias_and_not_zero_mean_errors(cases):
    """The local-mean term of the degraded pairs: 0 at the exact answer, the whole offset for a
    constant bias, nearly 0 for an alternating error of the same size (which the L1 term
    prices as much as the bias); it counts in the generator cost and in the criterion."""
    a, b = cases
    config = ObjectiveConfig(mode="unpaired", lambda_degraded_pairs=100.0, lambda_degraded_means=100.0)
    objective = Objective(config, "super_resolution", FACTORS_ZYX)
    x, y = unit(a["lr"]), unit(b["hr"])
    outputs = {"fake_y": unit(a["hr"]), "fake_x": unit(b["lr"]), "cycle_x": x, "cycle_y": y}
    alternating = torch.ones_like(y)
    alternating[:, :, 1::2] = -1.0

    def terms(fake_degraded):
        return objective.reconstruction_terms(x, y, dict(outputs, fake_degraded=fake_degraded))

    exact, biased, noisy = terms(y), terms(y + TWENTY_HU), terms(y + TWENTY_HU * alternating)
    assert float(exact["g_degraded_means"]) == 0.0
    assert float(biased["g_degraded_means"]) == pytest.approx(TWENTY_HU, rel=1e-4)
    assert float(noisy["g_degraded_means"]) < 1e-6
    assert float(biased["g_degraded_pairs"]) == pytest.approx(float(noisy["g_degraded_pairs"]), rel=1e-4)
    assert float(objective.weighted_total(biased)) > float(objective.weighted_total(noisy))
    criterion = objective.pair_free_criterion(x, y, unit(a["hr"]), unit(b["lr"]), y + TWENTY_HU)
    assert criterion["val_degraded_means"] == pytest.approx(TWENTY_HU, rel=1e-4)
    plain = objective.pair_free_criterion(x, y, unit(a["hr"]), unit(b["lr"]))
    assert criterion["val_unpaired"] == pytest.approx(plain["val_unpaired"] + 100.0 * criterion["val_degraded_pairs"]
                                                      + 100.0 * criterion["val_degraded_means"])


@pytest.mark.parametrize("name, task", [("lambda_degraded_pairs", "super_resolution"),
                                        ("lambda_degraded_means", "super_resolution"),
                                        ("lambda_recorrupted_pairs", "kernel")])
def test_self_supervised_pairs_are_refused_for_paired_runs(task, name):
    with pytest.raises(ConfigError, match=f"{name} belongs to unpaired runs"):
        Objective(ObjectiveConfig(mode="paired", **{name: 1.0}), task, FACTORS_ZYX, prior_taps=11)


def test_degraded_means_need_the_degraded_pairs():
    with pytest.raises(ConfigError, match="needs objective.lambda_degraded_pairs > 0"):
        Objective(ObjectiveConfig(mode="unpaired", lambda_degraded_means=1.0), "super_resolution", FACTORS_ZYX)


def test_super_resolution_on_one_grid_prefers_the_exact_answer(cases):
    """Today's layout: the low-resolution volume B-spline-resampled onto the high-resolution grid."""
    a, b = cases

    def upsampled(volume):
        return unit(resample_to_grid(volume, super_resolution_grid(volume, (2, 2, 4)), interpolation="bspline"))

    objective = Objective(ObjectiveConfig(mode="unpaired"), "super_resolution", FACTORS_ZYX)
    x, y = upsampled(a["lr"]), unit(b["hr"])
    exact = generator_cost(objective, x, y, unit(a["hr"]), upsampled(b["lr"]), x, y)
    identity = generator_cost(objective, x, y, x, y, x, y)
    assert exact <= identity


def test_identity_weight_is_zero_by_default_and_refused_across_grids(cases):
    assert ObjectiveConfig().lambda_identity == 0.0
    a, b = cases
    objective = Objective(ObjectiveConfig(mode="unpaired", lambda_identity=0.5), "super_resolution", FACTORS_ZYX)
    x, y = unit(a["lr"]), unit(b["hr"])
    outputs = {"fake_y": y, "fake_x": x, "cycle_x": x, "cycle_y": y, "identity_y": y, "identity_x": x}
    with pytest.raises(ConfigError, match="lambda_identity needs source and target patches on one grid"):
        objective.reconstruction_terms(x, y, outputs)


def test_low_resolution_operator_matches_the_phantom_degradation(cases):
    hr = cases[0]["hr"]
    expected = low_resolution(hr, (2, 2, 4))
    got = LowResolution(FACTORS_ZYX)(torch.from_numpy(hr.array)[None, None].double())[0, 0].numpy()
    assert got.shape == expected.shape
    assert np.abs(got - expected.array).max() < 1e-3  # HU


def test_on_grid_keeps_upsamples_and_averages():
    coarse = torch.arange(8.0).reshape(1, 1, 2, 2, 2)
    assert on_grid(coarse, (2, 2, 2)) is coarse
    fine = on_grid(coarse, (4, 4, 4))
    assert fine.shape[2:] == (4, 4, 4) and float(fine.mean()) == pytest.approx(float(coarse.mean()))
    assert on_grid(fine, (2, 2, 2)).shape == coarse.shape
    assert torch.allclose(on_grid(torch.ones(1, 1, 4, 4, 4), (1, 2, 2)), torch.ones(1, 1, 1, 2, 2))
    with pytest.raises(ValueError, match="not an integer factor"):
        on_grid(coarse, (3, 2, 2))


def test_spectrum_distance_sees_texture_not_anatomy(cases):
    a, b = cases
    same_texture = float(spectrum_distance(unit(a["smooth"]), unit(b["smooth"])))
    other_texture = float(spectrum_distance(unit(a["sharp"]), unit(b["smooth"])))
    assert float(spectrum_distance(unit(a["smooth"]), unit(a["smooth"]))) == 0.0
    assert other_texture > 3 * same_texture


def test_pair_free_criterion_ranks_the_exact_answer_first(cases):
    """Checkpoint selection for unpaired runs: no pairs used, the exact answer wins."""
    a, b = cases
    objective = Objective(ObjectiveConfig(mode="unpaired"), "kernel")
    x, y = unit(a["sharp"]), unit(b["smooth"])
    exact = objective.pair_free_criterion(x, y, unit(a["smooth"]), unit(b["sharp"]))
    identity = objective.pair_free_criterion(x, y, x, y)
    biased = objective.pair_free_criterion(x, y, unit(a["smooth"]) + TWENTY_HU, unit(b["sharp"]) - TWENTY_HU)
    assert exact["val_unpaired"] < identity["val_unpaired"]
    assert exact["val_unpaired"] < biased["val_unpaired"]


def test_super_resolution_patches_must_tile_the_degradation():
    objective = Objective(ObjectiveConfig(mode="unpaired"), "super_resolution", FACTORS_ZYX)
    objective.check_patch((32, 64, 64))
    with pytest.raises(ConfigError, match=r"must be divisible by the super-resolution factors \(4, 2, 2\)"):
        objective.check_patch((30, 64, 64))


@pytest.mark.parametrize("mode, texture, channels", [("unpaired", False, 1), ("unpaired", True, 2),
                                                     ("paired", False, 2), ("paired", True, 3)])
def test_discriminator_view(cases, mode, texture, channels):
    """Paired discriminators see the input (on the image's grid) first; the texture option adds
    the image's high-pass, which carries the noise and none of the mean."""
    a, _ = cases
    objective = Objective(ObjectiveConfig(mode=mode, texture_discriminator=texture), "super_resolution", FACTORS_ZYX)
    image, condition = unit(a["hr"]), unit(a["lr"])
    view = objective.discriminator_view(image, condition)
    assert view.shape[1] == channels == objective.discriminator_channels
    assert torch.equal(view[:, 1 if mode == "paired" else 0], image[:, 0])
    if mode == "paired":
        assert torch.allclose(view[:, :1], on_grid(condition, image.shape[2:]))
    if texture:
        texture_channel = view[:, -1]
        assert abs(float(texture_channel.mean())) < 0.01 * float(image.abs().mean())
        assert torch.allclose(objective.discriminator_view(image + TWENTY_HU, condition)[:, -1], texture_channel,
                              atol=1e-5)
