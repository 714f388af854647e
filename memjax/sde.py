r"""The variance-preserving SDE (paper 000, eqs. 3-8; Song et al. 2021).

Forward SDE (eq. 3)::

    dx = -\tfrac12 \beta(t) x\,dt + \sqrt{\beta(t)}\,dw,     \beta(t) = \beta_{min} + t(\beta_{max}-\beta_{min})

Perturbation kernel (eqs. 4-6)::

    p(x_t | x_0) = N(\alpha(t) x_0, \sigma(t)^2 I),  \alpha = e^{-m},  \sigma^2 = v = 1 - e^{-2m},
    m(t) = \int_0^t \beta/2 = \tfrac12 \beta_{min} t + \tfrac14 (\beta_{max}-\beta_{min}) t^2

Probability-flow ODE (eq. 8), the deterministic process whose marginals equal the SDE's::

    dx/dt = f(x,t) - \tfrac12 g(t)^2 s(x,t) = -\tfrac12 \beta(t) [x + s(x,t)]

Time runs from ``t_min`` (data) to ``t_max`` (noise); "forward" means data to noise.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from memjax import _checks

__all__ = ["ScoreFn", "VPSchedule", "VPSDE"]

ScoreFn = Callable[[Array, Array], Array]
"""``score_fn(x, t) -> grad_x log p_t(x)`` for one example ``x`` and a scalar ``t``."""


class VPSchedule:
    r"""Base of the variance-preserving family (linear :class:`VPSDE`, and ``memjax.schedules``).

    A subclass defines the noise rate ``beta(t)``, its half-integral ``m(t) = \int_0^t \beta/2``
    and the inverse ``t_from_sigma``, plus the fields ``t_min`` and ``t_max``; the kernel
    ``alpha = e^{-m}``, ``sigma^2 = 1 - e^{-2m}`` and the dynamics (eqs. 3-8) follow here, so
    every analysis that takes an ``sde`` takes any member of the family unchanged.
    Subclasses are frozen dataclasses (hashable: static arguments of ``jax.jit``).
    """

    t_min: float
    t_max: float

    def beta(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        raise NotImplementedError

    def m(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        raise NotImplementedError

    def t_from_sigma(self, sigma: Float[Array, "..."]) -> Float[Array, "..."]:
        raise NotImplementedError

    def alpha(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""Signal scale ``\alpha(t) = e^{-m(t)}`` (eq. 4)."""
        return jnp.exp(-self.m(t))

    def variance(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""Noise variance ``v(t) = \sigma(t)^2 = 1 - e^{-2m(t)}`` (eq. 6), via ``expm1`` for small t."""
        return -jnp.expm1(-2.0 * self.m(t))

    def sigma(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""Noise scale ``\sigma(t) = \sqrt{1 - e^{-2m(t)}}`` (eq. 6)."""
        return jnp.sqrt(self.variance(t))

    def log_snr(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""``\log(\alpha^2 / \sigma^2)``."""
        return -2.0 * self.m(t) - jnp.log(self.variance(t))

    # -- marginals ----------------------------------------------------------------------------
    def marginal(self, x0: Array, t: Float[Array, ""], noise: Array) -> Array:
        r"""A draw of ``x_t = \alpha(t) x_0 + \sigma(t) z`` (eq. 4; paper 002 eq. 1)."""
        return self.alpha(t) * x0 + self.sigma(t) * noise

    def prior(self, key: PRNGKeyArray, shape: tuple[int, ...], dtype=jnp.float32) -> Array:
        """A draw from the prior ``N(0, I)`` that ``p_{t_max}`` approaches."""
        return jax.random.normal(key, shape, dtype)

    def prior_logp(self, z: Array) -> Float[Array, ""]:
        """``log N(z; 0, I)``, summed over every element of one example."""
        d = z.size
        return -0.5 * d * jnp.log(2 * jnp.pi) - 0.5 * jnp.sum(z**2)

    # -- dynamics -----------------------------------------------------------------------------
    def sde(self, x: Array, t: Float[Array, ""]) -> tuple[Array, Array]:
        r"""Drift ``f = -\beta x / 2`` and diffusion ``g = \sqrt{\beta}`` of the forward SDE (eqs. 1, 3)."""
        b = self.beta(t)
        return -0.5 * b * x, jnp.sqrt(b)

    def pf_drift(self, score_fn: ScoreFn) -> Callable[[Array, Array], Array]:
        r"""The probability-flow drift ``f(t, x) = -\beta(t)/2 (x + s(x, t))`` (eq. 8).

        The returned function takes ``(t, x)`` in that order, the ODE convention of diffrax.
        """

        def drift(t, x):
            return -0.5 * self.beta(t) * (x + score_fn(x, t))

        return drift

    def reverse_drift(self, score_fn: ScoreFn) -> Callable[[Array, Array], Array]:
        r"""Drift of the reverse-time SDE (paper 000 eq. 2 with gamma = 1): ``f - g^2 s``.

        Integrated backwards in time (dt < 0) with diffusion ``g = sqrt(beta)``.
        """

        def drift(t, x):
            return -0.5 * self.beta(t) * x - self.beta(t) * score_fn(x, t)

        return drift

    def check_time(self, name: str, t) -> None:
        """Raises ``ValueError`` when concrete ``t`` is outside ``[t_min, t_max]``."""
        _checks.check_time(name, t, self.t_min, self.t_max)


@dataclasses.dataclass(frozen=True)
class VPSDE(VPSchedule):
    """Variance-preserving SDE with a linear ``beta`` schedule.

    Frozen and hashable, so it can be passed as a static argument to ``jax.jit``.
    The defaults are those of score_sde / paper 000 (beta in [0.1, 20], t in [1e-3, 1]).
    """

    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-3
    t_max: float = 1.0

    def __post_init__(self):
        for name in ("beta_min", "beta_max", "t_min", "t_max"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not jnp.isfinite(value):
                raise ValueError(f"VPSDE.{name}: expected a finite number, got {value!r}")
        if self.beta_min < 0 or self.beta_max < self.beta_min:
            raise ValueError(f"VPSDE.beta_min/beta_max: expected 0 <= beta_min <= beta_max, got "
                             f"{self.beta_min}, {self.beta_max}")
        if self.beta_max <= 0:
            raise ValueError(f"VPSDE.beta_max: expected a positive number, got {self.beta_max}")
        if not 0 <= self.t_min < self.t_max:
            raise ValueError(f"VPSDE.t_min/t_max: expected 0 <= t_min < t_max, got "
                             f"{self.t_min}, {self.t_max}")

    # -- schedule -----------------------------------------------------------------------------
    def beta(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""``\beta(t) = \beta_{min} + t (\beta_{max} - \beta_{min})`` (eq. 3)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def m(self, t: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""``m(t) = \int_0^t \beta(s)/2\,ds = \beta_{min} t/2 + (\beta_{max}-\beta_{min}) t^2/4`` (eq. 5)."""
        return 0.5 * self.beta_min * t + 0.25 * (self.beta_max - self.beta_min) * t**2

    def t_from_sigma(self, sigma: Float[Array, "..."]) -> Float[Array, "..."]:
        r"""Inverse of ``sigma(t)``: solves ``m(t) = -\tfrac12\log(1-\sigma^2)`` for ``t >= 0``."""
        m = -0.5 * jnp.log1p(-jnp.asarray(sigma) ** 2)
        a = 0.25 * (self.beta_max - self.beta_min)
        b = 0.5 * self.beta_min
        if a == 0:
            return m / b
        return (-b + jnp.sqrt(b * b + 4 * a * m)) / (2 * a)
