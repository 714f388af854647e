r"""Default configurations (ml_collections ``ConfigDict``) for the networks and the objectives.

``unet_config(**overrides)`` and ``objective_config(**overrides)`` return a fresh, documented
default; ``validate_model_config`` / ``validate_objective_config`` raise ``ValueError`` naming
the offending field (``model.<field>`` / ``objective.<field>``) before anything is built or
compiled. Configs in ``configs/`` start from these defaults and override fields.

U-Net fields (``unet_config``)::

    image_size        int or (H, W). Input resolution. Sizes not divisible by 2**(levels-1) are
                      zero-padded up to the next multiple inside the network and the output is
                      cropped back (e.g. 28 -> 32 with 4 levels), so 28x28 MNIST works.
    channels          int. Image channels C (1 grey, 3 RGB).
    base_channels     int. Channels at the first level (DDPM++ CIFAR-10: 128).
    channel_mults     tuple of int. Channel multiplier per level; len = number of levels
                      (DDPM++ CIFAR-10: (1, 2, 2, 2)).
    num_res_blocks    int. Residual blocks per level on the way down (DDPM++: 4; DDPM: 2).
    attn_resolutions  tuple of int. Feature resolutions (of the padded maps: padded_size // 2**level)
                      at which self-attention follows each residual block (DDPM++ CIFAR-10: (16,)).
    num_heads         int. Attention heads (DDPM++: 1).
    dropout           float in [0, 1). Dropout rate inside residual blocks (DDPM++ CIFAR-10: 0.1).
    num_classes       int or None. Class-conditional when set; label ``num_classes`` is the null
                      label used by classifier-free dropout and when ``y`` is omitted.
    parameterization  "eps" (predict the noise) or "x0" (predict the clean image).
    embedding         "sinusoidal" (positional embedding of 1000 t) or "fourier" (random Fourier
                      features of t with fixed frequencies ~ N(0, fourier_scale^2)).
    fourier_scale     float. Standard deviation of the Fourier frequencies (score_sde: 16).

Objective fields (``objective_config``)::

    name              "standard" (DSM, paper 002 eqs. 3-4), "ambient" (paper 002 Algorithm 1),
                      "conditional" (class-conditional DSM with label dropout).
    parameterization  "eps" | "x0": what the network predicts (must match the model's).
    weighting         "none" | "likelihood" | "min_snr" (see memjax.objectives.denoising_loss);
                      the ambient objective uses "none" (Algorithm 1) and rejects the others.
    min_snr_gamma     float. Cap of the min-SNR weighting (Hang et al. 2023: 5).
    t_sampling        "uniform" | "antithetic" | "stratified": how the batch's times are drawn.
    t_n               float in (t_min, t_max) or None. Ambient: the noise level of the fixed noisy
                      copies, as a time. Exactly one of t_n / sigma_tn is set for "ambient".
    sigma_tn          float in (0, 1) or None. Ambient: the same setting as a VP noise scale
                      sigma(t_n) (paper 002 uses sigma_{t_n}); t_n = sde.t_from_sigma(sigma_tn).
                      An EDM noise level s (images x0 + s z) is sigma_tn = s / sqrt(1 + s^2).
    noise_seed        int. Ambient: seed of the fixed noisy copies (noise of image i is drawn from
                      fold_in(key(noise_seed), i)); never changes across epochs or restarts.
    noisy_fraction    float in (0, 1). Ambient: probability that an example of the batch takes
                      the noisy (ambient) branch; 0.5 is Algorithm 1's uniform draw from S u S_tn.
    mix               "bernoulli" (independent per example, Algorithm 1) or "split" (exactly
                      round(noisy_fraction * b) random examples of each batch are noisy).
    num_classes       int or None. Conditional: number of classes (null label = num_classes).
    label_dropout     float in [0, 1). Conditional: probability of replacing a label by the
                      null label (classifier-free guidance training; Ho & Salimans: 0.1-0.2).
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

__all__ = ["EMBEDDINGS", "feature_resolutions", "image_hw", "MIXES", "objective_config",
           "OBJECTIVES", "padded_hw", "PARAMETERIZATIONS", "resolve_t_n", "T_SAMPLINGS",
           "unet_config", "validate_model_config", "validate_objective_config", "WEIGHTINGS"]

PARAMETERIZATIONS = ("eps", "x0")
EMBEDDINGS = ("fourier", "sinusoidal")
OBJECTIVES = ("standard", "ambient", "conditional")
WEIGHTINGS = ("none", "likelihood", "min_snr")
T_SAMPLINGS = ("uniform", "antithetic", "stratified")
MIXES = ("bernoulli", "split")


def _with_overrides(cfg: ml_collections.ConfigDict, overrides: dict, what: str):
    for k, v in overrides.items():
        if k not in cfg:
            raise ValueError(f"{what}.{k}: unknown field; expected one of {sorted(cfg.keys())}")
        with cfg.ignore_type():
            cfg[k] = v
    return cfg


def unet_config(**overrides: Any) -> ml_collections.ConfigDict:
    """The default score U-Net config (a small DDPM++ for 32x32), with ``overrides`` applied.

    See the module docstring for every field. Unknown override names raise ``ValueError``.
    """
    cfg = ml_collections.ConfigDict()
    cfg.image_size = 32
    cfg.channels = 3
    cfg.base_channels = 64
    cfg.channel_mults = (1, 2, 2)
    cfg.num_res_blocks = 2
    cfg.attn_resolutions = (16,)
    cfg.num_heads = 1
    cfg.dropout = 0.1
    cfg.num_classes = None
    cfg.parameterization = "eps"
    cfg.embedding = "sinusoidal"
    cfg.fourier_scale = 16.0
    return _with_overrides(cfg, overrides, "model")


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and \
        bool(np.isfinite(v))


def _fail(field: str, expected: str, got) -> None:
    raise ValueError(f"{field}: expected {expected}, got {got!r}")


def image_hw(image_size) -> tuple[int, int]:
    """``image_size`` (int or pair) as ``(H, W)``; raises naming ``model.image_size``."""
    if _is_int(image_size):
        hw = (int(image_size), int(image_size))
    elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(map(_is_int, image_size))):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        _fail("model.image_size", "a positive int or an (H, W) pair of ints", image_size)
    if min(hw) < 1:
        _fail("model.image_size", "positive sizes", image_size)
    return hw


def padded_hw(image_size, num_levels: int) -> tuple[int, int]:
    """``(H, W)`` rounded up to multiples of ``2**(num_levels - 1)`` (the U-Net's working size)."""
    m = 2 ** (num_levels - 1)
    return tuple(-(-s // m) * m for s in image_hw(image_size))


def feature_resolutions(image_size, num_levels: int) -> tuple[int, ...]:
    """Feature resolutions (of the padded height) at each level: ``padded_H // 2**level``."""
    h = padded_hw(image_size, num_levels)[0]
    return tuple(h // 2**i for i in range(num_levels))


def validate_model_config(cfg) -> None:
    """Raises ``ValueError`` naming the field (``model.<field>``) when ``cfg`` is not a valid U-Net config."""
    if not isinstance(cfg, (ml_collections.ConfigDict, dict)):
        raise ValueError(f"model: expected an ml_collections.ConfigDict, got {type(cfg).__name__}")
    known = set(unet_config().keys())
    for k in cfg.keys():
        if k not in known:
            raise ValueError(f"model.{k}: unknown field; expected one of {sorted(known)}")
    for k in known:
        if k not in cfg:
            raise ValueError(f"model.{k}: missing field")
    hw = image_hw(cfg["image_size"])
    for name in ("channels", "base_channels", "num_res_blocks", "num_heads"):
        if not _is_int(cfg[name]) or cfg[name] < 1:
            _fail(f"model.{name}", "a positive int", cfg[name])
    mults = cfg["channel_mults"]
    if not isinstance(mults, (tuple, list)) or not mults or not all(
            _is_int(m) and m >= 1 for m in mults):
        _fail("model.channel_mults", "a non-empty tuple of positive ints", mults)
    levels = len(mults)
    if min(hw) < 2 ** (levels - 1):
        _fail("model.image_size", f"at least 2**(len(channel_mults)-1) = {2 ** (levels - 1)} "
              f"pixels per side for {levels} levels", cfg["image_size"])
    attn = cfg["attn_resolutions"]
    if not isinstance(attn, (tuple, list)) or not all(_is_int(a) for a in attn):
        _fail("model.attn_resolutions", "a tuple of ints", attn)
    res = feature_resolutions(hw, levels)
    for a in attn:
        if a not in res:
            _fail("model.attn_resolutions", f"resolutions reached by the network {res} "
                  f"(image_size {hw} padded to {padded_hw(hw, levels)}, halved per level)",
                  tuple(attn))
    for c in {cfg["base_channels"] * m for m in mults}:
        if c % cfg["num_heads"]:
            _fail("model.num_heads", f"a divisor of every level's channel count (here {c})",
                  cfg["num_heads"])
    if not _is_number(cfg["dropout"]) or not 0.0 <= cfg["dropout"] < 1.0:
        _fail("model.dropout", "a number in [0, 1)", cfg["dropout"])
    nc = cfg["num_classes"]
    if nc is not None and (not _is_int(nc) or nc < 1):
        _fail("model.num_classes", "None or a positive int", nc)
    if cfg["parameterization"] not in PARAMETERIZATIONS:
        _fail("model.parameterization", f"one of {PARAMETERIZATIONS}", cfg["parameterization"])
    if cfg["embedding"] not in EMBEDDINGS:
        _fail("model.embedding", f"one of {EMBEDDINGS}", cfg["embedding"])
    if not _is_number(cfg["fourier_scale"]) or cfg["fourier_scale"] <= 0:
        _fail("model.fourier_scale", "a positive number", cfg["fourier_scale"])


def objective_config(**overrides: Any) -> ml_collections.ConfigDict:
    """The default objective config (standard eps-prediction DSM), with ``overrides`` applied.

    See the module docstring for every field. Unknown override names raise ``ValueError``.
    """
    cfg = ml_collections.ConfigDict()
    cfg.name = "standard"
    cfg.parameterization = "eps"
    cfg.weighting = "none"
    cfg.min_snr_gamma = 5.0
    cfg.t_sampling = "uniform"
    cfg.t_n = None
    cfg.sigma_tn = None
    cfg.noise_seed = 0
    cfg.noisy_fraction = 0.5
    cfg.mix = "bernoulli"
    cfg.num_classes = None
    cfg.label_dropout = 0.1
    return _with_overrides(cfg, overrides, "objective")


def validate_objective_config(cfg, sde=None) -> None:
    """Raises ``ValueError`` naming the field (``objective.<field>``) for an invalid objective config.

    With ``sde`` given, ``t_n`` is checked against ``(sde.t_min, sde.t_max)``; otherwise against
    ``(0, 1)``.
    """
    if not isinstance(cfg, (ml_collections.ConfigDict, dict)):
        raise ValueError(f"objective: expected an ml_collections.ConfigDict, got "
                         f"{type(cfg).__name__}")
    known = set(objective_config().keys())
    for k in cfg.keys():
        if k not in known:
            raise ValueError(f"objective.{k}: unknown field; expected one of {sorted(known)}")
    get = lambda k: cfg[k] if k in cfg else objective_config()[k]  # noqa: E731
    name = get("name")
    if name not in OBJECTIVES:
        _fail("objective.name", f"one of {OBJECTIVES}", name)
    if get("parameterization") not in PARAMETERIZATIONS:
        _fail("objective.parameterization", f"one of {PARAMETERIZATIONS}", get("parameterization"))
    if get("weighting") not in WEIGHTINGS:
        _fail("objective.weighting", f"one of {WEIGHTINGS}", get("weighting"))
    if not _is_number(get("min_snr_gamma")) or get("min_snr_gamma") <= 0:
        _fail("objective.min_snr_gamma", "a positive number", get("min_snr_gamma"))
    if get("t_sampling") not in T_SAMPLINGS:
        _fail("objective.t_sampling", f"one of {T_SAMPLINGS}", get("t_sampling"))
    if name == "ambient":
        if get("weighting") != "none":
            _fail("objective.weighting", "'none' for the ambient objective (Algorithm 1 weights "
                  "both branches by 1)", get("weighting"))
        t_n, s_n = get("t_n"), get("sigma_tn")
        if (t_n is None) == (s_n is None):
            raise ValueError("objective.t_n/objective.sigma_tn: expected exactly one of them set "
                             f"for the ambient objective, got t_n={t_n!r}, sigma_tn={s_n!r}")
        lo, hi = (0.0, 1.0) if sde is None else (sde.t_min, sde.t_max)
        if t_n is not None and (not _is_number(t_n) or not lo < t_n < hi):
            _fail("objective.t_n", f"a time in the open interval ({lo:g}, {hi:g})", t_n)
        if s_n is not None:
            if not _is_number(s_n) or not 0.0 < s_n < 1.0:
                _fail("objective.sigma_tn", "a VP noise scale in the open interval (0, 1)", s_n)
            if sde is not None:
                t = float(sde.t_from_sigma(s_n))
                if not sde.t_min < t < sde.t_max:
                    _fail("objective.sigma_tn", f"a noise scale whose time lies in ({sde.t_min:g}, "
                          f"{sde.t_max:g}) (sigma_tn={s_n} gives t_n={t:g})", s_n)
        if not _is_int(get("noise_seed")):
            _fail("objective.noise_seed", "an int", get("noise_seed"))
        f = get("noisy_fraction")
        if not _is_number(f) or not 0.0 < f < 1.0:
            _fail("objective.noisy_fraction", "a number in (0, 1)", f)
        if get("mix") not in MIXES:
            _fail("objective.mix", f"one of {MIXES}", get("mix"))
    if name == "conditional":
        nc = get("num_classes")
        if not _is_int(nc) or nc < 1:
            _fail("objective.num_classes", "a positive int for the conditional objective", nc)
        p = get("label_dropout")
        if not _is_number(p) or not 0.0 <= p < 1.0:
            _fail("objective.label_dropout", "a number in [0, 1)", p)


def resolve_t_n(cfg, sde) -> float:
    """The ambient noise level as a time: ``cfg.t_n`` or ``sde.t_from_sigma(cfg.sigma_tn)``."""
    if cfg.get("t_n", None) is not None:
        return float(cfg["t_n"])
    return float(sde.t_from_sigma(cfg["sigma_tn"]))
