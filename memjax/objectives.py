r"""Training objectives: denoising score matching, ambient score matching, classifier losses.

Every loss is a pure function ``loss(model, batch, key, ...) -> (scalar, metrics)`` of an NNX
module, a batch dict and a PRNG key, ready for ``nnx.value_and_grad(loss, has_aux=True)`` and
``nnx.jit``. A batch holds ``"image" [b, H, W, C]`` and, where needed, ``"label" [b]`` (int)
and ``"index" [b]`` (int, the image's index in the training set). All randomness (times, noise,
label dropout, branch choice, dropout masks) is drawn from ``key``, so a step is reproducible
from its key: the same on 1 device and on 8, and after a restart.

Notation (VP-SDE, ``memjax.sde.VPSDE``): ``x_t = a_t x_0 + s_t z`` with ``a_t = alpha(t)``,
``s_t = sigma(t)``, ``a_t^2 + s_t^2 = 1`` (paper 002 eq. 1 with ``a_t = sqrt(1 - sigma_t^2)``).
Squared errors are averaged over the pixels of an example (``||.||^2 / D``) and then over the
batch; the ``1/D`` is a constant factor relative to the papers' sums.

Network outputs: ``parameterization="eps"`` (the network predicts ``z``) or ``"x0"`` (it
predicts ``x_0``); the two are tied by Tweedie (paper 002 eq. 2): ``x0_hat = (x_t - s_t eps_hat) / a_t``.

Models whose ``__call__`` accepts ``key=`` (e.g. :class:`memjax.models.UNet`) get a dropout key
split from ``key``; others are called as ``model(x_t, t)`` / ``model(x_t, t, y)``.

BatchNorm models (the classifiers): call them in ``train()`` mode inside the loss;
``nnx.value_and_grad`` / ``nnx.jit`` propagate the in-place ``BatchStat`` updates out of the
traced function, and gradients are taken w.r.t. ``nnx.Param`` only.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from memjax import _checks
from memjax.models import config as config_lib
from memjax.sde import VPSDE

__all__ = ["ambient_coefficients", "ambient_loss", "ambient_noisy_copy", "Batch",
           "classifier_loss", "conditional_denoising_loss", "denoising_loss", "LossFn",
           "make_loss", "MIXES", "PARAMETERIZATIONS", "sample_times", "T_SAMPLINGS", "tdkd_loss",
           "WEIGHTINGS"]

Batch = Mapping[str, Array]
LossFn = Callable[[Any, Batch, PRNGKeyArray], tuple[Array, dict]]

PARAMETERIZATIONS = config_lib.PARAMETERIZATIONS
WEIGHTINGS = config_lib.WEIGHTINGS
T_SAMPLINGS = config_lib.T_SAMPLINGS
MIXES = config_lib.MIXES


# -- helpers ---------------------------------------------------------------------------------------
def _check_sde(sde):
    _checks.check_schedule("sde", sde)


def _images(batch) -> Array:
    if not isinstance(batch, Mapping) or "image" not in batch:
        raise ValueError("batch: expected a dict with an 'image' entry [b, H, W, C]")
    x = batch["image"]
    if jnp.ndim(x) != 4:
        raise ValueError(f"batch['image']: expected shape [b, H, W, C], got {tuple(jnp.shape(x))}")
    if not jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating):
        raise ValueError(f"batch['image']: expected floating images, got dtype "
                         f"{jnp.asarray(x).dtype}")
    return x


def _int_entry(batch, name: str, b: int) -> Array:
    if name not in batch:
        raise ValueError(f"batch: expected a '{name}' entry [b] of ints for this objective")
    v = batch[name]
    if jnp.shape(v) != (b,) or not jnp.issubdtype(jnp.asarray(v).dtype, jnp.integer):
        raise ValueError(f"batch['{name}']: expected shape [{b}] of ints, got shape "
                         f"{tuple(jnp.shape(v))} dtype {jnp.asarray(v).dtype}")
    return v


@functools.lru_cache(maxsize=256)
def _accepts_key(cls) -> bool:
    try:
        return "key" in inspect.signature(cls.__call__).parameters
    except (TypeError, ValueError):
        return False


def _call(model, x, t, y=None, key=None):
    kwargs = {"key": key} if (key is not None and _accepts_key(type(model))) else {}
    return model(x, t, **kwargs) if y is None else model(x, t, y, **kwargs)


def _check_parameterization(model, parameterization: str) -> None:
    _checks.check_choice("parameterization", parameterization, PARAMETERIZATIONS)
    own = getattr(model, "parameterization", None)
    if own is not None and own != parameterization:
        raise ValueError(f"parameterization: the objective uses {parameterization!r} but the model "
                         f"predicts {own!r} (model.parameterization)")


def _bcast(v: Array, x: Array) -> Array:
    return v.reshape(v.shape + (1,) * (x.ndim - v.ndim))


def _mean_per_example(sq: Array) -> Array:
    return jnp.mean(sq.reshape(sq.shape[0], -1), axis=-1)


def sample_times(key: PRNGKeyArray, b: int, lo, hi, method: str = "uniform") -> Float[Array, " b"]:
    r"""``b`` times in ``[lo, hi]``, marginally uniform.

    * ``"uniform"``: i.i.d. ``U(lo, hi)``.
    * ``"antithetic"``: ``u_i`` i.i.d. for the first half, ``1 - u_i`` for the second.
    * ``"stratified"``: ``u_i = (i + U_i) / b``, one draw per stratum (low-variance; the
      strata are assigned to batch positions in a random order).
    """
    _checks.check_choice("t_sampling", method, T_SAMPLINGS)
    if method == "uniform":
        u = jax.random.uniform(key, (b,))
    elif method == "antithetic":
        half = jax.random.uniform(key, ((b + 1) // 2,))
        u = jnp.concatenate([half, 1.0 - half])[:b]
    else:
        k1, k2 = jax.random.split(key)
        u = (jnp.arange(b) + jax.random.uniform(k1, (b,))) / b
        u = jax.random.permutation(k2, u)
    return lo + (hi - lo) * u


def _weights(weighting: str, parameterization: str, t, sde: VPSDE, gamma: float):
    """Per-example weight on the mean squared error of the network's own output."""
    if weighting == "none":
        return jnp.ones_like(t)
    a2, v = sde.alpha(t) ** 2, sde.variance(t)
    snr = a2 / v
    if weighting == "likelihood":
        # lambda(t) = g(t)^2 = beta(t) on ||s_hat - s||^2; s-err = eps-err / s_t = (a_t / s_t^2) x0-err.
        return sde.beta(t) / v if parameterization == "eps" else sde.beta(t) * a2 / v**2
    # min-SNR-gamma (Hang et al. 2023): weight min(snr, gamma) on the x0 error.
    w_x0 = jnp.minimum(snr, gamma)
    return w_x0 / snr if parameterization == "eps" else w_x0


def _dsm(model, x0, key, sde, parameterization, weighting, min_snr_gamma, t_sampling, t_lo, t_hi,
         y=None):
    b = x0.shape[0]
    k_t, k_z, k_drop = jax.random.split(key, 3)
    t = sample_times(k_t, b, t_lo, t_hi, t_sampling)
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    a, s = _bcast(sde.alpha(t), x0), _bcast(sde.sigma(t), x0)
    x_t = a * x0 + s * z
    out = _call(model, x_t, t, y, key=k_drop)
    if out.shape != x0.shape:
        raise ValueError(f"model: expected an output of shape {x0.shape} (the input's), got "
                         f"{out.shape}")
    target = z if parameterization == "eps" else x0
    mse = _mean_per_example((out - target) ** 2)
    w = _weights(weighting, parameterization, t, sde, min_snr_gamma)
    loss = jnp.mean(w * mse)
    return loss, {"loss": loss, "mse": jnp.mean(mse)}


def _check_common(sde, parameterization, weighting, t_sampling, model):
    _check_sde(sde)
    _check_parameterization(model, parameterization)
    _checks.check_choice("weighting", weighting, WEIGHTINGS)
    _checks.check_choice("t_sampling", t_sampling, T_SAMPLINGS)


# -- standard denoising score matching (paper 002 eqs. 3-4) ---------------------------------------
def denoising_loss(model, batch: Batch, key: PRNGKeyArray, *, sde: VPSDE,
                   parameterization: str = "eps", weighting: str = "none",
                   min_snr_gamma: float = 5.0, t_sampling: str = "uniform"
                   ) -> tuple[Float[Array, ""], dict]:
    r"""Denoising score matching with ``t ~ U(t_min, t_max)``.

    ``x_t = a_t x_0 + s_t z``; the network ``h(x_t, t)`` predicts ``z`` (``"eps"``) or ``x_0``
    (``"x0"``, paper 002 eq. 3) and the loss is ``E_t[w(t) ||h - target||^2 / D]``. All
    weightings are expressed through the score error, ``||s_hat - s||^2 = ||eps_hat - z||^2 / s_t^2
    = (a_t / s_t^2)^2 ||x0_hat - x_0||^2`` (eq. 4):

    * ``"none"``: ``w = 1`` on the network's own target (DDPM's simple loss / eq. 3).
    * ``"likelihood"``: ``lambda(t) = g(t)^2 = beta(t)`` on the score error (Song et al. 2021).
    * ``"min_snr"``: ``min(SNR, gamma)`` on the x0 error, ``SNR = a_t^2 / s_t^2`` (Hang et al. 2023).

    Metrics: ``loss`` and the unweighted ``mse``.
    """
    _check_common(sde, parameterization, weighting, t_sampling, model)
    x0 = _images(batch)
    return _dsm(model, x0, key, sde, parameterization, weighting, min_snr_gamma, t_sampling,
                sde.t_min, sde.t_max)


def conditional_denoising_loss(model, batch: Batch, key: PRNGKeyArray, *, sde: VPSDE,
                               num_classes: int, label_dropout: float = 0.1,
                               parameterization: str = "eps", weighting: str = "none",
                               min_snr_gamma: float = 5.0, t_sampling: str = "uniform"
                               ) -> tuple[Float[Array, ""], dict]:
    r"""Class-conditional DSM with classifier-free label dropout (Ho & Salimans 2022).

    Each label ``batch["label"]`` is replaced by the null label ``num_classes`` with probability
    ``label_dropout``; the network is called as ``model(x_t, t, y)``; otherwise as
    :func:`denoising_loss`. One model thus learns ``s(x_t, t | y)`` and ``s(x_t, t)``.
    """
    _check_common(sde, parameterization, weighting, t_sampling, model)
    _checks.check_positive_int("num_classes", num_classes)
    own = getattr(model, "num_classes", num_classes)
    if own != num_classes:
        raise ValueError(f"num_classes: the objective uses {num_classes} classes but the model has "
                         f"{own} (model.num_classes)")
    if not 0.0 <= float(label_dropout) < 1.0:
        raise ValueError(f"label_dropout: expected a probability in [0, 1), got {label_dropout!r}")
    x0 = _images(batch)
    y = _int_entry(batch, "label", x0.shape[0])
    if _checks.is_concrete(y) and (jnp.any(y < 0) or jnp.any(y >= num_classes)):
        raise ValueError(f"batch['label']: expected labels in [0, {num_classes}), got "
                         f"{int(jnp.min(y))}..{int(jnp.max(y))}")
    k_drop, k_rest = jax.random.split(key)
    drop = jax.random.bernoulli(k_drop, label_dropout, y.shape)
    y = jnp.where(drop, num_classes, y).astype(jnp.int32)
    loss, metrics = _dsm(model, x0, k_rest, sde, parameterization, weighting, min_snr_gamma,
                         t_sampling, sde.t_min, sde.t_max, y=y)
    metrics["label_dropout_fraction"] = jnp.mean(drop.astype(jnp.float32))
    return loss, metrics


# -- ambient score matching (paper 002 eq. 6, Algorithm 1) ----------------------------------------
def ambient_noisy_copy(images: Float[Array, "b h w c"], indices: Int[Array, " b"], *, seed: int,
                       sde: VPSDE, t_n) -> Float[Array, "b h w c"]:
    r"""The fixed noisy copy ``y_i = a_{t_n} x_i + s_{t_n} z_i`` of each training image (Alg. 1 line 1).

    ``z_i = N(0, I)`` drawn from ``fold_in(jax.random.key(seed), i)`` with ``i`` the image's
    index in the training set, so the copy of image ``i`` is the same in every batch, epoch,
    process and restart (as in the authors' code, which seeds the noise by the index). Pass
    the indices of the (possibly flip-augmented) training set the data pipeline serves.
    """
    _check_sde(sde)
    x = _images({"image": images})
    idx = jnp.asarray(indices)
    if idx.shape != (x.shape[0],) or not jnp.issubdtype(idx.dtype, jnp.integer):
        raise ValueError(f"indices: expected shape [{x.shape[0]}] of ints, got shape {idx.shape} "
                         f"dtype {idx.dtype}")
    base = jax.random.key(seed)
    z = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(base, i), x.shape[1:],
                                             x.dtype))(idx)
    t_n = jnp.asarray(t_n, x.dtype)
    return sde.alpha(t_n) * x + sde.sigma(t_n) * z


def ambient_coefficients(t, t_n, sde: VPSDE):
    r"""Coefficients of Algorithm 1 for ``t > t_n`` (general VP form; paper's when ``a^2 + s^2 = 1``).

    Returns ``(k, r, c_h, c_x)`` with

    * forward from the noisy copy (line 10): ``x_t = k y + r z``, ``k = a_t / a_n``,
      ``r^2 = s_t^2 - k^2 s_n^2 = (s_t^2 - s_n^2) / (1 - s_n^2)``;
    * posterior of the copy given ``x_0`` and ``x_t`` (eq. 6):
      ``E[y | x_0, x_t] = c_h x_0 + c_x x_t``, ``c_h = (a_n^2 s_t^2 - s_n^2 a_t^2) / (a_n s_t^2)
      = (s_t^2 - s_n^2) / (s_t^2 sqrt(1 - s_n^2))``, ``c_x = s_n^2 a_t / (a_n s_t^2)``.

    By the tower property ``E[y | x_t] = c_h E[x_0 | x_t] + c_x x_t``, so the minimiser of
    ``E ||c_h h(x_t, t) + c_x x_t - y||^2`` is ``h = E[x_0 | x_t]`` wherever ``c_h != 0``
    (``t > t_n``): the clean denoiser, learned from noisy copies only.
    """
    a_t, v_t = sde.alpha(t), sde.variance(t)
    a_n, v_n = sde.alpha(t_n), sde.variance(t_n)
    k = a_t / a_n
    r = jnp.sqrt(jnp.maximum(v_t - k**2 * v_n, 0.0))
    c_h = (a_n**2 * v_t - v_n * a_t**2) / (a_n * v_t)
    c_x = v_n * a_t / (a_n * v_t)
    return k, r, c_h, c_x


def _check_t_n(sde, t_n):
    if not _checks.is_concrete(t_n):
        return
    v = float(t_n)
    if not sde.t_min < v < sde.t_max:
        raise ValueError(f"t_n: expected a time in the open interval (t_min, t_max) = "
                         f"({sde.t_min:g}, {sde.t_max:g}), got {v:g}")


def ambient_loss(model, batch: Batch, key: PRNGKeyArray, *, sde: VPSDE, t_n: float, seed: int,
                 parameterization: str = "x0", noisy_fraction: float = 0.5,
                 mix: str = "bernoulli", t_sampling: str = "uniform"
                 ) -> tuple[Float[Array, ""], dict]:
    r"""Ambient score matching exactly as paper 002 Algorithm 1 (appendix A).

    ``S`` is the clean training set and ``S_{t_n} = {y_i = a_n x_i + s_n z_i}`` its fixed noisy
    copy (:func:`ambient_noisy_copy`; ``a_n = alpha(t_n)``, ``s_n = sigma(t_n)``; ``t_n`` and
    ``sigma_{t_n}`` are two views of one setting, ``t_n = sde.t_from_sigma(sigma_tn)``).

    Algorithm 1 draws each batch element uniformly from ``S u S_{t_n}``; as ``|S| = |S_{t_n}|``
    that is a uniform image ``i`` (what the data pipeline serves, with its ``"index"``) and an
    independent fair coin for its branch. Here the coin is ``Bernoulli(noisy_fraction)``
    per example (``mix="bernoulli"``; 0.5 is the paper), or ``mix="split"`` takes exactly
    ``round(noisy_fraction * b)`` random examples of each batch as noisy (lower variance).

    * noisy branch (lines 8-11): ``t ~ U(t_n, t_max)``, ``x_t = k y + r z`` (the copy plus the
      remaining noise), loss ``||c_h h(x_t, t) + c_x x_t - y||^2`` (eq. 6): the x0 prediction
      ``h`` mapped to a prediction of the noisy copy, target the noisy copy;
    * clean branch (lines 13-16): ``t ~ U(t_min, t_n)``, ``x_t = a_t x_0 + s_t z``, loss
      ``||h(x_t, t) - x_0||^2`` (eq. 3). The paper writes ``U(0, t_n)`` and ``U(t_n, T)``;
      here the interval ends are the SDE's ``t_min`` and ``t_max``.

    with ``k, r, c_h, c_x`` from :func:`ambient_coefficients`; both branches weighted by 1
    (line 19 averages over the batch). ``h`` is the network's x0 prediction; an eps network's
    output is mapped through Tweedie, ``h = (x_t - s_t eps_hat) / a_t`` (x0 prediction, the
    paper's, is recommended). Metrics: ``loss``, ``clean_loss`` / ``ambient_loss`` (means over
    each branch's examples) and ``noisy_fraction`` (fraction of the batch on the noisy branch).
    """
    _check_sde(sde)
    _check_parameterization(model, parameterization)
    _check_t_n(sde, t_n)
    _checks.check_choice("mix", mix, MIXES)
    _checks.check_choice("t_sampling", t_sampling, T_SAMPLINGS)
    if not 0.0 < float(noisy_fraction) < 1.0:
        raise ValueError(f"noisy_fraction: expected a number in (0, 1), got {noisy_fraction!r}")
    x0 = _images(batch)
    b = x0.shape[0]
    idx = _int_entry(batch, "index", b)
    k_mix, k_tc, k_tn, k_z, k_drop = jax.random.split(key, 5)
    if mix == "bernoulli":
        noisy = jax.random.bernoulli(k_mix, noisy_fraction, (b,))
    else:
        order = jax.random.permutation(k_mix, b)
        noisy = order < int(round(noisy_fraction * b))
    t_n = jnp.asarray(t_n, x0.dtype)
    t = jnp.where(noisy, sample_times(k_tn, b, t_n, sde.t_max, t_sampling),
                  sample_times(k_tc, b, sde.t_min, t_n, t_sampling))
    y = ambient_noisy_copy(x0, idx, seed=seed, sde=sde, t_n=t_n)
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    a, s = _bcast(sde.alpha(t), x0), _bcast(sde.sigma(t), x0)
    k, r, c_h, c_x = (_bcast(c, x0) for c in ambient_coefficients(t, t_n, sde))
    nz = _bcast(noisy, x0)
    x_t = jnp.where(nz, k * y + r * z, a * x0 + s * z)
    out = _call(model, x_t, t, key=k_drop)
    if out.shape != x0.shape:
        raise ValueError(f"model: expected an output of shape {x0.shape} (the input's), got "
                         f"{out.shape}")
    x0_hat = out if parameterization == "x0" else (x_t - s * out) / a
    clean = _mean_per_example((x0_hat - x0) ** 2)
    amb = _mean_per_example((c_h * x0_hat + c_x * x_t - y) ** 2)
    per = jnp.where(noisy, amb, clean)
    loss = jnp.mean(per)
    nf = noisy.astype(x0.dtype)
    n_noisy = jnp.sum(nf)
    metrics = {
        "loss": loss,
        "clean_loss": jnp.sum((1 - nf) * clean) / jnp.maximum(b - n_noisy, 1.0),
        "ambient_loss": jnp.sum(nf * amb) / jnp.maximum(n_noisy, 1.0),
        "noisy_fraction": n_noisy / b,
    }
    return loss, metrics


# -- classifiers (paper 001) ----------------------------------------------------------------------
def classifier_loss(model, batch: Batch, key: PRNGKeyArray | None = None
                    ) -> tuple[Float[Array, ""], dict]:
    r"""Cross-entropy ``-log softmax(model(x))_y`` averaged over the batch; metrics ``loss``, ``accuracy``.

    ``key`` is unused (kept for the common signature). For a time-dependent classifier use
    :func:`tdkd_loss`.
    """
    x = _images(batch)
    y = _int_entry(batch, "label", x.shape[0])
    logits = model(x)
    if logits.ndim != 2 or logits.shape[0] != x.shape[0]:
        raise ValueError(f"model: expected logits [b, num_classes], got shape {logits.shape}")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, y[:, None].astype(jnp.int32), axis=-1)[:, 0]
    loss = jnp.mean(nll)
    acc = jnp.mean((jnp.argmax(logits, axis=-1) == y).astype(jnp.float32))
    return loss, {"loss": loss, "accuracy": acc}


def tdkd_loss(td_model, teacher, batch: Batch, key: PRNGKeyArray, *, sde: VPSDE,
              temperature: float = 1.0, t_sampling: str = "uniform"
              ) -> tuple[Float[Array, ""], dict]:
    r"""Time-dependent knowledge distillation (paper 001 eq. 13).

    ``L = T^2 E_{t, z} KL( p_teacher(y | x_0) || p_td(y | x_t, t) )`` with ``t ~ U(t_min, t_max)``,
    ``x_t = a_t x_0 + s_t z`` and both distributions softened by the temperature ``T``
    (``softmax(logits / T)``; the ``T^2`` factor of Hinton et al. keeps gradient scales, and
    ``T = 1`` is exactly eq. 13).

    Args:
      td_model: the time-dependent classifier, called as ``td_model(x_t, t)``.
      teacher: the time-independent classifier (called on the clean ``x_0``; use it in
        ``eval()`` mode) or its precomputed logits ``[b, K]``. No gradient flows into it.
    Metrics: ``loss``, ``kl`` (at temperature ``T``, without ``T^2``) and ``agreement``
    (fraction of examples where both argmax classes agree).
    """
    _check_sde(sde)
    _checks.check_choice("t_sampling", t_sampling, T_SAMPLINGS)
    _checks.check_positive("temperature", temperature)
    x0 = _images(batch)
    b = x0.shape[0]
    if callable(teacher) and not isinstance(teacher, (jax.Array,)):
        t_logits = teacher(x0)
    else:
        t_logits = jnp.asarray(teacher)
    if t_logits.ndim != 2 or t_logits.shape[0] != b:
        raise ValueError(f"teacher: expected logits of shape [{b}, K], got {tuple(t_logits.shape)}")
    t_logits = jax.lax.stop_gradient(t_logits.astype(jnp.float32))
    k_t, k_z = jax.random.split(key)
    t = sample_times(k_t, b, sde.t_min, sde.t_max, t_sampling)
    z = jax.random.normal(k_z, x0.shape, x0.dtype)
    x_t = _bcast(sde.alpha(t), x0) * x0 + _bcast(sde.sigma(t), x0) * z
    s_logits = td_model(x_t, t)
    if s_logits.shape != t_logits.shape:
        raise ValueError(f"td_model: expected logits of shape {tuple(t_logits.shape)} (the "
                         f"teacher's), got {tuple(s_logits.shape)}")
    log_p = jax.nn.log_softmax(t_logits / temperature, axis=-1)
    log_q = jax.nn.log_softmax(s_logits.astype(jnp.float32) / temperature, axis=-1)
    kl = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
    kl_mean = jnp.mean(kl)
    loss = temperature**2 * kl_mean
    agree = jnp.mean((jnp.argmax(s_logits, -1) == jnp.argmax(t_logits, -1)).astype(jnp.float32))
    return loss, {"loss": loss, "kl": kl_mean, "agreement": agree}


# -- from a config ---------------------------------------------------------------------------------
def make_loss(objective_config, sde: VPSDE) -> LossFn:
    """``loss_fn(model, batch, key) -> (loss, metrics)`` for ``objective_config.name``.

    ``"standard"`` -> :func:`denoising_loss`, ``"ambient"`` -> :func:`ambient_loss` (``t_n`` or
    ``sigma_tn``, ``noise_seed``, ``noisy_fraction``, ``mix``), ``"conditional"`` ->
    :func:`conditional_denoising_loss` (``num_classes``, ``label_dropout``). Fields are documented
    in :mod:`memjax.models.config`; the config is validated (``ValueError`` naming
    ``objective.<field>``) before anything is traced.
    """
    _check_sde(sde)
    config_lib.validate_objective_config(objective_config, sde)
    given = (objective_config.to_dict() if hasattr(objective_config, "to_dict")
             else dict(objective_config))
    c = config_lib.objective_config(**given)
    name = c.name
    common = dict(sde=sde, parameterization=c.parameterization, t_sampling=c.t_sampling)
    if name == "standard":
        return functools.partial(denoising_loss, weighting=c.weighting,
                                 min_snr_gamma=float(c.min_snr_gamma), **common)
    if name == "conditional":
        return functools.partial(conditional_denoising_loss, num_classes=int(c.num_classes),
                                 label_dropout=float(c.label_dropout), weighting=c.weighting,
                                 min_snr_gamma=float(c.min_snr_gamma), **common)
    return functools.partial(ambient_loss, t_n=config_lib.resolve_t_n(c, sde),
                             seed=int(c.noise_seed), noisy_fraction=float(c.noisy_fraction),
                             mix=c.mix, **common)
