r"""Samplers for the VP-SDE and guidance (paper 000 eq. 2; paper 001 eqs. 10-12).

Four samplers turn noise ``z ~ N(0, I)`` at ``t_max`` into data at ``t_min``; all consume the
one protocol ``score_fn(x, t)`` (or ``score_fn(x, t, y)`` for conditional / guided scores):

* ``"ode"`` -- the probability-flow ODE (paper 000 eq. 8), ``dx/dt = -\beta/2 (x + s)``,
  integrated with diffrax (:func:`memjax.flow.solve`): adaptive (``num_steps=None``) or a
  fixed grid of ``num_steps`` steps;
* ``"sde"`` -- the reverse-time SDE (paper 000 eq. 2 with ``gamma = 1``)::

      dx = [f(x, t) - g(t)^2 s(x, t)] dt + g(t) d\bar w,    f = -\beta x / 2,  g = \sqrt\beta,

  by Euler-Maruyama backwards on the uniform grid ``t_max = t_0 > ... > t_T = t_min``
  (``h = t_i - t_{i+1}``)::

      x_{i+1} = x_i + h [\beta_i x_i / 2 + \beta_i s(x_i, t_i)] + \sqrt{\beta_i h}\, \xi_i

  With ``denoise=True`` (default; score_sde's "noise removal") the last step adds no noise, so
  the output is the mean of the final transition;
* ``"ddim"`` -- DDIM (Song, Meng & Ermon 2021) in continuous VP time, with
  ``\bar\alpha = \alpha(t)^2`` and ``1 - \bar\alpha = \sigma(t)^2`` taken from the SDE.
  Tweedie gives ``\hat\epsilon = -\sigma_t s`` and ``\hat x_0 = (x - \sigma_t \hat\epsilon)/\alpha_t``; then::

      c = \eta \frac{\sigma_{t'}}{\sigma_t}\sqrt{1 - \alpha_t^2/\alpha_{t'}^2},\qquad
      x_{t'} = \alpha_{t'} \hat x_0 + \sqrt{\sigma_{t'}^2 - c^2}\,\hat\epsilon + c\,\xi

  ``eta = 0`` is deterministic (a first-order exponential integrator of the probability-flow
  ODE, so it converges to the ``"ode"`` sampler as steps grow); ``eta = 1`` is ancestral DDPM.
  ``denoise=True`` drops the noise of the last step;
* ``"dpm++2m"`` -- DPM-Solver++(2M) (Lu et al. 2022, :mod:`memjax.dpm_solver`): the
  second-order multistep exponential integrator of the probability flow in data prediction,
  on the same grid as ``"ddim"``; deterministic.

Guidance is just another score function, so every sampler accepts it:

* :func:`classifier_guidance` -- ``s(x, t) + \lambda \nabla_x \log p_t(y | x)``, the power-prior
  guided score of paper 001 eq. 12 (``p_t(x | y) \propto p_t(y|x)^\lambda p_t(x)``, eq. 11),
  for any time-dependent classifier given as logits or as a log-probability function;
* :func:`classifier_free_guidance` -- ``s(x,t,\varnothing) + \lambda [s(x,t,y) - s(x,t,\varnothing)]``
  for conditional models; ``\lambda = 1`` is the plain conditional score, and since
  ``s(x,t,y) - s(x,t,\varnothing) = \nabla_x \log p_t(y|x)`` the scale has the same power-prior
  meaning as in classifier guidance.

Both take the class (and optionally a per-example scale, :class:`Guide`) as a third argument,
so a whole lambda sweep over many classes runs through one compiled sampler.

The power prior is exact (the guided process samples ``p_0(x|y)``) for ``\lambda \in \{0, 1\}``.
For other ``\lambda`` the per-time tilt ``p_t(x) p_t(y|x)^\lambda`` is not the diffusion of one
distribution, so the samples only approximate ``p_0(x) p_0(y|x)^\lambda``; the exact tilt would
use ``\log E[p_0(y|x_0)^\lambda | x_t]`` (a Doob h-transform) instead. ``tests/test_sampling.py``
checks both statements on a two-Gaussian mixture with noisy labels.

Batched entry points: :func:`make_sampler` builds a jitted, device-sharded sampler once (one
compile for any number of calls, classes and scales); :func:`sample` is the one-shot form.
Every example draws its noise from ``jax.random.fold_in(key, index)``, so samples do not
depend on the batch size or the number of devices.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from memjax import _checks, flow, parallel
from memjax.dpm_solver import dpm_solver_pp_2m
from memjax.sde import VPSDE, ScoreFn

__all__ = ["check_sampler_args", "classifier_free_guidance", "classifier_guidance",
           "ClassifierFreeGuidance", "ClassifierGuidance", "ddim", "dpm_solver_pp_2m", "Guide", "make_sampler",
           "OUTPUTS", "probability_flow", "reverse_sde", "sample", "Sampler", "SAMPLERS",
           "time_grid"]

SAMPLERS = ("ode", "sde", "ddim", "dpm++2m")
OUTPUTS = ("logits", "log_prob")


class Guide(NamedTuple):
    """Per-example conditioning for a guided score: the class and the guidance scale lambda."""

    label: Int[Array, ""]
    scale: Float[Array, ""]


def _call(score_fn, x, t, cond):
    return score_fn(x, t) if cond is None else score_fn(x, t, cond)


def time_grid(sde: VPSDE, num_steps: int, dtype=jnp.float32) -> Float[Array, " n"]:
    """The uniform reverse grid ``t_max = t_0 > t_1 > ... > t_T = t_min`` (``T + 1`` points)."""
    return jnp.linspace(sde.t_max, sde.t_min, num_steps + 1, dtype=dtype)


# -- samplers for one example ------------------------------------------------------------------
def reverse_sde(score_fn: Callable, sde: VPSDE, z: Array, key: PRNGKeyArray, *,
                num_steps: int = 1000, denoise: bool = True, cond: Any = None) -> Array:
    r"""Euler-Maruyama on the reverse-time SDE (paper 000 eq. 2, gamma = 1) for one example.

    Starts at ``z`` (at ``t_max``), takes ``num_steps`` equal steps to ``t_min``. ``cond``, when
    given, is passed as ``score_fn(x, t, cond)``. See the module docstring for the update.
    """
    ts = time_grid(sde, num_steps, z.dtype)
    keys = jax.random.split(key, num_steps)
    last = num_steps - 1

    def step(x, inp):
        i, t, t_next, k = inp
        h = t - t_next
        beta = sde.beta(t)
        s = _call(score_fn, x, t, cond)
        mean = x + h * (0.5 * beta * x + beta * s)
        noise = jnp.sqrt(beta * h) * jax.random.normal(k, x.shape, x.dtype)
        if denoise:
            noise = jnp.where(i == last, jnp.zeros_like(noise), noise)
        return mean + noise, None

    x, _ = jax.lax.scan(step, z, (jnp.arange(num_steps), ts[:-1], ts[1:], keys))
    return x


def ddim(score_fn: Callable, sde: VPSDE, z: Array, key: PRNGKeyArray | None = None, *,
         num_steps: int = 100, eta: float = 0.0, denoise: bool = True, cond: Any = None) -> Array:
    r"""DDIM in continuous VP time for one example (``eta = 0``: deterministic).

    See the module docstring for the update; ``key`` is only used when ``eta > 0``. A schedule
    with a ``ddim_grid(num_steps, dtype)`` method (:class:`memjax.schedules.DiscreteVP`) sets the
    grid: diffusers' ``DDIMScheduler`` timesteps, ending at ``t = 0`` (``alpha = 1``), so the
    last step returns the Tweedie estimate ``\hat x_0`` as diffusers does.
    """
    grid = getattr(sde, "ddim_grid", None)
    ts = grid(num_steps, z.dtype) if grid is not None else time_grid(sde, num_steps, z.dtype)
    key = jax.random.key(0) if key is None else key
    keys = jax.random.split(key, num_steps)
    last = num_steps - 1

    def step(x, inp):
        i, t, t_next, k = inp
        a, s = sde.alpha(t), sde.sigma(t)
        an, sn = sde.alpha(t_next), sde.sigma(t_next)
        eps = -s * _call(score_fn, x, t, cond)
        x0 = (x - s * eps) / a
        c = eta * (sn / s) * jnp.sqrt(jnp.clip(1.0 - (a / an) ** 2, 0.0, None))
        if denoise:
            c = jnp.where(i == last, 0.0, c)
        x_next = an * x0 + jnp.sqrt(jnp.clip(sn**2 - c**2, 0.0, None)) * eps
        if eta != 0:
            x_next = x_next + c * jax.random.normal(k, x.shape, x.dtype)
        return x_next, None

    x, _ = jax.lax.scan(step, z, (jnp.arange(num_steps), ts[:-1], ts[1:], keys))
    return x


def probability_flow(score_fn: Callable, sde: VPSDE, z: Array, *, num_steps: int | None = None,
                     solver: str = "tsit5", rtol: float = 1e-5, atol: float = 1e-5,
                     max_steps: int = 16_384, cond: Any = None) -> Array:
    """The probability-flow ODE from ``t_max`` to ``t_min`` for one example (diffrax)."""
    fn = score_fn if cond is None else (lambda x, t: score_fn(x, t, cond))
    sol = flow.solve(sde.pf_drift(fn), z, sde.t_max, sde.t_min, solver=solver, rtol=rtol,
                     atol=atol, num_steps=num_steps, max_steps=max_steps)
    return sol.y


# -- guidance ----------------------------------------------------------------------------------
def _check_scale(name, scale):
    if scale is None:
        return
    if _checks.is_concrete(scale):
        arr = np.asarray(scale, dtype=np.float64)
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise ValueError(f"{name}: expected a finite guidance scale lambda >= 0, got {scale!r}")


def _split_cond(y, default_scale):
    if isinstance(y, Guide):
        return y.label, y.scale
    return y, default_scale


@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierGuidance:
    r"""``s(x, t) + \lambda \nabla_x \log p_t(y | x)`` (paper 001 eq. 12). Call as ``(x, t, y)``.

    ``y`` is a class index, or a :class:`Guide` ``(label, scale)`` that overrides ``scale`` per
    example. Build with :func:`classifier_guidance`.
    """

    score_fn: ScoreFn
    classifier_fn: Callable
    scale: float
    num_classes: int | None
    output: str

    def log_prob(self, x: Array, t: Array, y: Array) -> Float[Array, ""]:
        r"""``\log p_t(y | x)`` from the classifier."""
        if self.output == "log_prob":
            return self.classifier_fn(x, t, y)
        logits = self.classifier_fn(x, t)
        if logits.ndim != 1 or (self.num_classes is not None and logits.shape[0] != self.num_classes):
            raise ValueError(f"classifier_fn: expected logits of shape ({self.num_classes},) for "
                             f"num_classes={self.num_classes}, got {logits.shape}")
        return jax.nn.log_softmax(logits)[y]

    def __call__(self, x: Array, t: Array, y) -> Array:
        label, scale = _split_cond(y, self.scale)
        grad = jax.grad(lambda v: self.log_prob(v, t, label))(x)
        return self.score_fn(x, t) + jnp.asarray(scale, x.dtype) * grad


def classifier_guidance(score_fn: ScoreFn, classifier_fn: Callable, *, scale: float = 1.0,
                        num_classes: int | None = None, output: str = "logits"
                        ) -> ClassifierGuidance:
    r"""Classifier guidance with the power prior ``p_t(y|x)^\lambda`` (paper 001 eqs. 11-12).

    Args:
      score_fn: the unconditional ``score_fn(x, t)``.
      classifier_fn: a time-dependent classifier for one example: ``classifier_fn(x, t) -> logits
        [num_classes]`` (``output="logits"``) or ``classifier_fn(x, t, y) -> log p_t(y|x)``
        (``output="log_prob"``).
      scale: lambda >= 0 (0: unguided; 1: Bayes' rule ``p_t(x|y)``). A :class:`Guide` passed as
        ``y`` overrides it per example.
      num_classes: when given, the classifier's logits must have this size (checked when the
        sampler is traced, before compilation) and labels must lie in ``[0, num_classes)``.
    Returns:
      a guided score ``fn(x, t, y)``.
    """
    if not callable(score_fn):
        raise ValueError(f"score_fn: expected a callable score_fn(x, t), got {type(score_fn).__name__}")
    if not callable(classifier_fn):
        raise ValueError(f"classifier_fn: expected a callable, got {type(classifier_fn).__name__}")
    _checks.check_choice("output", output, OUTPUTS)
    _checks.check_positive_int("num_classes", num_classes, allow_none=True)
    _check_scale("scale", scale)
    return ClassifierGuidance(score_fn, classifier_fn, scale, num_classes, output)


@dataclasses.dataclass(frozen=True, eq=False)
class ClassifierFreeGuidance:
    r"""``s(x,t,\varnothing) + \lambda [s(x,t,y) - s(x,t,\varnothing)]``. Call as ``(x, t, y)``."""

    cond_score_fn: Callable
    scale: float
    null_label: int
    num_classes: int | None

    def __call__(self, x: Array, t: Array, y) -> Array:
        label, scale = _split_cond(y, self.scale)
        s_u = self.cond_score_fn(x, t, jnp.asarray(self.null_label, jnp.int32))
        s_c = self.cond_score_fn(x, t, label)
        return s_u + jnp.asarray(scale, x.dtype) * (s_c - s_u)


def classifier_free_guidance(cond_score_fn: Callable, *, scale: float = 1.0, null_label: int,
                             num_classes: int | None = None) -> ClassifierFreeGuidance:
    r"""Classifier-free guidance for a conditional score ``cond_score_fn(x, t, y)``.

    ``null_label`` is the label the model was trained with for "no condition". ``scale`` is the
    power-prior lambda (1: the conditional model itself; 0: unconditional).
    """
    if not callable(cond_score_fn):
        raise ValueError(f"cond_score_fn: expected a callable cond_score_fn(x, t, y), got "
                         f"{type(cond_score_fn).__name__}")
    _check_scale("scale", scale)
    _checks.check_positive_int("num_classes", num_classes, allow_none=True)
    if not isinstance(null_label, (int, np.integer)) or null_label < 0:
        raise ValueError(f"null_label: expected a non-negative integer, got {null_label!r}")
    return ClassifierFreeGuidance(cond_score_fn, scale, int(null_label), num_classes)


# -- batched, sharded, jitted --------------------------------------------------------------------
def _as_typed_key(key):
    if key is None:
        raise ValueError("key: expected a jax.random key, got None")
    key = jnp.asarray(key) if not isinstance(key, jax.Array) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if key.shape != ():
            raise ValueError(f"key: expected a single key, got shape {key.shape}")
        return key
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise ValueError(f"key: expected a jax.random key, got dtype {key.dtype} shape {key.shape}")
    return jax.random.wrap_key_data(key)


def check_sampler_args(sampler: str, num_steps, eta, solver, rtol, atol) -> None:
    """Validates sampler options (raises ``ValueError`` before any tracing)."""
    _checks.check_choice("sampler", sampler, SAMPLERS)
    _checks.check_positive_int("num_steps", num_steps, allow_none=sampler == "ode")
    if not np.isscalar(eta) or not np.isfinite(eta) or eta < 0:
        raise ValueError(f"eta: expected a finite number >= 0, got {eta!r}")
    if eta != 0 and sampler != "ddim":
        raise ValueError(f"eta: only the 'ddim' sampler takes eta, got eta={eta} with "
                         f"sampler={sampler!r}")
    if sampler == "ode":
        flow.check_solver_args(solver, num_steps, rtol, atol, 16_384)


class Sampler:
    """A jitted, device-sharded batch sampler; build it with :func:`make_sampler`.

    ``sampler(key, num_samples, cond=None) -> np.ndarray [num_samples, *shape]``. ``cond`` is a
    pytree whose leaves have leading axis ``num_samples`` (labels ``[n]``, or a :class:`Guide` of
    labels and scales); example ``i`` is passed ``cond[i]`` as the score's third argument.
    """

    def __init__(self, score_fn, sde, shape, *, sampler, num_steps, eta, denoise, solver, rtol,
                 atol, max_steps, batch_size, mesh, dtype):
        self.score_fn, self.sde, self.shape = score_fn, sde, tuple(shape)
        self.sampler, self.batch_size, self.dtype = sampler, batch_size, dtype
        self.mesh = parallel.data_mesh() if mesh is None else mesh
        opts = dict(num_steps=num_steps, eta=eta, denoise=denoise, solver=solver, rtol=rtol,
                    atol=atol, max_steps=max_steps)
        self.options = opts

        def one(key_data, cond):
            key = jax.random.wrap_key_data(key_data)
            kz, kn = jax.random.split(key)
            z = sde.prior(kz, self.shape, dtype)
            c = None if isinstance(cond, _NoCond) else cond
            if sampler == "sde":
                return reverse_sde(score_fn, sde, z, kn, num_steps=num_steps, denoise=denoise, cond=c)
            if sampler == "dpm++2m":
                return dpm_solver_pp_2m(score_fn, sde, z, num_steps=num_steps, cond=c)
            if sampler == "ddim":
                return ddim(score_fn, sde, z, kn, num_steps=num_steps, eta=eta, denoise=denoise,
                            cond=c)
            return probability_flow(score_fn, sde, z, num_steps=num_steps, solver=solver,
                                    rtol=rtol, atol=atol, max_steps=max_steps, cond=c)

        self._one = one
        sharding = parallel.data_sharding(self.mesh)
        self._run = jax.jit(jax.vmap(one), in_shardings=sharding, out_shardings=sharding)
        self._checked = set()

    def _check_cond(self, cond, n):
        if isinstance(cond, _NoCond):
            return
        leaves = jax.tree_util.tree_leaves(cond)
        if not leaves:
            raise ValueError("cond: expected arrays with leading axis num_samples, got an empty pytree")
        for leaf in leaves:
            if np.shape(leaf)[:1] != (n,):
                raise ValueError(f"cond: expected every leaf to have leading axis num_samples={n}, "
                                 f"got shape {np.shape(leaf)}")
        num_classes = getattr(self.score_fn, "num_classes", None)
        label = cond.label if isinstance(cond, Guide) else cond
        if isinstance(cond, Guide):
            _check_scale("cond.scale", cond.scale)
        if num_classes is not None and _checks.is_concrete(label):
            lab = np.asarray(label)
            if lab.size and (lab.min() < 0 or lab.max() >= num_classes):
                raise ValueError(f"cond: expected labels in [0, {num_classes}), got "
                                 f"{lab.min()}..{lab.max()}")

    def __call__(self, key: PRNGKeyArray, num_samples: int, cond: Any = None, *,
                 progress: bool = False) -> np.ndarray:
        _checks.check_positive_int("num_samples", num_samples)
        key = _as_typed_key(key)
        cond = _NoCond(np.zeros((num_samples,), np.int32)) if cond is None else \
            jax.tree_util.tree_map(np.asarray, cond)
        self._check_cond(cond, num_samples)
        idx = jnp.arange(num_samples)
        key_data = np.asarray(jax.random.key_data(jax.vmap(lambda i: jax.random.fold_in(key, i))(idx)))
        sig = jax.tree_util.tree_structure(cond), tuple(
            (np.shape(a)[1:], np.asarray(a).dtype) for a in jax.tree_util.tree_leaves(cond))
        if sig not in self._checked:  # trace once (eval_shape): shape errors surface before compiling
            jax.eval_shape(self._one, key_data[0], jax.tree_util.tree_map(lambda a: a[0], cond))
            self._checked.add(sig)
        ndev = self.mesh.devices.size
        chunk = -(-min(self.batch_size, num_samples) // ndev) * ndev
        starts = range(0, num_samples, chunk)
        if progress and jax.process_index() == 0:
            from tqdm.auto import tqdm

            starts = tqdm(starts, total=len(starts), desc=f"sample ({self.sampler})", unit="batch")
        outs = []
        for s in starts:
            part = (key_data[s:s + chunk], jax.tree_util.tree_map(lambda a: a[s:s + chunk], cond))
            part, m = parallel.pad_to_multiple(part, chunk)
            out = self._run(*parallel.shard_batch(part, self.mesh))  # each process: its rows
            outs.append(parallel.fetch(out)[:m])
        return np.concatenate(outs)


@jax.tree_util.register_pytree_node_class
class _NoCond:
    """Placeholder condition (a dummy per-example array) for unconditional samplers."""

    def __init__(self, dummy):
        self.dummy = dummy

    def tree_flatten(self):
        return (self.dummy,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def make_sampler(score_fn: Callable, sde: VPSDE, shape: tuple[int, ...], *, sampler: str = "sde",
                 num_steps: int | None = 1000, eta: float = 0.0, denoise: bool = True,
                 solver: str = "tsit5", rtol: float = 1e-5, atol: float = 1e-5,
                 max_steps: int = 16_384, batch_size: int = 256, mesh=None,
                 dtype=jnp.float32) -> Sampler:
    """Builds a jitted batch sampler (compiled once, reused across calls, classes and scales).

    Args:
      score_fn: ``score_fn(x, t)``, or ``score_fn(x, t, y)`` when called with ``cond`` (a guided
        score from :func:`classifier_guidance` / :func:`classifier_free_guidance`, or a
        conditional model).
      sde: the :class:`~memjax.sde.VPSDE`.
      shape: the shape of one example, e.g. ``(8, 8, 1)``.
      sampler: ``"sde"`` (Euler-Maruyama), ``"ddim"``, ``"dpm++2m"`` (DPM-Solver++(2M),
        :mod:`memjax.dpm_solver`) or ``"ode"`` (probability flow, diffrax).
      num_steps: grid size; for ``"ode"`` ``None`` means adaptive (``solver``, ``rtol``, ``atol``).
      eta: DDIM stochasticity (``"ddim"`` only).
      denoise: drop the noise of the last step (``"sde"``, ``"ddim"``).
      batch_size: examples per device-sharded call (rounded up to a multiple of the devices).
    """
    if not callable(score_fn):
        raise ValueError(f"score_fn: expected a callable, got {type(score_fn).__name__}")
    _checks.check_schedule("sde", sde)
    if not isinstance(shape, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(f"shape: expected a tuple of positive integers, got {shape!r}")
    check_sampler_args(sampler, num_steps, eta, solver, rtol, atol)
    _checks.check_positive_int("batch_size", batch_size)
    _checks.check_positive_int("max_steps", max_steps)
    return Sampler(score_fn, sde, shape, sampler=sampler, num_steps=num_steps, eta=float(eta),
                   denoise=bool(denoise), solver=solver, rtol=rtol, atol=atol,
                   max_steps=max_steps, batch_size=batch_size, mesh=mesh, dtype=dtype)


def sample(score_fn: Callable, sde: VPSDE, key: PRNGKeyArray, num_samples: int,
           shape: tuple[int, ...], *, cond: Any = None, progress: bool = False,
           **kwargs) -> np.ndarray:
    """``num_samples`` samples ``[n, *shape]`` (host NumPy). Keyword arguments: :func:`make_sampler`."""
    return make_sampler(score_fn, sde, shape, **kwargs)(key, num_samples, cond, progress=progress)
