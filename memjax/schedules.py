r"""The variance-preserving family: linear, cosine and discrete (checkpoint) noise schedules.

Every member shares the kernel of paper 000 eqs. 4-6, ``x_t = \alpha(t) x_0 + \sigma(t) z`` with
``\alpha = e^{-m}``, ``\sigma^2 = 1 - e^{-2m}``, ``m(t) = \int_0^t \beta/2`` and the dynamics of
:class:`memjax.sde.VPSchedule`, so ``flow``, ``volume``, ``sampling``, ``side``, ``audit`` and
``objectives`` take any of them as their ``sde``:

* :class:`~memjax.sde.VPSDE` -- linear ``\beta(t)`` (score_sde, paper 000), re-exported here;
* :class:`CosineVP` -- Nichol & Dhariwal (2021) eq. 17, ``\bar\alpha(t) = f(t)/f(0)``,
  ``f(t) = \cos^2(\frac{t + s}{1 + s}\frac\pi2)``, with their clipping of ``\beta``;
* :class:`DiscreteVP` -- the table ``\bar\alpha_i = \prod_{j \le i}(1 - \beta_j)`` of a DDPM
  checkpoint (diffusers' ``DDPMScheduler``), exact at the training timesteps.

**Discrete time.** A model trained on ``N`` timesteps ``i = 0 .. N-1`` saw
``x = \sqrt{\bar\alpha_i} x_0 + \sqrt{1 - \bar\alpha_i} z``. :class:`DiscreteVP` places timestep
``i`` at ``t_i = (i + 1) / N`` and interpolates ``\log\bar\alpha`` piecewise-linearly in ``t``
between the knots ``(0, 0), (t_0, \log\bar\alpha_0), ..., (t_{N-1}, \log\bar\alpha_{N-1})``, so
``\alpha(t_i)^2 = \bar\alpha_i`` exactly and the rate is piecewise constant::

    \beta(t) = 2\,dm/dt = -N \log(1 - \beta_i)   for t in (t_{i-1}, t_i]   (\approx N \beta_i)

The network's label is ``timestep(t) = N t - 1`` (continuous; equal to ``i`` at ``t_i``).

**Paper 000's convention** (its code calls ``model(x, 999 t)`` on the continuous linear SDE
with ``\beta \in [0.1, 20]``) is :func:`linear_timestep` with ``VPSDE(N \beta_{start}, N \beta_{end})``.
It differs from the table in both places: the label ``999 t`` vs ``1000 t - 1`` (equal only at
``t = 1``; half a step apart at ``t = 0.5``) and ``\log\bar\alpha``, which the continuous SDE gets
wrong by up to ~1 % (``-10.050`` vs ``-10.118`` at ``i = 999``, ``-2.537`` vs ``-2.544`` at
``i = 499`` for diffusers' default betas ``1e-4 .. 0.02``). The table is the exact choice for a
diffusers checkpoint; the continuous SDE is an approximation of it.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from memjax.sde import VPSDE, VPSchedule

__all__ = ["VPSDE", "VPSchedule", "CosineVP", "DiscreteVP", "BETA_SCHEDULES", "betas_from_config",
           "linear_timestep"]

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")


def _check_span(cls: str, t_min, t_max, upper: float = math.inf) -> None:
    for name, value in (("t_min", t_min), ("t_max", t_max)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{cls}.{name}: expected a finite number, got {value!r}")
    if not 0 <= t_min < t_max <= upper:
        raise ValueError(f"{cls}.t_min/t_max: expected 0 <= t_min < t_max <= {upper:g}, got "
                         f"{t_min}, {t_max}")


# -- cosine (Nichol & Dhariwal 2021) ---------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CosineVP(VPSchedule):
    r"""The cosine schedule in continuous time, ``\bar\alpha(t) = f(t) / f(0)`` (N&D eq. 17).

    With ``\phi(t) = \frac{t + s}{1 + s}\frac\pi2``::

        m(t) = \log\cos\phi(0) - \log\cos\phi(t),      \beta(t) = 2 m'(t) = \frac{\pi}{1+s}\tan\phi(t)

    ``\beta`` diverges at ``t = 1``; Nichol & Dhariwal clip the discrete ``\beta_i \le 0.999``.
    On ``N`` steps of length ``1/N`` that caps the per-step log-decay ``-\log(1 - \beta_i)``, i.e.
    the continuous rate ``\beta(t) \le \beta_{cap} = -N \log(1 - 0.999) \approx 6908`` for
    ``N = 1000`` (the default ``max_beta``). Past ``t_c`` (where ``\beta(t_c) = \beta_{cap}``, about
    ``1 - 3 \cdot 10^{-4}``) the rate stays at the cap and ``m`` grows linearly, so ``m`` stays
    the integral of ``\beta`` and ``\bar\alpha(1) \approx 3 \cdot 10^{-8}`` is finite.
    """

    s: float = 0.008
    max_beta: float = -1000.0 * math.log(1.0 - 0.999)
    t_min: float = 1e-3
    t_max: float = 1.0

    def __post_init__(self):
        _check_span("CosineVP", self.t_min, self.t_max, upper=1.0)
        if not isinstance(self.s, (int, float)) or not 0 < self.s < 1:
            raise ValueError(f"CosineVP.s: expected a number in (0, 1), got {self.s!r}")
        if not isinstance(self.max_beta, (int, float)) or not self.max_beta > self._rate(0.0):
            raise ValueError(f"CosineVP.max_beta: expected a number above beta(0) = "
                             f"{self._rate(0.0):.4g}, got {self.max_beta!r}")

    def _phi(self, t):
        return (t + self.s) / (1.0 + self.s) * (0.5 * math.pi)

    def _rate(self, t: float) -> float:
        return math.pi / (1.0 + self.s) * math.tan(self._phi(t))

    @property
    def t_clip(self) -> float:
        """``t_c``: where ``beta(t)`` reaches ``max_beta`` (``>= 1``: never within ``[0, 1]``)."""
        phi = math.atan(self.max_beta * (1.0 + self.s) / math.pi)
        return phi / (0.5 * math.pi) * (1.0 + self.s) - self.s

    def _m_unclipped(self, t):
        return math.log(math.cos(self._phi(0.0))) - jnp.log(jnp.cos(self._phi(t)))

    def beta(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""``\min(\frac{\pi}{1+s}\tan\phi(t), \beta_{cap})``."""
        t = jnp.asarray(t)
        tc = min(self.t_clip, 1.0)
        rate = math.pi / (1.0 + self.s) * jnp.tan(self._phi(jnp.minimum(t, tc)))
        return jnp.where(t < tc, rate, self.max_beta)

    def m(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""``\log\cos\phi(0) - \log\cos\phi(t)`` up to ``t_c``, then ``+ \beta_{cap} (t - t_c) / 2``."""
        t = jnp.asarray(t)
        tc = min(self.t_clip, 1.0)
        m_c = self._m_unclipped(jnp.minimum(t, tc))
        return m_c + 0.5 * self.max_beta * jnp.maximum(t - tc, 0.0)

    def alpha_bar(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""``\bar\alpha(t) = \alpha(t)^2`` (``f(t)/f(0)`` before the clip)."""
        return jnp.exp(-2.0 * self.m(t))

    def t_from_sigma(self, sigma: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""Inverse of ``sigma(t)`` through ``m = -\tfrac12\log(1 - \sigma^2)``."""
        m = -0.5 * jnp.log1p(-jnp.asarray(sigma) ** 2)
        tc = min(self.t_clip, 1.0)
        m_c = float(self._m_unclipped(tc))
        cos_phi = math.cos(self._phi(0.0)) * jnp.exp(-jnp.minimum(m, m_c))
        t = jnp.arccos(cos_phi) / (0.5 * math.pi) * (1.0 + self.s) - self.s
        return jnp.where(m <= m_c, t, tc + 2.0 * (m - m_c) / self.max_beta)


# -- the discrete table of a checkpoint ------------------------------------------------------------
def _cosine_betas(n: int, max_beta: float = 0.999) -> np.ndarray:
    """diffusers' ``betas_for_alpha_bar(n, "cosine")``: ``min(1 - f(t_{i+1})/f(t_i), 0.999)``."""
    def f(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return np.array([min(1 - f((i + 1) / n) / f(i / n), max_beta) for i in range(n)])


def betas_from_config(config: Mapping) -> np.ndarray:
    """The betas of a diffusers scheduler config (``DDPMScheduler`` / ``DDIMScheduler`` conventions).

    Reads ``num_train_timesteps`` (1000), ``beta_start`` (1e-4), ``beta_end`` (0.02),
    ``beta_schedule`` (``"linear"``) and ``trained_betas``; the betas are rounded to float32 as
    diffusers stores them. Other keys (``clip_sample``, ``variance_type``, ...) concern samplers
    and are ignored.
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config: expected a dict (a scheduler_config.json), got {type(config).__name__}")
    n = config.get("num_train_timesteps", 1000)
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ValueError(f"num_train_timesteps: expected an integer >= 2, got {n!r}")
    if config.get("trained_betas") is not None:
        return np.asarray(np.asarray(config["trained_betas"], np.float32), np.float64)
    start, end = config.get("beta_start", 1e-4), config.get("beta_end", 0.02)
    for name, value in (("beta_start", start), ("beta_end", end)):
        if not isinstance(value, (int, float)) or not 0 < value < 1:
            raise ValueError(f"{name}: expected a number in (0, 1), got {value!r}")
    kind = config.get("beta_schedule", "linear")
    if kind == "linear":
        betas = np.linspace(start, end, n, dtype=np.float32)
    elif kind == "scaled_linear":
        betas = np.linspace(start**0.5, end**0.5, n, dtype=np.float32) ** 2
    elif kind == "squaredcos_cap_v2":
        betas = _cosine_betas(n)
    else:
        raise ValueError(f"beta_schedule: expected one of {BETA_SCHEDULES}, got {kind!r}")
    return np.asarray(np.asarray(betas, np.float32), np.float64)


@dataclasses.dataclass(frozen=True)
class DiscreteVP(VPSchedule):
    r"""The exact schedule of a model trained on ``N`` discrete timesteps (module docstring).

    ``betas`` holds ``\beta_0 .. \beta_{N-1}``; ``\alpha(t_i)^2 = \bar\alpha_i`` at
    ``t_i = (i + 1)/N``, ``\log\bar\alpha`` is piecewise linear in between (and from
    ``(0, 0)`` to ``t_0``), ``\beta(t)`` is its piecewise-constant derivative. ``t_min``
    defaults to ``t_0 = 1/N`` (timestep 0), ``t_max`` to ``1`` (timestep ``N - 1``).
    Build it with :meth:`from_betas` or :meth:`from_scheduler_config`.
    """

    betas: tuple[float, ...]
    t_min: float | None = None
    t_max: float = 1.0
    _log_abar: tuple[float, ...] = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        b = np.asarray(self.betas, np.float64)
        if b.ndim != 1 or b.size < 2 or not np.all(np.isfinite(b)) or b.min() <= 0 or b.max() >= 1:
            raise ValueError("DiscreteVP.betas: expected at least two numbers in (0, 1), got "
                             f"{np.array2string(b, threshold=6)}")
        object.__setattr__(self, "betas", tuple(float(v) for v in b))
        if self.t_min is None:
            object.__setattr__(self, "t_min", 1.0 / b.size)
        _check_span("DiscreteVP", self.t_min, self.t_max, upper=1.0)
        object.__setattr__(self, "_log_abar", tuple(np.concatenate([[0.0], np.cumsum(np.log1p(-b))])))

    @classmethod
    def from_betas(cls, betas, *, t_min: float | None = None, t_max: float = 1.0) -> DiscreteVP:
        """The table of ``betas`` ``[N]`` (any array-like of numbers in (0, 1))."""
        return cls(tuple(np.asarray(betas, np.float64).reshape(-1)), t_min=t_min, t_max=t_max)

    @classmethod
    def from_scheduler_config(cls, config: Mapping, **kwargs) -> DiscreteVP:
        """The table of a diffusers ``scheduler_config.json`` (see :func:`betas_from_config`)."""
        return cls.from_betas(betas_from_config(config), **kwargs)

    @property
    def num_timesteps(self) -> int:
        return len(self.betas)

    def alphas_cumprod(self) -> np.ndarray:
        r"""``\bar\alpha_i``, ``i = 0 .. N-1`` (float64), diffusers' ``alphas_cumprod``."""
        return np.exp(np.asarray(self._log_abar[1:]))

    def _knots(self, dtype):
        n = self.num_timesteps
        return jnp.arange(n + 1, dtype=dtype) / n, jnp.asarray(self._log_abar, dtype)

    def m(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""``-\tfrac12 \log\bar\alpha`` interpolated linearly in ``t`` between the knots."""
        t = jnp.asarray(t)
        dtype = jnp.result_type(t, jnp.float32)
        ts, log_abar = self._knots(dtype)
        return -0.5 * jnp.interp(t.astype(dtype), ts, log_abar)

    def beta(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""``-N \log(1 - \beta_i)`` on ``(t_{i-1}, t_i]`` (the slope of ``2 m``)."""
        t = jnp.asarray(t)
        dtype = jnp.result_type(t, jnp.float32)
        n = self.num_timesteps
        rates = jnp.asarray(-n * np.log1p(-np.asarray(self.betas)), dtype)
        i = jnp.clip(jnp.ceil(t.astype(dtype) * n - 1e-4).astype(jnp.int32) - 1, 0, n - 1)
        return rates[i]

    def t_from_sigma(self, sigma: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""Inverse of ``sigma(t)``: ``m`` is increasing and piecewise linear, so interpolate back."""
        sigma = jnp.asarray(sigma)
        dtype = jnp.result_type(sigma, jnp.float32)
        ts, log_abar = self._knots(dtype)
        m = -0.5 * jnp.log1p(-sigma.astype(dtype) ** 2)
        return jnp.interp(m, -0.5 * log_abar, ts)

    # -- time <-> network label ------------------------------------------------------------------
    def timestep(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        """The network's (continuous) timestep label ``N t - 1``: ``i`` at ``t_i = (i + 1)/N``."""
        return self.num_timesteps * jnp.asarray(t) - 1.0

    def t_from_timestep(self, i) -> Float[Array, "..."]:
        """``t_i = (i + 1) / N``, the time of timestep ``i``."""
        return (jnp.asarray(i, jnp.float32) + 1.0) / self.num_timesteps

    def ddim_grid(self, num_steps: int, dtype=jnp.float32) -> Float[Array, " n"]:
        r"""diffusers' ``DDIMScheduler`` grid (``timestep_spacing="leading"``, ``steps_offset=0``,
        ``set_alpha_to_one=True``): timesteps ``k \lfloor N / T \rfloor``, ``k = T-1 .. 0``, then
        ``t = 0`` (``\bar\alpha = 1``), as ``T + 1`` decreasing times."""
        n = self.num_timesteps
        if not isinstance(num_steps, int) or not 1 <= num_steps <= n:
            raise ValueError(f"num_steps: expected an integer in [1, {n}] (the training timesteps), "
                             f"got {num_steps!r}")
        steps = (np.arange(num_steps) * (n // num_steps))[::-1]
        return jnp.asarray(np.concatenate([(steps + 1.0) / n, [0.0]]), dtype)


def linear_timestep(t: Float[Array, "..."], num_train_timesteps: int = 1000) -> Float[Array, "..."]:
    """Paper 000's label ``(N - 1) t`` (``999 t``) for a network used on the continuous linear
    :class:`VPSDE`; see the module docstring for where it differs from :meth:`DiscreteVP.timestep`."""
    return (num_train_timesteps - 1) * jnp.asarray(t)
