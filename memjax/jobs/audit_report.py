"""The audit's report: ``report.json`` content, ``report.md``, the console table and figures.

Pure functions of the stage results (no timings, no paths in ``report.json``, so a resumed
run reproduces it bit for bit). Figures are drawn on Agg ``Figure`` objects
(:mod:`memjax.report`), never through pyplot's global state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from memjax.jobs import ease_rows
from memjax.metrics.groups import separation
from memjax.report import figure as _figure
from memjax.report import save_figure as _save
from memjax.report import show_image
from memjax.volume_settings import Setting

__all__ = ["REPORT_VERSION", "build_report", "make_figures", "summary_table", "report_markdown",
           "fig_growth_histograms", "fig_p_values", "fig_easiest_hardest", "fig_samples_nearest",
           "fig_diverse"]

REPORT_VERSION = 1


def build_report(config, subject, rows: dict, samples, mem, diverse) -> dict:
    """The content of ``report.json`` (deterministic: no timings, no paths)."""
    ec = config.ease
    row_labels = ease_rows.labels(ec, rows)
    report: dict[str, Any] = {
        "version": REPORT_VERSION,
        "model": {"description": subject.description.split(" (")[0], "step": subject.step,
                  "model_id": subject.model_id},
        "data": {"num_trained": int(subject.train.shape[0]),
                 "num_heldout": int(subject.heldout.shape[0]),
                 "image_shape": list(subject.train.shape[1:]),
                 "dimension": int(np.prod(subject.train.shape[1:]))},
        "settings_used": {
            "grid_steps": int(ec.grid_steps), "method": ec.method, "accumulate": ec.accumulate,
            "solver": ec.solver, "sigma": float(ec.sigma), "seed": int(config.seed),
            **ease_rows.settings_block(ec, rows),
            **{kind: [list(s) for s in sorted(rows[kind])] for kind in rows},
            **{f"{kind}_runs": [list(r) for r in sorted({tuple(v["run"]) for v in rows[kind].values()})]
               for kind in rows}},
    }
    ease = {}
    for kind, res in rows.items():
        table = []
        for s, v in sorted(res.items()):
            table.append({"label": row_labels[kind], "num_axes": s.num_axes, "steps": s.steps,
                          **separation(v["trained"], v["heldout"]),
                          "frac_stable_trained": float(np.mean(v["stable_trained"])),
                          "frac_stable_heldout": float(np.mean(v["stable_heldout"]))})
        ease[kind] = table
    report["ease_of_reproduction"] = ease
    report["auroc_train_vs_heldout"] = {kind: {Setting(r["num_axes"], r["steps"]).name: r["auroc"]
                                               for r in table} for kind, table in ease.items()}
    report["welch_p_values"] = {kind: {Setting(r["num_axes"], r["steps"]).name: r["p_value"]
                                       for r in table} for kind, table in ease.items()}
    best = {}
    for kind, table in ease.items():
        finite = [r for r in table if r["auroc"] is not None and np.isfinite(r["auroc"])]
        if finite:
            b = max(finite, key=lambda r: r["auroc"])
            best[kind] = {"setting": Setting(b["num_axes"], b["steps"]).name, "auroc": b["auroc"]}
    report["best_auroc"] = best
    if "network" in rows:
        s0 = _paper_setting(rows["network"])
        sc = np.r_[rows["network"][s0]["trained"]]
        order = np.argsort(-sc, kind="stable")
        report["ranking"] = {"setting": s0.name, "easiest_trained": order[:8].tolist(),
                             "hardest_trained": order[::-1][:8].tolist()}
    if samples is not None:
        mc = config.memorization
        report["sampling"] = {"num_samples": int(samples.shape[0]),
                              "sampler": config.sampling.sampler,
                              "num_steps": int(config.sampling.num_steps)}
        reproduced = len(set(mem["samples_nearest"][mem["samples_memorized"]].tolist()))
        mean = lambda a: float(np.mean(a))  # noqa: E731
        median = lambda a: float(np.median(a))  # noqa: E731
        ms = {"criterion": f"normalized_l2 < {mc.delta:g} (Carlini et al., n={mc.n}, "
                           f"alpha={mc.alpha:g})",
              "similarity_space": "pixels",
              "frac_memorized": mean(mem["samples_memorized"]),
              "frac_memorized_heldout_reference": mean(mem["heldout_memorized"]),
              "frac_d1_d2_below": mean(mem["samples_d1_d2"] < mc.ratio_threshold),
              "frac_d1_d2_below_heldout_reference": mean(mem["heldout_d1_d2"] < mc.ratio_threshold),
              "ratio_threshold": float(mc.ratio_threshold),
              "unique_memorized_over_samples": reproduced / max(len(samples), 1),
              "num_train_images_reproduced": reproduced,
              "median_l2_to_nearest": median(mem["samples_l2"]),
              "median_l2_to_nearest_heldout_reference": median(mem["heldout_l2"]),
              "median_normalized_l2": median(mem["samples_normalized_l2"]),
              "median_normalized_l2_heldout_reference": median(mem["heldout_normalized_l2"])}
        if "feature_similarity" in mem:
            ms["feature_similarity"] = feature_similarity(mem["feature_similarity"])
        report["memorization"] = ms
    if diverse is not None:
        report["diverse"] = {"num_diverse": int(np.sum(diverse["mask"])),
                             "num_samples": int(len(diverse["mask"])),
                             "features": config.diverse.features,
                             "feature_space": str(diverse.get("feature_space",
                                                              config.diverse.features)),
                             "method": config.diverse.method}
    return report


def feature_similarity(fsim: dict) -> dict:
    """The report's block for the best cosine similarities in a feature space: their mean and
    median for the samples and the held-out reference, and AMS / UMS (paper 001 eqs. 14-15) in
    each band, every number under the name of its feature space and the origin of its bands."""
    from memjax.metrics import memorization as mem

    out = {"feature_space": fsim["feature_space"], "bands_origin": fsim["bands_origin"],
           "measure": "cosine similarity to the nearest training image"}
    for k in ("samples", "heldout"):
        sim = np.asarray(fsim[f"{k}_cosine"], np.float64)
        out[f"{k}_mean"], out[f"{k}_median"] = float(sim.mean()), float(np.median(sim))
    out["ams_ums"] = {}
    for name, band in fsim["bands"].items():
        row = {"band": [band.lo, band.hi]}
        for k in ("samples", "heldout"):
            r = mem.ams_ums_from_best(fsim[f"{k}_cosine"], fsim[f"{k}_index"],
                                      int(fsim["num_train"]), band=band)
            row[f"{k}_ams"], row[f"{k}_ums"] = float(r.ams), float(r.ums)
        out["ams_ums"][name] = row
    return out


def _paper_setting(res: dict) -> Setting:
    """The paper's ranking setting (N=1, step=1) when present, else the cheapest setting."""
    if Setting(1, 1) in res:
        return Setting(1, 1)
    return min(res, key=lambda s: (s.num_axes * s.steps, s))



def fig_growth_histograms(kind: str, res: dict):
    """Paper 000 Fig. 2: growth of trained vs held-out images for up to four settings."""
    shown = _histogram_settings(list(res))
    fig = _figure(3.6 * len(shown), 3.0)
    axes = fig.subplots(1, len(shown), squeeze=False)
    for ax, s in zip(axes[0], shown):
        v = res[s]
        lo = min(v["trained"].min(), v["heldout"].min())
        hi = max(v["trained"].max(), v["heldout"].max())
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        ax.hist(v["trained"], bins=bins, alpha=0.6, label="trained", color="C3")
        ax.hist(v["heldout"], bins=bins, alpha=0.6, label="held out", color="C0")
        st = separation(v["trained"], v["heldout"])
        ax.set_title(f"{s.name}\nAUROC {st['auroc']:.2f}", fontsize=9)
        ax.set_xlabel("log volume growth (nats)")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{kind} score: trained vs held-out (paper 000 Fig. 2)", fontsize=10)
    fig.tight_layout()
    return fig


def fig_p_values(rows: dict):
    """Paper 000 Fig. 3: p-values against N (fewest / most steps) and against steps."""
    fig = _figure(12, 3.3)
    axes = fig.subplots(1, 3)
    for kind, res in rows.items():
        settings = sorted(res)
        p = {s: separation(res[s]["trained"], res[s]["heldout"])["p_value"] for s in settings}
        steps_all = sorted({s.steps for s in settings})
        smax, smin = steps_all[-1], steps_all[0]
        for ax, st in ((axes[0], smax), (axes[2], smin)):
            xs = sorted(s.num_axes for s in settings if s.steps == st)
            ax.semilogy(xs, [max(p[Setting(x, st)], 1e-300) for x in xs], "o-",
                        label=f"{kind} (steps={st})")
        n1 = sorted(s.steps for s in settings if s.num_axes == min(x.num_axes for x in settings))
        nmin = min(x.num_axes for x in settings)
        axes[1].loglog(n1, [max(p[Setting(nmin, x)], 1e-300) for x in n1], "o-",
                       label=f"{kind} (N={nmin})")
    for ax, title, xl in ((axes[0], "p-value vs N (most steps)", "N axes"),
                          (axes[1], "p-value vs steps (fewest axes)", "steps"),
                          (axes[2], "p-value vs N (fewest steps)", "N axes")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xl)
        ax.axhline(0.05, color="gray", ls=":", lw=1)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("Welch t-test p-value")
    fig.suptitle("trained vs held-out: p-values against N and steps (paper 000 Fig. 3)",
                 fontsize=10)
    fig.tight_layout()
    return fig


def fig_easiest_hardest(kind: str, res: dict, train: np.ndarray, num_show: int):
    """Paper 000 Figs. 7 / 8: easiest and hardest trained images by the score ``kind``."""
    s0 = _paper_setting(res)
    sc = res[s0]["trained"]
    k = min(int(num_show), len(sc) // 2)
    order = np.argsort(-sc, kind="stable")
    fig = _figure(1.1 * k, 2.6)
    axes = fig.subplots(2, k, squeeze=False)
    for j in range(k):
        show_image(axes[0][j], train[order[j]])
        axes[0][j].set_title(f"{sc[order[j]]:.2f}", fontsize=6)
        show_image(axes[1][j], train[order[-1 - j]])
        axes[1][j].set_title(f"{sc[order[-1 - j]]:.2f}", fontsize=6)
    axes[0][0].set_ylabel("easiest", fontsize=8)
    axes[1][0].set_ylabel("hardest", fontsize=8)
    fig.suptitle(f"{kind} score, {s0.name}: easiest (top) and hardest (bottom) trained "
                 "images (paper 000 Fig. 7 / 8)", fontsize=9)
    fig.tight_layout()
    return fig


def fig_samples_nearest(samples: np.ndarray, mem: dict, train: np.ndarray, num_show: int):
    """Samples (top) over their nearest training images (bottom), spread over normalized L2."""
    k = min(int(num_show), len(samples))
    order = np.argsort(mem["samples_normalized_l2"], kind="stable")
    pick = order[np.linspace(0, len(order) - 1, k).round().astype(int)]
    fig = _figure(1.1 * k, 2.7)
    axes = fig.subplots(2, k, squeeze=False)
    for j, i in enumerate(pick):
        show_image(axes[0][j], samples[i])
        axes[0][j].set_title(f"{mem['samples_normalized_l2'][i]:.2f}"
                             + ("*" if mem["samples_memorized"][i] else ""), fontsize=6)
        show_image(axes[1][j], train[mem["samples_nearest"][i]])
    axes[0][0].set_ylabel("sample", fontsize=8)
    axes[1][0].set_ylabel("nearest\ntrained", fontsize=8)
    fig.suptitle("samples (top, normalized L2 above; * = memorized) and their nearest "
                 "training images (bottom)", fontsize=9)
    fig.tight_layout()
    return fig


def fig_diverse(diverse: dict):
    """Paper 003: the t-SNE embedding with the diverse samples marked."""
    emb, mask = diverse["embedding"], diverse["mask"].astype(bool)
    nreal = emb.shape[0] - mask.shape[0]
    fig = _figure(4.2, 4)
    ax = fig.subplots()
    ax.scatter(*emb[:nreal].T, s=5, c="gray", label="real")
    ax.scatter(*emb[nreal:][~mask].T, s=5, c="C0", label="generated, inside")
    ax.scatter(*emb[nreal:][mask].T, s=12, c="C3", label="generated, diverse")
    ax.legend(fontsize=7)
    ax.set_title(f"t-SNE: {int(mask.sum())} diverse samples (paper 003)", fontsize=9)
    fig.tight_layout()
    return fig


def make_figures(config, subject, rows: dict, samples, mem, diverse, fig_dir: str) -> dict:
    """Writes the audit's figures (PNG, process 0) and returns ``{name: path relative to the
    report}``."""
    figs = {f"growth_histograms_{kind}": fig_growth_histograms(kind, res)
            for kind, res in rows.items()}
    figs["p_values"] = fig_p_values(rows)
    kind = "network" if "network" in rows else next(iter(rows), None)
    if kind is not None:
        figs["easiest_hardest"] = fig_easiest_hardest(kind, rows[kind], subject.train,
                                                      config.report.num_show)
    if samples is not None:
        figs["samples_nearest"] = fig_samples_nearest(samples, mem, subject.train,
                                                      config.report.num_show)
    if diverse is not None and diverse["embedding"].size:
        figs["diverse_tsne"] = fig_diverse(diverse)
    out = {}
    for name, fig in figs.items():
        _save(fig, f"{fig_dir}/{name}.png", tight=False)
        out[name] = f"{fig_dir.rstrip('/').rsplit('/', 1)[-1]}/{name}.png"
    return out


def _histogram_settings(settings: list) -> list:
    """Up to four settings to histogram: the paper's (N=1, step=1), the largest N at the most
    steps, and the extremes in between."""
    settings = sorted(settings, key=lambda s: (s.num_axes, s.steps))
    pick = [_paper_setting({s: None for s in settings})]
    big = max(settings, key=lambda s: (s.num_axes, s.steps))
    for s in (min(settings, key=lambda s: (-s.steps, s.num_axes)),
              max(settings, key=lambda s: (s.num_axes, -s.steps)), big):
        if s not in pick:
            pick.append(s)
    return pick[:4]


_TABLE_COLUMNS = ("num_axes", "steps", "auroc", "p_value", "mean_trained", "mean_heldout")
_TABLE_ROW = "{:10s} {:4d} {:5d} {:6.3f} {:9.2e} {:8.2f} {:8.2f} {:6.2f}"


def summary_table(report: dict) -> str:
    """A short plain-text table of the report's headline numbers."""
    lines = ["", "memorization audit: ease of reproduction, trained vs held-out",
             f"{'score':10s} {'N':>4s} {'steps':>5s} {'AUROC':>6s} {'p-value':>9s} "
             f"{'mean tr':>8s} {'mean ho':>8s} {'stable':>6s}"]
    for kind, table in report.get("ease_of_reproduction", {}).items():
        for r in table:
            nums = [r[k] if r[k] is not None else float("nan") for k in _TABLE_COLUMNS]
            stable = min(r["frac_stable_trained"], r["frac_stable_heldout"])
            lines.append(_TABLE_ROW.format(kind, *nums, stable))
    for kind, label in report.get("settings_used", {}).get("row_labels", {}).items():
        lines.append(f"  {kind:10s} = {label}")
    if "memorization" in report:
        m = report["memorization"]
        lines.append(f"samples: {report['sampling']['num_samples']}; memorized "
                     f"({m['criterion']}): {m['frac_memorized']:.3f} (held-out reference "
                     f"{m['frac_memorized_heldout_reference']:.3f}); distinct training images "
                     f"reproduced: {m['num_train_images_reproduced']}")
    if "diverse" in report:
        d = report["diverse"]
        lines.append(f"diverse samples: {d['num_diverse']} of {d['num_samples']} "
                     f"(in {d.get('feature_space', d['features'])})")
    return "\n".join(lines)


def report_markdown(report: dict, figures: dict) -> str:
    """``report.md``: the summary table, the settings, and the figures."""
    su = report["settings_used"]
    md = ["# memjax memorization audit", "",
          f"Model: {report['model']['description']} (step {report['model']['step']}); "
          f"{report['data']['num_trained']} trained and {report['data']['num_heldout']} held-out "
          f"images, D = {report['data']['dimension']}.", "",
          f"Ease of reproduction: log volume growth along the probability-flow ODE (paper 000, "
          f"Algorithm 1), method `{su['method']}`, accumulation `{su['accumulate']}`, solver "
          f"`{su['solver']}`, grid of {su['grid_steps']} steps, unless a row's label says "
          "otherwise; `exact score` is the exact score of the training set (a perfect memoriser, "
          "paper 000 eq. 11); `Algorithm 1` rows are the paper's algorithm as written "
          "(finite-difference neighbours, raw per-axis stretches). AUROC: trained images positive; "
          "1 = every trained image grows more than every held-out image, 0.5 = no separation. "
          "`stable`: fraction of images whose steps all passed the explicit-Euler stability "
          "check.", "",
          "| score | N | steps | AUROC | Welch p | mean trained | mean held-out | stable |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for kind, table in report["ease_of_reproduction"].items():
        for r in table:
            auc = r["auroc"] if r["auroc"] is not None else float("nan")
            p = r["p_value"] if r["p_value"] is not None else float("nan")
            md.append(f"| {r.get('label', kind)} | {r['num_axes']} | {r['steps']} | {auc:.3f} | {p:.2e} | "
                      f"{r['mean_trained']:.2f} | {r['mean_heldout']:.2f} | "
                      f"{min(r['frac_stable_trained'], r['frac_stable_heldout']):.2f} |")
    if "memorization" in report:
        m = report["memorization"]
        md += ["", "## Samples", "",
               f"{report['sampling']['num_samples']} samples ({report['sampling']['sampler']}, "
               f"{report['sampling']['num_steps']} steps).", "",
               "| measure | samples | held-out images (reference) |", "| --- | ---: | ---: |",
               f"| memorized: {m['criterion']} | {m['frac_memorized']:.3f} | "
               f"{m['frac_memorized_heldout_reference']:.3f} |",
               f"| d1/d2 < {m['ratio_threshold']:.3g} | {m['frac_d1_d2_below']:.3f} | "
               f"{m['frac_d1_d2_below_heldout_reference']:.3f} |",
               f"| median L2 to nearest trained | {m['median_l2_to_nearest']:.3f} | "
               f"{m['median_l2_to_nearest_heldout_reference']:.3f} |",
               f"| median normalized L2 | {m['median_normalized_l2']:.3f} | "
               f"{m['median_normalized_l2_heldout_reference']:.3f} |", "",
               f"Distinct training images reproduced: {m['num_train_images_reproduced']} "
               f"(UMS {m['unique_memorized_over_samples']:.3f})."]
        if "feature_similarity" in m:
            md += _feature_similarity_markdown(m["feature_similarity"])
    if "diverse" in report:
        d = report["diverse"]
        md += ["", f"Diverse samples (paper 003, in {d.get('feature_space', d['features'])}): "
               f"{d['num_diverse']} of {d['num_samples']}."]
    md += ["", "## Figures", ""]
    for name, path in figures.items():
        md.append(f"![{name}]({path})")
        md.append("")
    return "\n".join(md)


def _feature_similarity_markdown(f: dict) -> list:
    space = f["feature_space"]
    md = ["", f"Cosine similarity to the nearest training image in **{space}** (bands: "
          f"{f['bands_origin']}): mean {f['samples_mean']:.3f} for samples, "
          f"{f['heldout_mean']:.3f} for held-out images.", "",
          f"| band ({space} cosine) | AMS samples | UMS samples | AMS held-out | UMS held-out |",
          "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in f["ams_ums"].items():
        md.append(f"| {name} [{r['band'][0]:g}, {r['band'][1]:g}] | {r['samples_ams']:.3f} | "
                  f"{r['samples_ums']:.3f} | {r['heldout_ams']:.3f} | {r['heldout_ums']:.3f} |")
    return md
