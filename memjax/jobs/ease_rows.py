r"""The audit's row families of ease-of-reproduction scores and how each is labelled.

Each family scores every trained and held-out image with one score function and one set of
options (:func:`memjax.volume.volume_growth`'s ``method``, ``accumulate``, ``sigma``, ...):

    network     the trained model, memjax's options (``ease.method`` / ``ease.accumulate``;
                by default exact tangents, ``jvp``, and the true volume, ``qr``)
    algorithm1  the trained model, paper 000's Algorithm 1 as written: finite-difference
                neighbours at ``sigma`` (0.05 in image units), the raw per-axis stretches
                (``norms``, the authors' code), ``N = min(100, D)`` axes over the full
                1000-step grid; its options live in ``ease.algorithm1`` and override the
                global ones
    exact       the exact empirical score of the training set (paper 000 eq. 11), a perfect
                memoriser, with the global options

A family's section may override ``method``, ``accumulate`` and ``sigma``; a missing
section (configs written before ``algorithm1`` existed) is simply skipped. Every report row
carries :func:`row_label`, so a number from Algorithm 1 is never read as memjax's exact one.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ROW_KINDS", "NETWORK_KINDS", "OVERRIDABLE", "row_kinds", "row_options", "row_label",
           "paper_num_axes", "labels", "settings_block"]

ROW_KINDS = ("network", "algorithm1", "exact")
NETWORK_KINDS = ("network", "algorithm1")    # families scored with the trained model
OVERRIDABLE = ("method", "accumulate", "sigma")
CHOICES = {"method": ("jvp", "finite_difference"), "accumulate": ("qr", "norms")}
PAPER_MAX_AXES = 100                          # Algorithm 1's N (paper 000, experiments)


def paper_num_axes(dim: int) -> int:
    """The paper's number of axes at dimension ``D``: ``N = 100``, or ``D`` when ``D < 100``."""
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim: expected a positive integer image dimension, got {dim!r}")
    return min(PAPER_MAX_AXES, dim)


def row_kinds(ease_config) -> tuple[str, ...]:
    """The enabled row families of ``ease_config`` (an audit's ``config.ease``), in order."""
    return tuple(k for k in ROW_KINDS if k in ease_config and ease_config[k].enabled)


def row_options(ease_config, kind: str) -> dict:
    """``volume_growth`` options of the family ``kind``: the global ``ease.*`` ones, overridden
    by the family's own ``method`` / ``accumulate`` / ``sigma`` where it sets them."""
    if kind not in ROW_KINDS:
        raise ValueError(f"kind: expected one of {ROW_KINDS}, got {kind!r}")
    ec = ease_config
    section = ec[kind] if kind in ec else {}
    pick = {f: section[f] if f in section else ec[f] for f in OVERRIDABLE}
    return dict(method=pick["method"], accumulate=pick["accumulate"], sigma=float(pick["sigma"]),
                solver=ec.solver, check_stability=bool(ec.check_stability))


def _method_words(options: dict) -> str:
    if options["method"] == "finite_difference" and options["accumulate"] == "norms":
        return f"Algorithm 1 (paper 000, FD sigma={options['sigma']:g}, norms)"
    if options["method"] == "jvp":
        return f"memjax exact (jvp, {options['accumulate']})"
    return f"FD sigma={options['sigma']:g}, {options['accumulate']}"


def row_label(kind: str, options: dict) -> str:
    """What a report row is, e.g. ``"network: Algorithm 1 (paper 000, FD sigma=0.05, norms)"``
    or ``"exact score: memjax exact (jvp, qr)"``."""
    who = "exact score" if kind == "exact" else "network"
    return f"{who}: {_method_words(options)}"


def labels(ease_config, kinds: Any) -> dict:
    """``{kind: row_label(kind, row_options(ease_config, kind))}`` for ``kinds``."""
    return {k: row_label(k, row_options(ease_config, k)) for k in kinds}


def settings_block(ease_config, kinds: Any) -> dict:
    """The report's record of each family: ``{"row_labels": {kind: label}, "row_options":
    {kind: options}}``."""
    return {"row_labels": labels(ease_config, kinds),
            "row_options": {k: row_options(ease_config, k) for k in kinds}}
