"""Figures and summaries for reports: histograms, image grids, generated/training pairs, t-SNE
scatter plots with the hull of the real points, and JSON summaries.

Plots are drawn on matplotlib ``Figure`` objects with the Agg canvas (no global backend is
changed, no display is needed) and written as PNG files. Images follow the memjax convention:
``[n, H, W, C]`` in ``[-1, 1]``, ``C`` in {1, 3}.
"""

from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

import numpy as np

from memjax import workdir

__all__ = ["figure", "histogram", "image_grid", "pairs", "save_figure", "save_json", "scatter_hull",
           "show_image", "to_jsonable"]


def figure(width: float, height: float):
    """A matplotlib ``Figure`` on the Agg canvas (no pyplot, no global backend change)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path: str, *, tight: bool = True) -> str:
    """Writes ``fig`` as PNG at ``path`` (atomic, any epath URL, process 0 only)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight" if tight else None)
    workdir.write_bytes(path, buf.getvalue())
    return path


def _to_display(images: np.ndarray) -> np.ndarray:
    """``[n, H, W, C]`` in [-1, 1] -> ``[n, H, W]`` or ``[n, H, W, 3]`` in [0, 1]."""
    x = np.asarray(images, np.float32)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"images: expected [n, H, W, C] with C in (1, 3), got shape {x.shape}")
    x = np.clip((x + 1.0) / 2.0, 0.0, 1.0)
    return x[..., 0] if x.shape[-1] == 1 else x


def show_image(ax, image) -> None:
    """Draws one ``[H, W, C]`` image in ``[-1, 1]`` on ``ax`` (grey for C = 1), no ticks."""
    ax.imshow(_to_display(np.asarray(image)[None])[0], cmap="gray", vmin=0, vmax=1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def histogram(values: Any, path: str, *, bins: int = 50, title: str = "", xlabel: str = "",
              thresholds: Sequence[float] = (), bands: Mapping[str, tuple] | None = None,
              log: bool = False) -> str:
    """Histogram of ``values`` with optional vertical threshold lines and shaded bands
    (``{"low": (lo, hi), ...}``). Returns ``path``."""
    v = np.asarray(values, np.float64).ravel()
    fig = figure(6, 3.5)
    ax = fig.add_subplot()
    ax.hist(v[np.isfinite(v)], bins=bins, color="#4477aa", alpha=0.85, log=log)
    colours = ["#ccbb44", "#ee6677", "#aa3377", "#66ccee"]
    for j, (name, band) in enumerate((bands or {}).items()):
        lo, hi = band[0], band[1]
        ax.axvspan(lo, hi, color=colours[j % len(colours)], alpha=0.2, label=name)
    for t in thresholds:
        ax.axvline(t, color="k", ls="--", lw=1)
    if bands:
        ax.legend(fontsize=8)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    return save_figure(fig, path)


def image_grid(images: Any, path: str, *, ncols: int = 8, titles: Sequence[str] | None = None,
               title: str = "", scale: float = 1.2) -> str:
    """A grid of images (row-major, ``ncols`` per row), optional per-image titles."""
    x = _to_display(images)
    n = x.shape[0]
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = figure(ncols * scale, nrows * scale + (0.3 if title else 0.0))
    for i in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.axis("off")
        if i < n:
            ax.imshow(x[i], cmap="gray" if x.ndim == 3 else None, vmin=0, vmax=1,
                      interpolation="nearest")
            if titles is not None:
                ax.set_title(str(titles[i]), fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def pairs(generated: Any, train: Any, path: str, *, labels: Sequence[str] | None = None,
          title: str = "", scale: float = 1.2) -> str:
    """Generated images (top row) above their matched training images (bottom row), with a
    label per column (e.g. the similarity and the training index)."""
    g, t = _to_display(generated), _to_display(train)
    if g.shape != t.shape:
        raise ValueError(f"train: expected the shape of generated {g.shape}, got {t.shape}")
    n = g.shape[0]
    fig = figure(max(n, 1) * scale, 2 * scale + 0.5)
    for i in range(n):
        for row, img in enumerate((g[i], t[i])):
            ax = fig.add_subplot(2, n, row * n + i + 1)
            ax.imshow(img, cmap="gray" if g.ndim == 3 else None, vmin=0, vmax=1,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel("generated" if row == 0 else "training", fontsize=8)
            if row == 0 and labels is not None:
                ax.set_title(str(labels[i]), fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


def scatter_hull(real: Any, generated: Any, path: str, *, hull: Any = None,
                 marked: Any = None, title: str = "", labels=("real", "generated"),
                 marked_label: str = "diverse") -> str:
    """2-D scatter of real and generated points; ``hull`` (``[h, 2]`` vertices in order) is
    drawn closed; generated points where ``marked`` is True are circled."""
    r = np.asarray(real, np.float64)
    g = np.asarray(generated, np.float64)
    for name, a in (("real", r), ("generated", g)):
        if a.ndim != 2 or a.shape[1] != 2:
            raise ValueError(f"{name}: expected points [n, 2], got shape {a.shape}")
    fig = figure(6, 6)
    ax = fig.add_subplot()
    ax.scatter(r[:, 0], r[:, 1], s=4, c="#4477aa", alpha=0.5, label=labels[0])
    ax.scatter(g[:, 0], g[:, 1], s=4, c="#ee6677", alpha=0.7, label=labels[1])
    if hull is not None:
        h = np.asarray(hull, np.float64)
        if h.ndim == 2 and h.shape[0] > 0:
            h = np.concatenate([h, h[:1]])
            ax.plot(h[:, 0], h[:, 1], "k-", lw=1, label="hull of real")
    if marked is not None:
        m = np.asarray(marked, bool)
        if m.shape != (g.shape[0],):
            raise ValueError(f"marked: expected a mask of shape ({g.shape[0]},), got {m.shape}")
        ax.scatter(g[m, 0], g[m, 1], s=40, facecolors="none", edgecolors="k", lw=1,
                   label=f"{marked_label} ({int(m.sum())})")
    ax.legend(fontsize=8, markerscale=2)
    ax.set_title(title)
    ax.set_aspect("equal", adjustable="datalim")
    return save_figure(fig, path)


to_jsonable = workdir.to_jsonable


def save_json(obj: Any, path: str) -> str:
    """Writes ``to_jsonable(obj)`` atomically (indent 2; process 0 only)."""
    workdir.save_json(path, obj, indent=2)
    return path
