"""SIDE's report: AMS / UMS per lambda (paper 001 Table 1 / 4), Fig. 4 and the extractions."""

from __future__ import annotations

import numpy as np

from memjax import report
from memjax import workdir as wd

__all__ = ["best_lambda", "results_table", "write_report", "band_order", "lambda_tag"]


def lambda_tag(lam: float) -> str:
    """File tag of a lambda: ``lambda_0007.500`` (sorts numerically)."""
    return f"lambda_{float(lam):08.3f}"



def band_order(bands) -> list:
    """Band names with ``low``, ``mid``, ``high`` first in that order (the paper's), then the rest."""
    names = list(bands.keys())
    std = [b for b in ("low", "mid", "high") if b in names]
    return std + [b for b in names if b not in std]


def best_lambda(rows: list, band: str, *, key: str = "ams") -> dict:
    """The row with the highest ``key`` in ``band`` among lambda > 0 (ties: smallest lambda)."""
    cand = [r for r in rows if r["lambda"] > 0]
    if not cand:
        return {}
    return max(cand, key=lambda r: (r[key][band], -r["lambda"]))


def results_table(rows: list, bands: list) -> tuple[str, str]:
    """(CSV, markdown) of AMS / UMS (percent) per lambda and band, like paper 001 Table 4."""
    rows = sorted(rows, key=lambda r: r["lambda"])
    head = ["lambda", "N_G"] + [f"AMS_{b}(%)" for b in bands] + [f"UMS_{b}(%)" for b in bands] + \
        ["mean_best", "mean_nn_l2"]
    lines = [",".join(head)]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r['lambda']:g}", str(r["num_generated"])] + \
            [f"{100 * r['ams'][b]:.2f}" for b in bands] + [f"{100 * r['ums'][b]:.2f}" for b in bands] + \
            [f"{r['mean_best']:.4f}", f"{r['mean_nn_l2']:.4f}"]
        lines.append(",".join(vals))
        md.append("| " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n", "\n".join(md) + "\n"


def table1(rows: list, bands: list) -> tuple[dict, list]:
    """Random (lambda 0) vs the best lambda per band (paper 001 Table 1): a dict and the
    markdown lines."""
    rows = sorted(rows, key=lambda r: r["lambda"])
    base = next((r for r in rows if r["lambda"] == 0), None)
    lines = ["| band | Random AMS(%) | Random UMS(%) | SIDE AMS(%) | SIDE UMS(%) | best lambda |",
             "|---|---|---|---|---|---|"]
    out = {}
    for b in bands:
        best = best_lambda(rows, b)
        if not best:
            continue
        out[b] = {"random_ams": base["ams"][b] if base else None,
                  "random_ums": base["ums"][b] if base else None,
                  "side_ams": best["ams"][b], "side_ums": best["ums"][b],
                  "best_lambda": best["lambda"]}
        rb = (f"{100 * base['ams'][b]:.2f} | {100 * base['ums'][b]:.2f}" if base else "- | -")
        lines.append(f"| {b} | {rb} | {100 * best['ams'][b]:.2f} | {100 * best['ums'][b]:.2f} | "
                     f"{best['lambda']:g} |")
    return out, lines


def fig_ams_ums(rows: list, bands: list):
    """Paper 001 Fig. 4: AMS and UMS (percent) against lambda, one line per band."""
    rows = sorted(rows, key=lambda r: r["lambda"])
    lams = [r["lambda"] for r in rows]
    fig = report.figure(9, 3.2)
    axes = fig.subplots(1, 2)
    for ax, k in zip(axes, ("ams", "ums")):
        for b in bands:
            ax.plot(lams, [100 * r[k][b] for r in rows], marker="o", label=b)
        ax.set_xlabel("lambda")
        ax.set_ylabel(f"{k.upper()} (%)")
        ax.legend()
    fig.tight_layout()
    return fig


def write_report(rows: list, workdir: str, config, train_images: np.ndarray,
                 extracted: dict | None = None, features: str = "pixels",
                 bands_origin: str = "user-chosen (metrics.bands)") -> dict:
    """Writes results.csv / results.md, the lambda plot and the extraction grid (``extracted``:
    the stored arrays of each lambda tag); returns the Table-1 style comparison."""
    bands = band_order(config.metrics.bands)
    csv, md = results_table(rows, bands)
    t1, cmp_lines = table1(rows, bands)
    wd.write_text(f"{workdir}/results.csv", csv)
    wd.write_text(f"{workdir}/results.md", f"Similarity: {config.metrics.measure} in {features} "
                  f"space; bands: {bands_origin}.\n\n## AMS / UMS per lambda\n\n" + md +
                  "\n## Random vs SIDE (best lambda per band)\n\n" + "\n".join(cmp_lines) + "\n")
    report.save_figure(fig_ams_ums(rows, bands), f"{workdir}/ams_ums_vs_lambda.png", tight=False)
    # extraction grid: the closest generated images of the best lambda over their neighbours
    first_band = "high" if "high" in bands else (bands[0] if bands else None)
    best = best_lambda(rows, first_band) if first_band else {}
    lam = best.get("lambda", sorted(r["lambda"] for r in rows)[-1])
    d = (extracted or {}).get(lambda_tag(lam))
    if d is not None:
        order = np.argsort(d["l2"])[: int(config.metrics.grid_size)]
        report.pairs(d["images"][order], train_images[d["index"][order]],
                     f"{workdir}/extracted.png", title=f"lambda = {lam:g}", scale=0.8)
    return {"table1": t1}
