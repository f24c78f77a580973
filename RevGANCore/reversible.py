"""Additive-coupling reversible blocks and a sequence of them whose training memory does not
grow with depth.

An :class:`AdditiveCoupling` splits its input channels into halves (x1, x2) and computes::

    y1 = x1 + F(x2)          x2 = y2 - G(y1)
    y2 = x2 + G(y1)          x1 = y1 - F(x2)      (inverse)

so its input can be rebuilt exactly from its output. :class:`ReversibleSequence` uses that in
training: with ``memory_saving=True`` only the sequence's OUTPUT is kept for backward, in
either direction (``forward`` or ``inverse``). During backward each block evaluates F and G
once with autograd recording; the same evaluations serve both to rebuild the block's input
and to propagate gradients, so the cost is one extra forward per block (not two, as in
implementations that first reconstruct and then re-run the block).

Guarantees and their tests (Testing/test_reversible.py):
- gradients equal plain autograd (``memory_saving=False``) for inputs and every parameter,
  in both directions, with random upstream gradients;
- works when the input was saved by a previous op (ReLU, conv), when the input is a leaf
  that requires grad (its gradient is accumulated once), under ``torch.no_grad()`` (nothing
  of the caller's is freed or modified), with ``torch.autograd.grad``, under autocast (the
  autocast state of the forward is restored for the backward recomputation) and in
  DistributedDataParallel (parameter gradients flow through ordinary autograd accumulation).

Not supported: double backward (``create_graph=True``) through the memory-saving path.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .errors import ArchitectureError

__all__ = ["AdditiveCoupling", "ReversibleSequence", "check_reversible_safe"]

# Layers whose output depends on state that changes between the forward pass and the
# backward recomputation (running statistics, random masks): rebuilding inputs from outputs
# would silently give wrong gradients.
_STATEFUL_LAYER_TYPES: Tuple[type, ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.dropout._DropoutNd,
    nn.AlphaDropout,
    nn.FeatureAlphaDropout,
)


def check_reversible_safe(module: nn.Module, name: str = "coupling function") -> None:
    """Raise :class:`ArchitectureError` if ``module`` contains a layer that breaks exact
    reconstruction (batch normalisation, dropout, instance norm with running statistics)."""
    for child_name, child in module.named_modules():
        where = f"{name}.{child_name}" if child_name else name
        if isinstance(child, _STATEFUL_LAYER_TYPES):
            raise ArchitectureError(
                f"{where} is a {type(child).__name__}: batch normalisation and dropout cannot be used "
                "inside a reversible coupling (running statistics and random masks change between the "
                "forward pass and the backward reconstruction). Use no normalisation or InstanceNorm "
                "without running statistics.")
        if isinstance(child, nn.modules.instancenorm._InstanceNorm) and child.track_running_stats:
            raise ArchitectureError(
                f"{where} is an {type(child).__name__} with track_running_stats=True, which cannot be used "
                "inside a reversible coupling; create it with track_running_stats=False.")


def _split_halves(tensor: torch.Tensor, what: str) -> Tuple[torch.Tensor, torch.Tensor]:
    channels = tensor.shape[1]
    if channels % 2:
        raise ArchitectureError(f"additive coupling needs an even number of channels; the {what} has {channels}")
    return tensor[:, : channels // 2], tensor[:, channels // 2:]


def _trainable(module: nn.Module) -> List[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


def _grad_through(output: torch.Tensor, wrt: torch.Tensor, params: Sequence[nn.Parameter],
                  upstream: torch.Tensor) -> Tuple[torch.Tensor, List[Optional[torch.Tensor]]]:
    """Vector-Jacobian product of ``output`` with ``upstream`` for ``wrt`` and ``params``."""
    grads = torch.autograd.grad(output, [wrt, *params], upstream, allow_unused=True)
    grad_wrt = grads[0] if grads[0] is not None else torch.zeros_like(wrt)
    return grad_wrt, list(grads[1:])


class AdditiveCoupling(nn.Module):
    """y1 = x1 + F(x2), y2 = x2 + G(y1) on the two channel halves of the input.

    ``f`` and ``g`` map a tensor with half the channels to one of the same shape. They must
    not contain batch normalisation or dropout (checked here)."""

    def __init__(self, f: nn.Module, g: nn.Module):
        super().__init__()
        check_reversible_safe(f, "F")
        check_reversible_safe(g, "G")
        self.f = f
        self.g = g

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = _split_halves(x, "coupling input")
        y1 = x1 + self.f(x2)
        y2 = x2 + self.g(y1)
        return torch.cat([y1, y2], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = _split_halves(y, "coupling output")
        x2 = y2 - self.g(y1)
        x1 = y1 - self.f(x2)
        return torch.cat([x1, x2], dim=1)

    # -- memory-free backward ------------------------------------------------------------
    # Each returns (rebuilt input, gradient w.r.t. that input, {parameter: gradient}).

    def backward_through_forward(self, y: torch.Tensor, grad_y: torch.Tensor):
        """Backward of ``forward`` given only its output ``y`` and the gradient ``grad_y``."""
        y1, y2 = _split_halves(y, "coupling output")
        grad_y1, grad_y2 = _split_halves(grad_y, "gradient")
        g_params, f_params = _trainable(self.g), _trainable(self.f)

        with torch.enable_grad():
            y1_leaf = y1.detach().requires_grad_(True)
            g_out = self.g(y1_leaf)
        x2 = y2 - g_out.detach()
        grad_from_g, g_grads = _grad_through(g_out, y1_leaf, g_params, grad_y2)
        grad_y1_total = grad_y1 + grad_from_g
        del g_out, y1_leaf

        with torch.enable_grad():
            x2_leaf = x2.detach().requires_grad_(True)
            f_out = self.f(x2_leaf)
        x1 = y1 - f_out.detach()
        grad_from_f, f_grads = _grad_through(f_out, x2_leaf, f_params, grad_y1_total)
        grad_x2 = grad_y2 + grad_from_f

        x = torch.cat([x1, x2], dim=1)
        grad_x = torch.cat([grad_y1_total, grad_x2], dim=1)
        return x, grad_x, _pair(g_params, g_grads) + _pair(f_params, f_grads)

    def backward_through_inverse(self, x: torch.Tensor, grad_x: torch.Tensor):
        """Backward of ``inverse`` given only its output ``x`` and the gradient ``grad_x``.

        inverse computes x2 = y2 - G(y1), then x1 = y1 - F(x2); the minus signs enter the
        vector-Jacobian products, and the halves are NOT swapped relative to ``forward``."""
        x1, x2 = _split_halves(x, "coupling inverse output")
        grad_x1, grad_x2 = _split_halves(grad_x, "gradient")
        g_params, f_params = _trainable(self.g), _trainable(self.f)

        with torch.enable_grad():
            x2_leaf = x2.detach().requires_grad_(True)
            f_out = self.f(x2_leaf)
        y1 = x1 + f_out.detach()
        grad_from_f, f_grads = _grad_through(f_out, x2_leaf, f_params, -grad_x1)
        grad_x2_total = grad_x2 + grad_from_f
        del f_out, x2_leaf

        with torch.enable_grad():
            y1_leaf = y1.detach().requires_grad_(True)
            g_out = self.g(y1_leaf)
        y2 = x2 + g_out.detach()
        grad_from_g, g_grads = _grad_through(g_out, y1_leaf, g_params, -grad_x2_total)
        grad_y1 = grad_x1 + grad_from_g

        y = torch.cat([y1, y2], dim=1)
        grad_y = torch.cat([grad_y1, grad_x2_total], dim=1)
        return y, grad_y, _pair(f_params, f_grads) + _pair(g_params, g_grads)


def _pair(params: Sequence[nn.Parameter], grads: Sequence[Optional[torch.Tensor]]):
    return [(p, g) for p, g in zip(params, grads) if g is not None]


# ------------------------------------------------------------------------------ autocast


def _autocast_state() -> List[Tuple[str, bool, torch.dtype]]:
    """The autocast settings active now, per device type, to replay them in backward
    (autograd may run backward on another thread, where autocast is off)."""
    states = []
    for device_type in ("cuda", "cpu"):
        try:
            enabled = torch.is_autocast_enabled(device_type)
            dtype = torch.get_autocast_dtype(device_type)
        except (TypeError, AttributeError):  # torch < 2.4
            if device_type == "cuda":
                enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
            else:
                enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        states.append((device_type, bool(enabled), dtype))
    return states


class _Autocast:
    """Context manager re-entering a recorded autocast state."""

    def __init__(self, states: List[Tuple[str, bool, torch.dtype]]):
        self._managers = [torch.autocast(device_type=d, dtype=t, enabled=e) for d, e, t in states if e]

    def __enter__(self):
        for manager in self._managers:
            manager.__enter__()

    def __exit__(self, *exc):
        for manager in reversed(self._managers):
            manager.__exit__(*exc)
        return False


# ------------------------------------------------------------------------ autograd Function


class _ReversibleSequenceFunction(torch.autograd.Function):
    """Runs the blocks without recording a graph and keeps only the output for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, blocks: Tuple[AdditiveCoupling, ...], inverse: bool,
                *params: nn.Parameter) -> torch.Tensor:
        ctx.blocks = blocks
        ctx.inverse = inverse
        ctx.params = params
        ctx.autocast = _autocast_state()
        out = x
        for block in (reversed(blocks) if inverse else blocks):
            out = block.inverse(out) if inverse else block(out)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        if torch.is_grad_enabled():
            raise RuntimeError("double backward (create_graph=True) is not supported through a "
                               "memory-saving ReversibleSequence; build it with memory_saving=False")
        (out,) = ctx.saved_tensors
        out = out.detach()
        grad = grad_out
        param_grads: Dict[int, torch.Tensor] = {}
        # Undo the blocks in the reverse of the order they were applied in.
        applied = list(reversed(ctx.blocks)) if ctx.inverse else list(ctx.blocks)
        with torch.no_grad(), _Autocast(ctx.autocast):
            for block in reversed(applied):
                step = block.backward_through_inverse if ctx.inverse else block.backward_through_forward
                out, grad, block_grads = step(out, grad)
                for param, param_grad in block_grads:
                    key = id(param)
                    param_grads[key] = param_grad if key not in param_grads else param_grads[key] + param_grad
        grad_input = grad if ctx.needs_input_grad[0] else None
        return (grad_input, None, None, *[param_grads.get(id(p)) for p in ctx.params])


class ReversibleSequence(nn.Module):
    """A chain of :class:`AdditiveCoupling` blocks with ``forward`` and exact ``inverse``.

    With ``memory_saving=True`` (default) training keeps only the chain's output, so its
    activation memory is independent of depth; ``memory_saving=False`` runs the same
    arithmetic through plain autograd (for tests and comparisons)."""

    def __init__(self, blocks: Iterable[AdditiveCoupling], memory_saving: bool = True):
        super().__init__()
        blocks = list(blocks)
        for index, block in enumerate(blocks):
            if not isinstance(block, AdditiveCoupling):
                raise ArchitectureError(
                    f"block {index} of a ReversibleSequence is a {type(block).__name__}, "
                    "not an AdditiveCoupling")
        self.blocks = nn.ModuleList(blocks)
        self.memory_saving = bool(memory_saving)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x, inverse=False)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self._run(y, inverse=True)

    def _run(self, x: torch.Tensor, inverse: bool) -> torch.Tensor:
        if len(self.blocks) == 0:
            return x
        if x.dtype in (torch.float16, torch.bfloat16):
            # Under autocast the encoder hands over half precision. The additive stream is kept
            # in float32 (F and G still run in half precision): rebuilding inputs by
            # subtraction in half precision would lose ~3 significant digits per block.
            x = x.float()
        params = tuple(p for p in self.parameters() if p.requires_grad)
        needs_graph = torch.is_grad_enabled() and (x.requires_grad or bool(params))
        if self.memory_saving and needs_graph:
            return _ReversibleSequenceFunction.apply(x, tuple(self.blocks), inverse, *params)
        out = x
        for block in (reversed(self.blocks) if inverse else self.blocks):
            out = block.inverse(out) if inverse else block(out)
        return out

    def extra_repr(self) -> str:
        return f"depth={len(self.blocks)}, memory_saving={self.memory_saving}"
