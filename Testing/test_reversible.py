"""The memory-saving reversible path must give exactly the gradients of plain autograd.

Upstream gradients are random everywhere: ``loss = y.mean()`` sends the same gradient to
both channel halves and would hide swapped halves (the original RevGAN code's bug)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from RevGANCore.errors import ArchitectureError
from RevGANCore.networks import RevGANGenerator3d
from RevGANCore.reversible import AdditiveCoupling, ReversibleSequence

DTYPE = torch.float64


def _coupling(channels: int = 4, hidden: int = 6, activation=nn.SiLU) -> AdditiveCoupling:
    def function():
        # Non-zero weights everywhere so every term of the gradient is exercised.
        return nn.Sequential(nn.Conv3d(channels // 2, hidden, 3, padding=1), activation(),
                             nn.Conv3d(hidden, channels // 2, 3, padding=1))
    return AdditiveCoupling(function(), function())


def _pair_of_sequences(depth: int, dtype=DTYPE):
    blocks = [_coupling() for _ in range(depth)]
    saving = ReversibleSequence(blocks, memory_saving=True).to(dtype)
    plain = copy.deepcopy(saving)
    plain.memory_saving = False
    return saving, plain


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def _run(model, x, upstream, direction):
    # A ReLU before the sequence saves its output (= the sequence's input) for backward:
    # the memory-saving path must neither free nor modify it.
    pre = torch.relu(x)
    out = model(pre) if direction == "forward" else model.inverse(pre)
    grads = torch.autograd.grad((out * upstream).sum(), [x, *model.parameters()])
    return out, grads


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("depth", [1, 2, 3])
def test_sequence_gradients_equal_plain_autograd(depth, direction):
    saving, plain = _pair_of_sequences(depth)
    x = torch.randn(2, 4, 5, 6, 7, dtype=DTYPE, requires_grad=True)
    upstream = torch.randn(2, 4, 5, 6, 7, dtype=DTYPE)
    out_s, grads_s = _run(saving, x, upstream, direction)
    out_p, grads_p = _run(plain, x, upstream, direction)
    assert torch.allclose(out_s, out_p, rtol=0, atol=1e-13)
    for g_s, g_p in zip(grads_s, grads_p):
        assert _relative_error(g_s, g_p) <= 1e-10


def test_swapped_halves_would_be_detected():
    """Guard for the test itself: swapping the input-gradient halves must be caught."""
    saving, plain = _pair_of_sequences(2)
    x = torch.randn(1, 4, 4, 4, 4, dtype=DTYPE, requires_grad=True)
    upstream = torch.randn_like(x)
    _, (gx_s, *_) = _run(saving, x, upstream, "inverse")
    _, (gx_p, *_) = _run(plain, x, upstream, "inverse")
    swapped = torch.cat([gx_s[:, 2:], gx_s[:, :2]], dim=1)
    assert _relative_error(swapped, gx_p) > 1e-3


def test_inverse_undoes_forward():
    saving, _ = _pair_of_sequences(3)
    x = torch.randn(1, 4, 6, 6, 6, dtype=DTYPE)
    with torch.no_grad():
        assert torch.allclose(saving.inverse(saving(x)), x, atol=1e-12)
        assert torch.allclose(saving(saving.inverse(x)), x, atol=1e-12)


def test_leaf_input_gradient_accumulated_once():
    saving, plain = _pair_of_sequences(2)
    x_s = torch.randn(1, 4, 4, 5, 6, dtype=DTYPE, requires_grad=True)
    x_p = x_s.detach().clone().requires_grad_(True)
    upstream = torch.randn(1, 4, 4, 5, 6, dtype=DTYPE)
    (saving(x_s) * upstream).sum().backward()
    (plain(x_p) * upstream).sum().backward()
    assert _relative_error(x_s.grad, x_p.grad) <= 1e-10
    for p_s, p_p in zip(saving.parameters(), plain.parameters()):
        assert _relative_error(p_s.grad, p_p.grad) <= 1e-10


def test_no_grad_keeps_callers_tensor():
    saving, _ = _pair_of_sequences(2)
    x = torch.randn(1, 4, 4, 4, 4, dtype=DTYPE)
    before = x.clone()
    with torch.no_grad():
        y = saving(x)
    assert x.untyped_storage().nbytes() == before.numel() * before.element_size()
    assert torch.equal(x, before)
    assert not y.requires_grad


def test_input_saved_by_previous_conv_and_backward_twice_graph_is_independent():
    saving, plain = _pair_of_sequences(2)
    conv = nn.Conv3d(1, 4, 3, padding=1).to(DTYPE)
    x = torch.randn(1, 1, 5, 5, 5, dtype=DTYPE)
    upstream = torch.randn(1, 4, 5, 5, 5, dtype=DTYPE)
    grads = []
    for model in (saving, plain):
        conv.zero_grad()
        out = model(conv(x))
        (out * upstream).sum().backward()
        grads.append(conv.weight.grad.clone())
    assert _relative_error(grads[0], grads[1]) <= 1e-10


def test_only_output_is_saved_for_backward():
    """Whatever the depth, the memory-saving sequence stores one tensor: its output."""
    for depth in (1, 4):
        saving, _ = _pair_of_sequences(depth)
        x = torch.randn(1, 4, 6, 6, 6, dtype=DTYPE, requires_grad=True)
        saved = []

        def pack(tensor):
            saved.append(tensor)
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = saving(x)
        activations = [t for t in saved if not isinstance(t, nn.Parameter)]
        assert len(activations) == 1 and activations[0].data_ptr() == out.data_ptr()


def test_batchnorm_and_dropout_are_rejected():
    with pytest.raises(ArchitectureError, match="BatchNorm3d"):
        AdditiveCoupling(nn.Sequential(nn.Conv3d(2, 2, 3, padding=1), nn.BatchNorm3d(2)), nn.Identity())
    with pytest.raises(ArchitectureError, match="Dropout"):
        AdditiveCoupling(nn.Identity(), nn.Sequential(nn.Dropout3d(0.1)))
    with pytest.raises(ArchitectureError, match="track_running_stats"):
        AdditiveCoupling(nn.InstanceNorm3d(2, track_running_stats=True), nn.Identity())
    with pytest.raises(ArchitectureError, match="even number of channels"):
        ReversibleSequence([_coupling()])(torch.randn(1, 3, 4, 4, 4))


def test_double_backward_is_refused_clearly():
    saving, _ = _pair_of_sequences(1)
    x = torch.randn(1, 4, 4, 4, 4, dtype=DTYPE, requires_grad=True)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(saving(x).sum(), x, create_graph=True)


# ------------------------------------------------------------------------------ generator


def _generator_pair(depth: int, dtype=DTYPE):
    torch.manual_seed(depth)
    saving = RevGANGenerator3d(ngf=4, depth=depth, memory_saving=True).to(dtype)
    # Zero-initialised last convs would make F and G contribute nothing to the gradient
    # check: perturb every parameter.
    with torch.no_grad():
        for p in saving.parameters():
            p.add_(0.1 * torch.randn_like(p))
    plain = copy.deepcopy(saving)
    plain.core.memory_saving = False
    return saving, plain


@pytest.mark.parametrize("direction", ["forward", "inverse"])
@pytest.mark.parametrize("depth", [0, 1, 3])
def test_generator_gradients_equal_plain(depth, direction):
    saving, plain = _generator_pair(depth)
    x = torch.randn(2, 1, 7, 8, 9, dtype=DTYPE, requires_grad=True)
    upstream = torch.randn(2, 1, 7, 8, 9, dtype=DTYPE)
    results = []
    for model in (saving, plain):
        out = model(x, direction=direction)
        inputs = [x, *model.parameters()]
        grads = torch.autograd.grad((out * upstream).sum(), inputs, allow_unused=True)
        # The other direction's encoder and decoder are unused: their gradient is zero.
        grads = [torch.zeros_like(t) if g is None else g for t, g in zip(inputs, grads)]
        results.append((out, grads))
    (out_s, grads_s), (out_p, grads_p) = results
    assert out_s.shape == x.shape
    assert torch.allclose(out_s, out_p, rtol=0, atol=1e-13)
    names = ["input"] + [name for name, _ in saving.named_parameters()]
    used = {"encoder_x", "decoder_y"} if direction == "forward" else {"encoder_y", "decoder_x"}
    for name, g_s, g_p in zip(names, grads_s, grads_p):
        if name.split(".")[0] in used or name == "input" or name.startswith("core"):
            assert g_p.abs().sum() > 0, f"{name} gets no gradient; the check would be vacuous"
            assert _relative_error(g_s, g_p) <= 1e-10, name
        else:
            assert g_s.abs().sum() == 0 and g_p.abs().sum() == 0, name


def test_generator_float32_depth8_gradient_error():
    saving, plain = _generator_pair(8, dtype=torch.float32)
    x = torch.randn(1, 1, 16, 16, 16, requires_grad=True)
    upstream = torch.randn(1, 1, 16, 16, 16)
    errors = []
    for direction in ("forward", "inverse"):
        flat = []
        for model in (saving, plain):
            inputs = [x, *model.parameters()]
            grads = torch.autograd.grad((model(x, direction) * upstream).sum(), inputs, allow_unused=True)
            flat.append(torch.cat([(torch.zeros_like(t) if g is None else g).flatten()
                                   for t, g in zip(inputs, grads)]))
        flat_s, flat_p = flat
        errors.append(_relative_error(flat_s, flat_p))
    # float32 reconstruction noise: measured 1.0-1.1e-5 with the "resize" layout (0.5-1e-5 with
    # the first one); the failure this guards against, ReLU masks flipping, gives ~4e-3.
    assert max(errors) <= 2e-5, errors


def test_core_is_exactly_invertible_inside_generator():
    saving, _ = _generator_pair(2)
    h = torch.randn(1, 8, 5, 5, 5, dtype=DTYPE)
    with torch.no_grad():
        assert torch.allclose(saving.core.inverse(saving.core(h)), h, atol=1e-12)


def test_generator_rejects_bad_input():
    model = RevGANGenerator3d(ngf=4, depth=1)
    with pytest.raises(ArchitectureError, match="generator input"):
        model(torch.randn(1, 2, 8, 8, 8))
    with pytest.raises(ArchitectureError, match="direction"):
        model(torch.randn(1, 1, 8, 8, 8), direction="sideways")
