"""The kernel task's recorrupted pairs (RevGANCore/recorrupted_pairs.py): their noise, their
answers, their calibration against a linear prior, and a training run that uses them."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch

from RevGANCore.config import ObjectiveConfig, load_config
from RevGANCore.errors import ConfigError
from RevGANCore.networks import GeneratorConfig, RevGANGenerator3d, filter_slices
from RevGANCore.noise_power import NoiseSynthesis, noise_power_spectrum
from RevGANCore.objectives import Objective
from RevGANCore.phantom_dataset import PhantomRecipe, write_phantom_dataset
from RevGANCore.recorrupted_pairs import ALPHA, RecorruptedPairs, edge_weight, prior_noise_level
from RevGANCore.training import Trainer
from test_noise_power import correlated_noise
from training_helpers import tiny_settings, write_config

#: A smoothing in-plane prior, as the generator holds it: (1, 1, 1, K, K).
SMOOTHING = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]).div(16.0).reshape(1, 1, 1, 3, 3)
IDENTITY = torch.ones(1, 1, 1, 1, 1)


@pytest.fixture(scope="module")
def noise():
    """Noise correlated along z and in-plane, 0.05 network units (37.5 HU)."""
    return NoiseSynthesis(noise_power_spectrum([correlated_noise((32, 96, 96), (1.0, 0.7, 0.7), 0.05)]))


def test_the_answers_noise_is_uncorrelated_with_the_sources(noise):
    """x = s + n (n drawn like the domain's noise): the source x + alpha z and the fully
    denoising answer x - z / alpha share the image but not the noise, while the source's noise
    is strongly correlated with n itself (so a network cannot learn to copy it)."""
    own = noise.sample(torch.zeros(4, 1, 16, 48, 48), torch.Generator().manual_seed(1))
    pairs = RecorruptedPairs(noise, target_noise_level=0.0)
    pairs.calibrate(IDENTITY)
    pairs.edge_threshold = 1e9  # no edges: every voxel reduced by a = 1
    torch.manual_seed(2)
    source, answer = pairs(own, IDENTITY)
    source_noise, answer_noise = source.numpy().ravel(), answer.numpy().ravel()
    assert pairs.noise_reduction == 1.0
    assert np.corrcoef(source_noise, answer_noise)[0, 1] == pytest.approx(0.0, abs=0.02)
    assert np.corrcoef(source_noise, own.numpy().ravel())[0, 1] > 0.8
    assert source_noise.std() == pytest.approx(0.05 * np.sqrt(1 + ALPHA ** 2), rel=0.05)
    assert answer_noise.std() == pytest.approx(0.05 * np.sqrt(1 + 1 / ALPHA ** 2), rel=0.05)


def test_calibration_measures_the_priors_noise_exactly(noise):
    """The prior's output noise level is computed, not sampled; it matches a large sample, and
    the noise reduction is 1 - target / that level (0 when the target is as noisy)."""
    level = prior_noise_level(noise, SMOOTHING)
    sample = filter_slices(noise.sample(torch.zeros(4, 1, 32, 96, 96), torch.Generator().manual_seed(0)), SMOOTHING)
    assert level == pytest.approx(float(sample.std()), rel=0.03)
    assert level < 0.8 * noise.std
    pairs = RecorruptedPairs(noise, target_noise_level=0.25 * level)
    assert pairs.calibrate(SMOOTHING) == (level, pytest.approx(0.75))
    assert pairs.edge_threshold == level
    as_noisy = RecorruptedPairs(noise, target_noise_level=2.0 * level)
    as_noisy.calibrate(SMOOTHING)
    source, answer = as_noisy(torch.zeros(1, 1, 8, 32, 32), SMOOTHING)
    assert as_noisy.noise_reduction == 0.0
    assert torch.equal(answer, filter_slices(source, SMOOTHING))  # nothing to learn: the prior is the answer


def test_edges_keep_their_noise(noise):
    """A 300 HU step under 37 HU of noise (identity prior, a = 1): flat regions are moved all
    the way to the denoising answer, the pixels at the step hardly (their weight falls as the
    inverse square of the gradient over the noise level, then 3 x 3 means spread it)."""
    image = torch.zeros(2, 1, 8, 48, 48)
    image[..., 24:] = 0.4
    pairs = RecorruptedPairs(noise, target_noise_level=0.0)
    pairs.calibrate(IDENTITY)
    torch.manual_seed(3)
    source, answer = pairs(image + noise.sample(image), IDENTITY)
    weight = edge_weight(source, pairs.edge_threshold).mean(dim=(0, 1, 2, 3))
    assert float(weight[23]) < 0.2 and float(weight[22:25].max()) < 0.5
    assert float(weight[4:16].min()) > 0.95 and float(weight[32:44].min()) > 0.95
    moved = (answer - source).abs().mean(dim=(0, 1, 2, 3))
    assert float(moved[23]) < 0.2 * float(moved[4:16].mean())


def test_pairs_refuse_to_run_before_calibration(noise):
    with pytest.raises(RuntimeError, match="calibrate"):
        RecorruptedPairs(noise, 0.01)(torch.zeros(1, 1, 8, 16, 16), IDENTITY)


def test_the_generator_runs_on_recorrupted_sources_with_its_own_prior(noise):
    generator = RevGANGenerator3d(config=GeneratorConfig(ngf=2, depth=1, prior_taps=3)).eval()
    generator.set_prior(SMOOTHING.reshape(3, 3), torch.eye(3)[1:2].T @ torch.eye(3)[1:2])
    pairs = RecorruptedPairs(noise, target_noise_level=0.01)
    pairs.calibrate(generator.prior_forward)
    objective = Objective(ObjectiveConfig(mode="unpaired", lambda_recorrupted_pairs=1.0), "kernel",
                          recorrupted_pairs=pairs, prior_taps=3)
    x = torch.zeros(1, 1, 8, 16, 16)
    with torch.no_grad():
        torch.manual_seed(5)
        out = objective.generator_phase(generator)(x, x.clone())
        torch.manual_seed(5)
        source, answer = pairs(x, generator.prior_forward)
        terms = objective.reconstruction_terms(x, x.clone(), out)
    assert torch.equal(out["fake_recorrupted"], generator(source, "forward"))
    assert torch.equal(out["recorrupted_answer"], answer)
    assert float(terms["g_recorrupted_pairs"]) == pytest.approx(float((out["fake_recorrupted"] - answer).pow(2).mean()))


@pytest.mark.parametrize("mode, task, taps, weights, message", [
    ("paired", "kernel", 11, {"lambda_recorrupted_pairs": 1.0}, "belongs to unpaired runs"),
    ("unpaired", "super_resolution", 5, {"lambda_recorrupted_pairs": 1.0}, "is for the kernel task"),
    ("unpaired", "kernel", 0, {"lambda_recorrupted_pairs": 1.0}, "answers with the linear prior's output"),
    ("unpaired", "kernel", 11, {"lambda_degraded_pairs": 1.0}, "the kernel task's self-supervised term is"),
])
def test_terms_that_do_not_fit_the_task_are_refused(mode, task, taps, weights, message):
    with pytest.raises(ConfigError, match=message):
        Objective(ObjectiveConfig(mode=mode, **weights), task, (4, 2, 2), prior_taps=taps)


def test_a_kernel_run_learns_from_recorrupted_pairs(tmp_path):
    """A tiny unpaired kernel run with the term: it measures the sharp noise in the prior's
    source cases and the smooth noise in its target cases (nonlinear world: the smooth side
    keeps less noise than the prior's output), logs both, and trains and validates on the pairs."""
    manifest = write_phantom_dataset(tmp_path / "data", cases=3, seed=5,
                                     recipe=PhantomRecipe(shape=(16, 96, 96), world="nonlinear"))
    settings = tiny_settings(manifest, tmp_path / "run", model__generator__prior_taps=5, objective__mode="unpaired",
                             objective__lambda_recorrupted_pairs=100.0)
    lines = []
    Trainer(load_config(str(write_config(tmp_path / "config.json", settings))), log=lines.append).fit()
    measured = [line for line in lines if line.startswith("recorrupted pairs: sharp noise")]
    assert len(measured) == 1 and "flat regions of 1 volume (case000..case000)" in measured[0], lines
    assert "smooth" in measured[0] and "(case001..case001)" in measured[0], measured[0]
    kept = float(measured[0].split("flat regions keep ")[1].split(" ")[0])
    assert 0.0 < kept < 1.0  # the iterative reconstruction removed some of the noise, not all
    with open(tmp_path / "run" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    trained = [float(r["g_recorrupted_pairs"]) for r in rows if r["g_recorrupted_pairs"]]
    validated = [float(r["val_recorrupted_pairs"]) for r in rows if r["val_recorrupted_pairs"]]
    assert trained and len(validated) == 3  # validated at steps 0, 2 and 4
    assert all(np.isfinite(trained)) and all(0.0 < v < 0.05 for v in validated)


def test_answers_stay_in_float32_under_autocast(noise):
    """Training under bf16 autocast (CPU here, CUDA on a GPU): the prior's convolutions that make
    the answer still run in float32, so it equals the answer made without autocast."""
    x = noise.sample(torch.zeros(1, 1, 8, 32, 32), torch.Generator().manual_seed(4))
    pairs = RecorruptedPairs(noise, target_noise_level=0.0)
    pairs.calibrate(SMOOTHING)
    plain = pairs(x, SMOOTHING, torch.Generator().manual_seed(6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = pairs(x, SMOOTHING, torch.Generator().manual_seed(6))
    assert mixed[1].dtype == torch.float32
    assert torch.equal(plain[0], mixed[0]) and torch.equal(plain[1], mixed[1])
