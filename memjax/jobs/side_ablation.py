r"""SIDE ablation over the number of classes (paper 001 Table 2, Fig. 7).

The paper varies the number of classes of the classifier at ``lambda = 5`` with 1,200 generated
images per class (CelebA-HQ-FI, low similarity) and fits a line to AMS and UMS against the
number of classes: slope, intercept, ``R^2`` and Pearson's ``r``. Here the classes are k-means
clusters (``K`` in ``config.classes_ablation.num_clusters``); each ``K`` is a full SIDE run in
``workdir/classes/K_<K>`` (its own pseudo-labels, TDKD student and extractions) that reuses the
synthetic set of ``workdir`` when present (stage keys make that safe), so only what depends on
``K`` is computed.
"""

from __future__ import annotations

import copy
import os
import shutil
from typing import Callable

import numpy as np

from memjax import report
from memjax import workdir as wd
from memjax.jobs.side_report import SCORES, band_order

__all__ = ["linear_fit", "classes_sweep", "classes_table"]

SHARED_STAGES = ("synthetic.npz",)
SAME_K_STAGES = ("pseudo_labels.npz", "td_classifier", "tdkd.json")
"""Also shared by the sub-run whose K is the main run's (their stage keys then match)."""


def linear_fit(x, y) -> dict:
    r"""Least-squares line ``y = a x + b``: ``{"slope", "intercept", "r2", "r"}`` (Table 2's
    columns; ``r2 = r^2`` for a line with intercept). ``r`` is 0 when ``y`` is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1 or len(x) < 2 or np.ptp(x) == 0:
        raise ValueError(f"x, y: expected two 1-D arrays of the same length >= 2 with x not "
                         f"constant, got shapes {x.shape}, {y.shape}")
    slope, intercept = np.polyfit(x, y, 1)
    sy = np.std(y)
    r = 0.0 if sy == 0 else float(np.corrcoef(x, y)[0, 1])
    return {"slope": float(slope), "intercept": float(intercept), "r2": r * r, "r": r}


def _sub_config(config, k: int):
    c = copy.deepcopy(config)
    c.num_clusters = int(k)
    c.extraction.lambdas = tuple(config.classes_ablation.lambdas)
    per_class = int(config.classes_ablation.get("samples_per_class", 0))
    if per_class:
        c.extraction.samples_per_class = per_class
    c.classes_ablation.num_clusters = ()
    return c


def classes_sweep(config, workdir: str, trained, *, log: Callable[[str], None] = print) -> dict:
    """Runs SIDE once per ``K`` in ``config.classes_ablation.num_clusters`` (at
    ``classes_ablation.lambdas``) and writes ``workdir/classes/classes.{csv,md,png,json}``:
    AMS / UMS per ``K``, band and lambda, and the linear fit against ``K`` (Table 2)."""
    from memjax import side

    ks = [int(k) for k in config.classes_ablation.num_clusters]
    rows = []
    for k in ks:
        sub = os.path.join(str(workdir), "classes", f"K_{k:04d}")
        os.makedirs(sub, exist_ok=True)
        same_k = k == int(config.num_clusters) and config.get("guidance_classifier", "td") == "td"
        for name in SHARED_STAGES + (SAME_K_STAGES if same_k else ()):
            _copy_stage(os.path.join(str(workdir), name), os.path.join(sub, name))
        s = side.run(_sub_config(config, k), sub, trained=trained, log=log)
        rows += [dict(r, num_classes=k) for r in s["rows"]]
    out = classes_table(rows, band_order(config.metrics.bands))
    d = os.path.join(str(workdir), "classes")
    wd.write_text(f"{d}/classes.md", out.pop("markdown"))
    wd.write_text(f"{d}/classes.csv", out.pop("csv"))
    report.save_figure(_figure(rows, band_order(config.metrics.bands)), f"{d}/classes.png")
    wd.save_json(f"{d}/classes.json", out)
    return out


def _copy_stage(src: str, dst: str) -> None:
    """Copies a stored stage (file or directory) unless ``dst`` exists; it is reused only if
    its stored key matches what the sub-run needs."""
    if not os.path.exists(src) or os.path.exists(dst):
        return
    if os.path.isdir(src):
        shutil.copytree(src, dst)
    else:
        shutil.copyfile(src, dst)


def classes_table(rows: list, bands: list) -> dict:
    """Per lambda, band and score: the values against the number of classes and their linear
    fit. Returns ``{"fits": ..., "csv": str, "markdown": str}``."""
    keys = [(k, lab) for k, lab in SCORES if all(k in r for r in rows)]
    lams = sorted({r["lambda"] for r in rows})
    fits, md = {}, ["| lambda | band | score | slope (per class) | intercept | R^2 | r |",
                    "|---|---|---|---|---|---|---|"]
    csv = ["lambda,num_classes,N_G," + ",".join(f"{k}_{b}" for k, _ in keys for b in bands)]
    for r in sorted(rows, key=lambda r: (r["lambda"], r["num_classes"])):
        csv.append(f"{r['lambda']:g},{r['num_classes']},{r['num_generated']}," +
                   ",".join(f"{r[k][b]:.5f}" for k, _ in keys for b in bands))
    for lam in lams:
        sel = sorted((r for r in rows if r["lambda"] == lam), key=lambda r: r["num_classes"])
        if len({r["num_classes"] for r in sel}) < 2:
            continue
        for b in bands:
            for k, lab in keys:
                f = linear_fit([r["num_classes"] for r in sel], [r[k][b] for r in sel])
                fits[f"{lam:g}/{b}/{k}"] = f
                md.append(f"| {lam:g} | {b} | {lab} | {f['slope']:.2e} | {f['intercept']:.4f} | "
                          f"{f['r2']:.3f} | {f['r']:.2f} |")
    return {"fits": fits, "rows": rows, "csv": "\n".join(csv) + "\n", "markdown": "\n".join(md) + "\n"}


def _figure(rows: list, bands: list):
    """Paper 001 Fig. 7: AMS and UMS against the number of classes, one line per band."""
    keys = [(k, lab) for k, lab in SCORES if all(k in r for r in rows)]
    fig = report.figure(4.2 * len(keys), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(keys)))
    for ax, (k, lab) in zip(axes, keys):
        for lam in sorted({r["lambda"] for r in rows}):
            sel = sorted((r for r in rows if r["lambda"] == lam), key=lambda r: r["num_classes"])
            for b in bands:
                ax.plot([r["num_classes"] for r in sel], [100 * r[k][b] for r in sel], marker="o",
                        label=f"{b}, lambda {lam:g}")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("number of classes (k-means K)")
        ax.set_ylabel(f"{lab} (%)")
        ax.legend(fontsize=6)
    return fig
