r"""SIDE's report: AMS / UMS per lambda (paper 001 Table 4), the pre-declared summary against
"Random" (Table 1), Fig. 4 and the extractions.

The SIDE number is fixed before the data are seen: the mean over the sweep's lambdas inside
``config.lambda_band`` (paper 001 section 5.3 averages lambda from 5 to 9),

.. math:: \overline{\mathrm{AMS}}_b = \frac{1}{|\Lambda|} \sum_{\lambda \in \Lambda}
          \mathrm{AMS}_b(\lambda), \qquad \Lambda = \{\lambda \in S_\lambda : lo \le \lambda \le hi\}

for every similarity band ``b`` (likewise both UMS variants). The lambda with the highest
score is selected on the numbers it is reported with, so it appears only as a labelled
post-hoc extra. UMS is given with the best match of each image (``ums``) and as eq. 15
defines it, every training image in the band (``ums_all``).
"""

from __future__ import annotations

import numpy as np

from memjax import report
from memjax import workdir as wd

__all__ = ["best_lambda", "results_table", "write_report", "band_order", "lambda_tag",
           "lambda_band_summary", "table1", "SCORES"]

SCORES = (("ams", "AMS"), ("ums", "UMS best match"), ("ums_all", "UMS eq. 15 (all in band)"))
"""Row keys of the scores and their labels."""


def lambda_tag(lam: float) -> str:
    """File tag of a lambda: ``lambda_0007.500`` (sorts numerically)."""
    return f"lambda_{float(lam):08.3f}"


def band_order(bands) -> list:
    """Band names with ``low``, ``mid``, ``high`` first in that order (the paper's), then the
    rest, where ``<prefix>_low / _mid / _high`` keep that order within their prefix."""
    names = list(bands.keys())
    std = [b for b in ("low", "mid", "high") if b in names]
    rest = [b for b in names if b not in std]
    rank = {"low": 0, "mid": 1, "high": 2}

    def key(b):
        prefix, _, level = b.rpartition("_")
        return (prefix, rank[level]) if prefix and level in rank else (b, -1)

    return std + sorted(rest, key=lambda b: (rest.index(b) if key(b)[1] < 0 else -1, key(b)))


def _scores(rows: list) -> list:
    """The score keys every row has (old stored rows may lack ``ums_all``)."""
    return [(k, lab) for k, lab in SCORES if all(k in r for r in rows)]


def best_lambda(rows: list, band: str, *, key: str = "ams") -> dict:
    """POST-HOC: the row with the highest ``key`` in ``band`` among lambda > 0 (ties: smallest
    lambda). Selected on the reported numbers, so it over-states SIDE; for the record only."""
    cand = [r for r in rows if r["lambda"] > 0]
    if not cand:
        return {}
    return max(cand, key=lambda r: (r[key][band], -r["lambda"]))


def lambda_band_summary(rows: list, bands: list, lambda_band) -> dict:
    """The pre-declared SIDE summary: for each band and score, the mean over the rows whose
    lambda lies in ``lambda_band = (lo, hi)`` (inclusive), whichever lambda scores best.

    Returns ``{"lambdas": [...], band: {score: mean}}``; ``{"lambdas": []}`` when no row is in
    the band (no summary, rather than one taken from outside the declared range).
    """
    lo, hi = (float(v) for v in lambda_band)
    inside = sorted((r for r in rows if lo <= r["lambda"] <= hi), key=lambda r: r["lambda"])
    out: dict = {"lambdas": [r["lambda"] for r in inside]}
    if not inside:
        return out
    for b in bands:
        out[b] = {k: float(np.mean([r[k][b] for r in inside])) for k, _ in _scores(inside)}
    return out


def results_table(rows: list, bands: list) -> tuple[str, str]:
    """(CSV, markdown) of AMS / UMS (percent) per lambda and band, like paper 001 Table 4.
    ``UMS_*`` is the best-match UMS, ``UMSall_*`` eq. 15's."""
    rows = sorted(rows, key=lambda r: r["lambda"])
    prefix = {"ams": "AMS", "ums": "UMS", "ums_all": "UMSall"}
    keys = [k for k, _ in _scores(rows)]
    head = ["lambda", "N_G"] + [f"{prefix[k]}_{b}(%)" for k in keys for b in bands] + \
        ["mean_best", "mean_nn_l2"]
    lines = [",".join(head)]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r['lambda']:g}", str(r["num_generated"])] + \
            [f"{100 * r[k][b]:.2f}" for k in keys for b in bands] + \
            [f"{r['mean_best']:.4f}", f"{r['mean_nn_l2']:.4f}"]
        lines.append(",".join(vals))
        md.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n", "\n".join(md) + "\n"


def table1(rows: list, bands: list, lambda_band) -> tuple[dict, list]:
    """Random (lambda 0) against SIDE's pre-declared summary (paper 001 Table 1), per band and
    score, then the post-hoc best lambda (labelled as such): a dict and the markdown lines."""
    rows = sorted(rows, key=lambda r: r["lambda"])
    base = next((r for r in rows if r["lambda"] == 0), None)
    summ = lambda_band_summary(rows, bands, lambda_band)
    lo, hi = (float(v) for v in lambda_band)
    lams = ", ".join(f"{v:g}" for v in summ["lambdas"]) or "none in the sweep"
    lines = [f"SIDE = mean over lambda in [{lo:g}, {hi:g}] declared in the config "
             f"(lambdas: {lams}).", "",
             "| band | score | Random (%) | SIDE (%) | SIDE / Random |", "|---|---|---|---|---|"]
    out = {"lambda_band": [lo, hi], "lambdas": summ["lambdas"], "bands": {}}
    for b in bands:
        out["bands"][b] = {}
        for k, lab in _scores(rows):
            rnd = base[k][b] if base else None
            side = summ[b][k] if b in summ else None
            out["bands"][b][k] = {"random": rnd, "side": side}
            ratio = f"{side / rnd:.2f}" if (rnd and side is not None) else "-"
            fmt = (lambda v: "-" if v is None else f"{100 * v:.2f}")
            lines.append(f"| {b} | {lab} | {fmt(rnd)} | {fmt(side)} | {ratio} |")
    lines += ["", "Post hoc (selected on these numbers, so biased upwards; not the SIDE number):", "",
              "| band | best lambda by AMS | AMS (%) | UMS best (%) |", "|---|---|---|---|"]
    out["post_hoc_best"] = {}
    for b in bands:
        best = best_lambda(rows, b)
        if best:
            out["post_hoc_best"][b] = {"lambda": best["lambda"], "ams": best["ams"][b],
                                       "ums": best["ums"][b]}
            lines.append(f"| {b} | {best['lambda']:g} | {100 * best['ams'][b]:.2f} | "
                         f"{100 * best['ums'][b]:.2f} |")
    return out, lines


def fig_ams_ums(rows: list, bands: list, lambda_band=None):
    """Paper 001 Fig. 4: AMS and both UMS (percent) against lambda, one line per band; the
    declared lambda band shaded."""
    rows = sorted(rows, key=lambda r: r["lambda"])
    lams = [r["lambda"] for r in rows]
    scores = _scores(rows)
    fig = report.figure(4.2 * len(scores), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(scores)))
    for ax, (k, lab) in zip(axes, scores):
        for b in bands:
            ax.plot(lams, [100 * r[k][b] for r in rows], marker="o", markersize=2.5, label=b)
        if lambda_band is not None:
            ax.axvspan(float(lambda_band[0]), float(lambda_band[1]), color="0.85", zorder=0)
        ax.set_xlabel("lambda")
        ax.set_ylabel(f"{lab} (%)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_report(rows: list, workdir: str, config, train_images: np.ndarray,
                 extracted: dict | None = None, features: str = "pixels",
                 bands_origin: str = "user-chosen (metrics.bands)") -> dict:
    """Writes results.csv / results.md, the lambda plot and the extraction grid (``extracted``:
    the stored arrays of each lambda tag); returns the Table-1 style comparison."""
    bands = band_order(config.metrics.bands)
    lambda_band = tuple(config.get("lambda_band", (5.0, 9.0)))
    csv, md = results_table(rows, bands)
    t1, cmp_lines = table1(rows, bands, lambda_band)
    guidance = config.get("guidance_classifier", "td")
    wd.write_text(f"{workdir}/results.csv", csv)
    wd.write_text(f"{workdir}/results.md", f"Similarity: {config.metrics.measure} in {features} "
                  f"space; bands: {bands_origin}; guidance classifier: {guidance}.\n\n"
                  "## AMS / UMS per lambda\n\n" + md +
                  "\n## Random vs SIDE (pre-declared lambda band)\n\n" + "\n".join(cmp_lines) + "\n")
    report.save_figure(fig_ams_ums(rows, bands, lambda_band), f"{workdir}/ams_ums_vs_lambda.png",
                       tight=False)
    # extraction grid: the declared band's middle lambda (not the best: that would be selected)
    lams = sorted(r["lambda"] for r in rows)
    mid = 0.5 * (lambda_band[0] + lambda_band[1])
    lam = min(lams, key=lambda v: (abs(v - mid), v))
    d = (extracted or {}).get(lambda_tag(lam))
    if d is not None:
        order = np.argsort(d["l2"])[: int(config.metrics.grid_size)]
        report.pairs(d["images"][order], train_images[d["index"][order]],
                     f"{workdir}/extracted.png", title=f"lambda = {lam:g}", scale=0.8)
    return {"table1": t1}
