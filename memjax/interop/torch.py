r"""Any PyTorch network as a memjax ``score_fn(x, t)``, unported (issue 13 item 3).

:func:`from_torch` wraps a ``torch.nn.Module`` (put in eval mode; float32 or float64; on its
own device) so that every memjax analysis -- ``volume_growth(method="jvp")``, the ranking, the
samplers, the audit -- runs on it::

    score_fn = memjax.interop.torch.from_torch(unet, sde, (32, 32, 3))          # eps, label 999 t
    score_fn = memjax.interop.torch.from_torch(edm_net, sde, (32, 32, 3), prediction="edm")

Conventions (``x``: one channel-last example; the module sees channel-first batches, so
``[H, W, C]`` becomes ``[b, C, H, W]``; ``alpha = sde.alpha(t)``, ``sigma = sde.sigma(t)``,
``alpha^2 + sigma^2 = 1`` for the VP family; paper 002 eq. 2 for Tweedie)::

    "eps"  (default)   out = module(x, label(t))    s = -out / sigma            (paper 000's U-Net,
                                                                                diffusers DDPM)
    "x0"               out = module(x, label(t))    s = (alpha out - x) / sigma^2
    "v"                out = module(x, label(t))    s = -(sigma x + alpha out) / sigma
                                                    (v = alpha eps - sigma x0, diffusers' v)
    "edm"              D   = module(x / alpha, sigma / alpha)                    (EDM, VE units)
                                                    s = (alpha D - x) / sigma^2

``label`` maps time to the network's conditioning, in JAX: by default paper 000's
``999 t``; pass e.g. a discrete schedule's time-to-timestep map for a diffusers checkpoint.
A module may return a tensor, a tuple whose first element is the tensor, or an object with a
``.sample`` tensor (diffusers). Only the network crosses to the host: the schedule, the
label map and the change of variables are JAX code, differentiated by JAX.

How it runs. The network is a ``jax.pure_callback`` with a ``jax.custom_jvp`` whose rule calls
``torch.func.jvp``, vmapped over the tangents with ``torch.func.vmap``. A custom batching rule
(``jax.custom_batching.custom_vmap``) folds every ``jax.vmap`` around the rule into the torch
batch: ``jax.vmap(jax.jvp)`` over ``N`` tangents -- :func:`memjax.lyapunov.tangent_map`, what
``volume_growth(method="jvp")`` does each step -- is ONE host call evaluating the primal once
and the ``N`` tangent products; vmapping that over ``B`` images (``ease_of_reproduction``) is
still one call, on ``B`` images with ``B x N`` tangents; a vmapped plain call is one batched
forward. With ``tangent_chunk`` a step is one primal call plus one call per chunk of tangents
(each repeats the primal, as in pure JAX). Precision: the module computes in its own dtype
(that of its first floating parameter or buffer); a float64 JAX input to a float32 module is
rounded to float32 on the way in and the result returned as float64 (float32 accuracy); call
``module.double()`` for float64 end to end (64-bit arrays cross the callback as bit patterns,
so the ``jax.enable_x64`` context manager works as well as the global flag). Forward mode
only: ``jax.grad`` / ``jax.vjp`` / ``jax.linearize`` and second derivatives (jvp of jvp, e.g.
the implicit solvers' dense Jacobians) raise a ``ValueError``; so does differentiating with
respect to ``t``. Several JAX devices: the batch is gathered and the callback runs once, on
device 0's host (results agree; XLA logs an "Involuntary full rematerialization" warning), so
give ``ease_of_reproduction`` a one-device mesh, ``memjax.parallel.data_mesh(jax.devices()[:1])``:
torch, not XLA, runs the network.

Cost of the host round trip (``benchmarks/torch_bridge.py``, table in
``benchmarks/results/torch_bridge.md``; 2-core CPU box at load 12-17, torch on one thread,
32x32x3). A bridged call leaves the compiled XLA program for a Python callback, copies its
inputs and outputs between XLA and torch (``B (N + 1) D`` floats each way, plus the
channel-last / channel-first transposes) and hands the GIL to XLA's callback thread.
``volume_growth(method="jvp")`` makes exactly one such call per step (``1 + ceil((N + 1) /
tangent_chunk)`` with ``tangent_chunk``); ``ease_of_reproduction`` one per step per image batch.
Measured against the same torch calls made directly, interleaved in one process: the round trip
alone (a module that does no work) costs ~0.4 ms for a plain call and ~1-2 ms for a jvp call
(~7 ms at N = 100, mostly the copies); a tiny conv net (1.8k parameters) therefore runs ~2x
slower bridged at N <= 1 and within ~1.2x at N = 10, 100; for a 4.4M-parameter diffusers U-Net
(~130 ms per forward) the bridge is within noise of direct torch (0.94-1.08x) at every N. The
network itself is not compiled by XLA: it runs at torch's speed on torch's device. Port it
(``memjax.interop.diffusers`` for ``UNet2DModel``) to run on TPU, shard it or fuse the analysis.
"""

from __future__ import annotations

import functools
import itertools
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.custom_derivatives import SymbolicZero
from jaxtyping import Array, Float

__all__ = ["PREDICTIONS", "TorchFunction", "from_torch", "network", "paper000_label"]

PREDICTIONS = ("eps", "x0", "v", "edm")


@functools.cache
def _torch():
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without torch
        raise ImportError("memjax.interop.torch needs PyTorch: pip install 'memjax[interop]'") from e
    # torch.func.jvp loads its forward-mode decompositions on first use, through torch.jit.script,
    # which warns (FutureWarning) in torch 2.14: load them here, once, quietly.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script", category=FutureWarning)
        try:
            from torch._decomp import decompositions_for_jvp  # noqa: F401
        except ImportError:  # pragma: no cover
            pass
    return torch


def paper000_label(t: Float[Array, ""]) -> Float[Array, ""]:
    """Paper 000's time-to-label map: the network is called as ``model(x, 999 t)``."""
    return 999.0 * t


# -- host side: numpy <-> torch, channel-last <-> channel-first ------------------------------------
def _as_tensor(out: Any):
    """The tensor a module returned: itself, ``out[0]`` of a tuple, or diffusers' ``out.sample``."""
    torch = _torch()
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    sample = getattr(out, "sample", None)
    if isinstance(sample, torch.Tensor):
        return sample
    raise ValueError(f"module: expected it to return a tensor, a tuple starting with one, or an "
                     f"object with a .sample tensor (diffusers), got {type(out).__name__}")


class _Host:
    """Runs the module on NumPy batches: ``x [b, *shape]`` channel-last, conditioning ``c [b]``."""

    def __init__(self, module, example_shape: tuple[int, ...]):
        torch = _torch()
        self.module = module
        self.shape = example_shape
        floats = [p for p in itertools.chain(module.parameters(), module.buffers())
                  if p.is_floating_point()]
        self.device = floats[0].device if floats else torch.device("cpu")
        self.dtype = floats[0].dtype if floats else torch.get_default_dtype()
        nd = len(example_shape)
        # [b, *spatial, C] <-> [b, C, *spatial]; a 1-D example ([C], e.g. an MLP) is left as is.
        self._cf = (0, nd) + tuple(range(1, nd))
        self._cl = (0,) + tuple(range(2, nd + 1)) + (1,)
        self.torch_shape = tuple(example_shape[-1:] + example_shape[:-1])

    def to_torch(self, a: np.ndarray):
        t = _torch().tensor(np.asarray(a), dtype=self.dtype, device=self.device)
        return t.permute(self._cf).contiguous() if len(self.shape) > 1 else t

    def to_numpy(self, t, dtype) -> np.ndarray:
        if len(self.shape) > 1:
            t = t.permute(self._cl)
        return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=dtype)

    def label(self, c: np.ndarray):
        return _torch().tensor(np.asarray(c), dtype=self.dtype, device=self.device)

    def call(self, z, c):
        return _as_tensor(self.module(z, c))

    def forward(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """``x [*lead, *shape]``, ``c [*lead]`` (any leading batch dims, as ``jax.vmap`` makes)."""
        lead = x.shape[:x.ndim - len(self.shape)]
        xb = x.reshape((-1,) + self.shape)
        with _torch().no_grad():
            y = self.call(self.to_torch(xb), self.label(np.reshape(c, -1)))
        return self.to_numpy(y, x.dtype).reshape(lead + self.shape)

    def jvp(self, x: np.ndarray, c: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Primal ``[B, *shape]`` and ``M`` tangent products ``[B, M, *shape]`` in one call.

        The batched network is differentiated at the whole batch ``X`` with tangents ``V_m``
        ``[B, ...]``: examples are independent in eval mode, so row ``b`` of ``J V_m`` is the
        jvp of example ``b``. ``torch.func.vmap`` over ``m`` evaluates the primal once.
        """
        torch = _torch()
        b, m = v.shape[:2]
        xs, cs = self.to_torch(x), self.label(c)
        vs = self.to_torch(v.reshape((b * m,) + self.shape)).reshape((b, m) + self.torch_shape)
        vs = vs.transpose(0, 1)  # [M, B, ...]
        f = lambda z: self.call(z, cs)
        # the math attention kernel: the fused CPU / flash kernels have no forward-mode rule
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            if m == 1:
                y, jv = torch.func.jvp(f, (xs,), (vs[0],))
                jv = jv[None]
            else:
                y, jv = torch.func.vmap(lambda u: torch.func.jvp(f, (xs,), (u,)),
                                        out_dims=(None, 0))(vs)
        jv = jv.transpose(0, 1).reshape((b * m,) + self.torch_shape)
        return self.to_numpy(y, x.dtype), self.to_numpy(jv, v.dtype).reshape(v.shape)


# -- JAX side: pure_callback + custom_vmap + custom_jvp --------------------------------------------
def _reverse_mode_error() -> ValueError:
    return ValueError(
        "score_fn: the torch bridge supports forward-mode differentiation only (jax.jvp, "
        "jax.jacfwd, jax.vmap of jvp: volume_growth(method='jvp')); reverse mode (jax.grad, "
        "jax.vjp), jax.linearize and second derivatives (jvp of jvp, e.g. the implicit "
        "solvers' dense Jacobians) are not supported. Use a ported network for those.")


def _is_linearize_tangent(tangent) -> bool:
    """True when a jvp-rule tangent belongs to JAX's linearize (jax.grad / vjp / linearize).

    There the tangents are partial-evaluation unknowns (``JaxprTracer``); forward-mode
    tangents never are. Looks through ``jax.vmap`` tracers. (A JAX internal: if it moves,
    JAX's own "Linearization failed" error is raised instead of ours.)
    """
    try:
        from jax._src.interpreters.batching import BatchTracer
        from jax._src.interpreters.partial_eval import JaxprTracer
    except ImportError:  # pragma: no cover
        return False
    while isinstance(tangent, BatchTracer):
        tangent = tangent.val
    return isinstance(tangent, JaxprTracer)


@jax.custom_vjp
def _forward_only(v):
    return v


def _forward_only_fwd(v):
    return v, None


def _forward_only_bwd(_, ct):
    raise _reverse_mode_error()


_forward_only.defvjp(_forward_only_fwd, _forward_only_bwd)


# 64-bit arrays cross the callback boundary as uint32 pairs. JAX canonicalises callback
# arguments and results in XLA's thread, which does not see a `jax.enable_x64` context entered
# in the caller's thread: float64 would silently become float32. Bit patterns cross unchanged.
def _wide(dtype) -> bool:
    return np.dtype(dtype).itemsize == 8


def _encode(a: Array) -> Array:
    return jax.lax.bitcast_convert_type(a, jnp.uint32) if _wide(a.dtype) else a


def _decode(a: Array, dtype) -> Array:
    return jax.lax.bitcast_convert_type(a, dtype) if _wide(dtype) else a


def _spec(x) -> jax.ShapeDtypeStruct:
    if _wide(x.dtype):
        return jax.ShapeDtypeStruct(tuple(x.shape) + (2,), np.uint32)
    return jax.ShapeDtypeStruct(x.shape, x.dtype)


def _host_decode(a, dtype) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(a).view(dtype)[..., 0] if _wide(dtype) else a.astype(dtype)


def _host_encode(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint32).reshape(a.shape + (2,)) if _wide(a.dtype) else a


def _tangent_call(host: _Host) -> Callable:
    """``(x [B, *S], c [B], v [B, M, *S]) -> (y [B, *S], jv [B, M, *S])``, one host call
    however many ``jax.vmap``\\ s surround it (each is folded into ``B`` or ``M``)."""

    @custom_vmap
    def call(x, c, v):
        dx, dc, dv = x.dtype, c.dtype, v.dtype

        def host_fn(x, c, v):
            y, jv = host.jvp(_host_decode(x, dx), _host_decode(c, dc), _host_decode(v, dv))
            return _host_encode(y), _host_encode(jv)

        y, jv = jax.pure_callback(host_fn, (_spec(x), _spec(v)), _encode(x), _encode(c),
                                  _encode(v))
        return _decode(y, dx), _decode(jv, dv)

    @call.def_vmap
    def rule(k, in_batched, x, c, v):
        x_batched, c_batched, v_batched = in_batched
        if not (x_batched or c_batched):  # vmap over tangents only: fold k into M
            b, m, rest = v.shape[1], v.shape[2], v.shape[3:]
            y, jv = call(x, c, jnp.swapaxes(v, 0, 1).reshape((b, k * m) + rest))
            return (y, jnp.swapaxes(jv.reshape((b, k, m) + rest), 0, 1)), (False, True)
        # vmap over examples (or times): fold k into B
        x = x if x_batched else jnp.broadcast_to(x, (k,) + x.shape)
        c = c if c_batched else jnp.broadcast_to(c, (k,) + c.shape)
        v = v if v_batched else jnp.broadcast_to(v, (k,) + v.shape)
        b = x.shape[1]
        y, jv = call(x.reshape((k * b,) + x.shape[2:]), c.reshape(k * b),
                     v.reshape((k * b,) + v.shape[2:]))
        return (y.reshape(x.shape), jv.reshape(v.shape)), (True, True)

    @jax.custom_jvp
    def guarded(x, c, v):  # differentiating the jvp rule itself: a second derivative
        return call(x, c, v)

    @guarded.defjvp
    def guarded_jvp(primals, tangents):
        raise _reverse_mode_error()

    return guarded


class TorchFunction:
    """The module as a JAX function of one example: ``f(x [*S], c []) -> [*S]``.

    ``c`` is the conditioning (label or EDM sigma) the module receives. Differentiable in
    forward mode with respect to ``x`` (see the module docstring); jit- and vmap-compatible.
    """

    def __init__(self, module, example_shape: tuple[int, ...]):
        self.host = _Host(module, example_shape)
        self.example_shape = example_shape
        host, tangents = self.host, _tangent_call(self.host)

        def primal(x, c):
            dx, dc = x.dtype, c.dtype
            host_fn = lambda x, c: _host_encode(host.forward(_host_decode(x, dx),
                                                             _host_decode(c, dc)))
            y = jax.pure_callback(host_fn, _spec(x), _encode(x), _encode(c),
                                  vmap_method="broadcast_all")
            return _decode(y, dx)

        @jax.custom_jvp
        def f(x, c):
            return primal(x, c)

        @functools.partial(f.defjvp, symbolic_zeros=True)
        def f_jvp(primals, tangents_in):
            (x, c), (dx, dc) = primals, tangents_in
            if not isinstance(dc, SymbolicZero):
                raise ValueError("t: the torch bridge differentiates with respect to x only; got a "
                                 "tangent for the time / conditioning (forward-mode in x only)")
            if _is_linearize_tangent(dx):
                raise _reverse_mode_error()
            y, jv = tangents(x[None], c[None], dx[None, None])
            return y[0], _forward_only(jv[0, 0])

        self._f = f

    def __call__(self, x: Float[Array, "*shape"], c: Float[Array, ""]) -> Float[Array, "*shape"]:
        x = jnp.asarray(x)
        if tuple(x.shape) != self.example_shape:
            raise ValueError(f"x: expected one example of shape {self.example_shape} (the "
                             f"example_shape given to the bridge), got {tuple(x.shape)}; vmap "
                             "for batches")
        c = jnp.asarray(c, x.dtype)
        if c.shape != ():
            raise ValueError(f"c: expected a scalar conditioning (label or sigma), got shape "
                             f"{c.shape}")
        return self._f(x, c)


def _check_module(module, example_shape) -> tuple[int, ...]:
    torch = _torch()
    if not isinstance(module, torch.nn.Module):
        raise ValueError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if (not isinstance(example_shape, (tuple, list)) or not example_shape
            or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0
                       for n in example_shape)):
        raise ValueError(f"example_shape: expected the shape of one channel-last example, a "
                         f"non-empty tuple of positive ints such as (32, 32, 3), got {example_shape!r}")
    return tuple(int(n) for n in example_shape)


def _probe(host: _Host, label_value: float) -> None:
    """One call on zeros, before any JAX compile: the module must map ``[1, *in]`` to ``[1, *in]``."""
    torch = _torch()
    shape = (1,) + host.torch_shape
    x = torch.zeros(shape, dtype=host.dtype, device=host.device)
    c = torch.full((1,), float(label_value), dtype=host.dtype, device=host.device)
    try:
        with torch.no_grad():
            out = host.module(x, c)
    except Exception as e:
        raise ValueError(f"module: calling it as module(x {list(shape)}, c [1]) failed "
                         f"({type(e).__name__}: {e}); check example_shape (channel-last) and the "
                         "call convention") from e
    y = _as_tensor(out)
    if tuple(y.shape) != shape:
        raise ValueError(f"module: expected an output of the input's shape {list(shape)} "
                         f"(channel-first), got {list(y.shape)}; a score_fn needs an output "
                         "shaped like its input")


def network(module, example_shape: Sequence[int], *, probe_label: float = 0.0) -> TorchFunction:
    """The bridged module ``f(x, c)`` (no schedule): see :class:`TorchFunction`.

    Puts ``module`` in eval mode and probes it once (``probe_label`` as conditioning).
    """
    shape = _check_module(module, example_shape)
    module.eval()
    fn = TorchFunction(module, shape)
    _probe(fn.host, probe_label)
    return fn


def _check_sde(sde) -> None:
    for name in ("alpha", "sigma"):
        if not callable(getattr(sde, name, None)):
            raise ValueError(f"sde: expected a VP schedule with alpha(t) and sigma(t) (e.g. "
                             f"memjax.VPSDE), got {type(sde).__name__} without {name}")


def from_torch(module, sde, example_shape: Sequence[int], *, prediction: str = "eps",
               label: Callable[[Array], Array] | None = None) -> Callable[[Array, Array], Array]:
    r"""A memjax ``score_fn(x, t)`` for a PyTorch network (conventions in the module docstring).

    Args:
      module: a ``torch.nn.Module`` called as ``module(x [b, C, H, W], c [b])``; put in eval
        mode here. It stays on its device and in its dtype.
      sde: the VP schedule the network was trained with (``sde.alpha(t)``, ``sde.sigma(t)``).
      example_shape: one channel-last example, e.g. ``(32, 32, 3)``.
      prediction: ``"eps"``, ``"x0"``, ``"v"`` (the network's output, called with
        ``label(t)``), or ``"edm"`` (a VE denoiser ``D(x / alpha, sigma / alpha)``).
      label: JAX map from ``t`` to the conditioning for eps / x0 / v (default
        :func:`paper000_label`, ``999 t``); not used by ``"edm"``.

    Returns:
      ``score_fn(x, t)`` for one example; vmap, jit and ``jax.jvp`` (forward mode in ``x``) apply.

    Raises:
      ValueError: not a module, bad ``example_shape`` / ``prediction`` / ``label`` / ``sde``, or
        a module whose output shape differs from its input (checked by one call, before any
        JAX compile).
    """
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction: expected one of {PREDICTIONS}, got {prediction!r}")
    label = paper000_label if label is None else label
    if not callable(label):
        raise ValueError(f"label: expected a callable t -> conditioning, got {type(label).__name__}")
    _check_sde(sde)
    t_mid = 0.5 * (float(getattr(sde, "t_min", 0.0)) + float(getattr(sde, "t_max", 1.0)))
    if prediction == "edm":
        probe = float(sde.sigma(t_mid) / sde.alpha(t_mid))
    else:
        probe = float(np.asarray(label(jnp.asarray(t_mid, jnp.float32))))
    net = network(module, example_shape, probe_label=probe)

    def score_fn(x: Float[Array, "*shape"], t: Float[Array, ""]) -> Float[Array, "*shape"]:
        x = jnp.asarray(x)
        t = jnp.asarray(t, x.dtype)
        alpha, sigma = sde.alpha(t), sde.sigma(t)
        if prediction == "edm":  # Tweedie in VE units: x_ve = x / alpha, sigma_ve = sigma / alpha
            return (alpha * net(x / alpha, sigma / alpha) - x) / sigma**2
        out = net(x, jnp.asarray(label(t), x.dtype))
        if prediction == "eps":
            return -out / sigma
        if prediction == "x0":
            return (alpha * out - x) / sigma**2
        return -(sigma * x + alpha * out) / sigma  # v = alpha eps - sigma x0

    score_fn.network = net
    return score_fn
