r"""Paper 000 Fig. 2 right and Fig. 3: training images a model reproduces against those it does not.

Paper 000 compares the ease of reproduction (log volume growth, Algorithm 1) of CIFAR-10
training images that Carlini et al. found memorized by a model that *generalizes* against
unmemorized ones (Fig. 2 right; a t-test, significant at 1 %), and plots the t-test p-values
against the number of axes ``N`` and of steps (Fig. 3). Here the memorized set is measured
on the model itself:

1. ``contrast.num_samples`` samples of the model (``sampling.*``; memjax.sampling);
2. each sample's nearest training image and Carlini's normalized L2 (paper 000 eq. 7, ``n``
   nearest, ``alpha``; :func:`memjax.metrics.groups.memorization_metrics`);
3. a training image is **reproduced at delta** when some sample has it as nearest training
   image with normalized L2 ``< delta`` (:func:`reproduced_mask`), for each of
   ``contrast.deltas`` (the first is the primary criterion; later ones are looser and
   reported as such). **Not reproduced**: no sample within the loosest delta;
4. the groups: the reproduced images at the loosest delta (the first
   ``contrast.max_per_group`` by index) and ``contrast.max_per_group`` not-reproduced images
   drawn by a seeded permutation -- fixed before any growth is computed;
5. the growth of both groups for every ``ease.network.settings`` (the audit's
   :func:`memjax.audit.ease_scores`: one run per Pareto-maximal setting with ``qr``);
6. per delta and setting: AUROC (reproduced positive), Welch's t-test (the paper's t-test),
   and the Mann-Whitney U test (SciPy), both two-sided.

Outputs in the workdir: ``contrast.json``, ``contrast.md``, ``contrast.png`` (histograms at the
largest setting, p-values against N and steps); stages cached under ``workdir/contrast/``.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np

from memjax import workdir as wd
from memjax.metrics.groups import separation

__all__ = ["reproduced_mask", "contrast_groups", "contrast_stats", "run_contrast",
           "fig_contrast"]


def reproduced_mask(nearest: np.ndarray, normalized_l2: np.ndarray, num_train: int,
                    delta: float) -> np.ndarray:
    """``[num_train]`` bool: training image ``i`` is the nearest training image of at least one
    sample whose normalized L2 (paper 000 eq. 7) is below ``delta``."""
    nearest = np.asarray(nearest).reshape(-1)
    ratio = np.asarray(normalized_l2).reshape(-1)
    if nearest.shape != ratio.shape:
        raise ValueError(f"normalized_l2: expected one value per sample like nearest "
                         f"{nearest.shape}, got {ratio.shape}")
    if nearest.size and (nearest.min() < 0 or nearest.max() >= num_train):
        raise ValueError(f"nearest: expected training indices in [0, {num_train}), got "
                         f"[{nearest.min()}, {nearest.max()}]")
    if not delta > 0:
        raise ValueError(f"delta: expected a positive threshold, got {delta}")
    mask = np.zeros(num_train, bool)
    mask[nearest[ratio < delta]] = True
    return mask


def contrast_groups(reproduced_loose: np.ndarray, max_per_group: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the positive group (reproduced at the loosest delta, the first
    ``max_per_group`` by index) and of the negative group (``max_per_group`` of the rest,
    drawn by a permutation seeded with ``seed``), both sorted."""
    pos = np.flatnonzero(reproduced_loose)[:max_per_group]
    rest = np.flatnonzero(~np.asarray(reproduced_loose))
    neg = np.sort(np.random.default_rng(seed).permutation(rest)[:max_per_group])
    return pos, neg


def contrast_stats(pos: np.ndarray, neg: np.ndarray) -> dict:
    """AUROC, Welch's t-test (via :func:`separation`) and the two-sided Mann-Whitney U test."""
    from scipy import stats

    out = separation(pos, neg)
    out = {k.replace("trained", "reproduced").replace("heldout", "not_reproduced"): v
           for k, v in out.items()}
    if len(pos) >= 1 and len(neg) >= 1 and np.all(np.isfinite(np.r_[pos, neg])):
        mw = stats.mannwhitneyu(np.asarray(pos, np.float64), np.asarray(neg, np.float64),
                                alternative="two-sided")
        out["mann_whitney_p"] = float(mw.pvalue)
    else:
        out["mann_whitney_p"] = float("nan")
    return out


def _samples_and_matches(config, subject, workdir, log) -> dict:
    from memjax import sampling
    from memjax.metrics.groups import memorization_metrics

    sc, mc, cc = config.sampling, config.memorization, config.contrast
    shape = tuple(subject.train.shape[1:])

    def draw():
        key = jax.random.fold_in(jax.random.key(int(config.seed)), 2)
        x = sampling.sample(subject.score_fn, subject.sde, key, int(cc.num_samples), shape,
                            sampler=sc.sampler, num_steps=int(sc.num_steps), eta=float(sc.eta),
                            batch_size=int(sc.batch_size))
        m = memorization_metrics(x, subject.train, n=int(mc.n), alpha=float(mc.alpha))
        return {"samples": x, "nearest": m["nearest"], "normalized_l2": m["normalized_l2"],
                "l2": m["l2"]}

    key = (subject.model_id, sc.to_dict(), int(cc.num_samples), int(mc.n), float(mc.alpha),
           int(config.seed))
    arrays, reused = wd.cached(f"{workdir}/contrast/samples", key, draw, log=log)
    log(f"[contrast] {int(cc.num_samples)} samples and their nearest training images"
        f"{' (cached)' if reused else ''}")
    return arrays


def run_contrast(config, workdir: str, *, log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) the contrast; returns the content of ``workdir/contrast.json``."""
    from memjax import audit
    from memjax.jobs import ease_rows
    from memjax.volume_settings import parse_settings

    workdir, cc = str(workdir), config.contrast
    wd.makedirs(f"{workdir}/contrast")
    subject = audit.prepare_model(config, workdir, log=log)
    m = _samples_and_matches(config, subject, workdir, log)
    ntr = len(subject.train)
    deltas = [float(d) for d in cc.deltas]
    masks = {d: reproduced_mask(m["nearest"], m["normalized_l2"], ntr, d) for d in deltas}
    pos, neg = contrast_groups(masks[max(deltas)], int(cc.max_per_group), int(config.seed))
    out = {"model": subject.description, "num_train": ntr, "num_samples": int(cc.num_samples),
           "criterion": f"normalized L2 (paper 000 eq. 7, n={config.memorization.n}, "
                        f"alpha={config.memorization.alpha:g}) < delta",
           "num_reproduced": {f"{d:g}": int(masks[d].sum()) for d in deltas},
           "positives": pos.tolist(), "negatives": neg.tolist(), "rows": []}
    if min(len(pos), len(neg)) < 2:
        log(f"[contrast] only {len(pos)} reproduced / {len(neg)} other images: no contrast")
        return _finish(out, workdir, None, log)
    ec = config.ease
    opts = ease_rows.row_options(ec, "network")
    out["label"] = ease_rows.row_label("network", opts)
    settings = parse_settings(ec.network.settings, dim=int(np.prod(subject.train.shape[1:])),
                              grid_steps=int(ec.grid_steps), name="ease.network.settings")
    res, timing = audit.ease_scores(
        subject.score_fn, subject.sde, subject.train[pos], subject.train[neg], settings,
        key=jax.random.fold_in(jax.random.key(int(config.seed)), 0),
        grid_steps=int(ec.grid_steps), batch_size=int(ec.network.batch_size), options=opts,
        cache_dir=f"{workdir}/contrast", cache_key=(subject.model_id, pos.tolist(),
                                                     neg.tolist(), int(config.seed)),
        label="contrast", progress=False, log=log)
    out["timings_s"] = timing
    for d in deltas:
        keep = masks[d][pos]          # positives reproduced at this (stricter) delta
        for s, r in sorted(res.items()):
            out["rows"].append({"delta": d, "num_axes": s.num_axes, "steps": s.steps,
                                **contrast_stats(r["trained"][keep], r["heldout"])})
    return _finish(out, workdir, {s: (r["trained"], r["heldout"]) for s, r in res.items()}, log)


def _finish(out, workdir, growth, log) -> dict:
    wd.save_json(f"{workdir}/contrast.json", out)
    md = contrast_markdown(out)
    wd.write_text(f"{workdir}/contrast.md", md)
    if growth is not None:
        from memjax.report import save_figure

        save_figure(fig_contrast(out, growth), f"{workdir}/contrast.png", tight=False)
    log(md)
    return wd.to_jsonable(out)


def contrast_markdown(out: dict) -> str:
    """The contrast's table."""
    md = [f"{out['model']}: {out['num_train']} training images, {out['num_samples']} samples; "
          f"reproduced ({out['criterion']}): " +
          ", ".join(f"{n} at delta {d}" for d, n in out["num_reproduced"].items()) +
          f"; groups: {len(out['positives'])} reproduced, {len(out['negatives'])} not.", ""]
    if out["rows"]:
        md += [f"Score: {out['label']}.", "",
               "| delta | N | steps | n rep. | AUROC | Welch p | Mann-Whitney p | mean rep. | "
               "mean not |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in out["rows"]:
            md.append(f"| {r['delta']:g} | {r['num_axes']} | {r['steps']} | "
                      f"{r['n_reproduced']} | {r['auroc']:.3f} | {r['p_value']:.2e} | "
                      f"{r['mann_whitney_p']:.2e} | {r['mean_reproduced']:.2f} | "
                      f"{r['mean_not_reproduced']:.2f} |")
    return "\n".join(md) + "\n"


def fig_contrast(out: dict, growth: dict):
    """Fig. 2 right (histograms at the largest setting, loosest delta) and Fig. 3 (Welch
    p-values against N at the most / fewest steps and against steps at the fewest N)."""
    from memjax.report import figure

    fig = figure(16, 3.4)
    axes = fig.subplots(1, 4)
    big = max(growth, key=lambda s: (s.num_axes * s.steps, s))
    a, b = growth[big]
    bins = np.linspace(min(a.min(), b.min()), max(a.max(), b.max()) + 1e-6, 25)
    axes[0].hist(a, bins=bins, alpha=0.6, color="C3", label="reproduced")
    axes[0].hist(b, bins=bins, alpha=0.6, color="C0", label="not reproduced")
    axes[0].set_title(f"{big.name}", fontsize=9)
    axes[0].set_xlabel("log volume growth (nats)")
    axes[0].legend(fontsize=7)
    steps = sorted({r["steps"] for r in out["rows"]})
    nmin = min(r["num_axes"] for r in out["rows"])
    for d in sorted({r["delta"] for r in out["rows"]}):
        rows = [r for r in out["rows"] if r["delta"] == d]
        for ax, sel, x in ((axes[1], lambda r: r["steps"] == steps[-1], "num_axes"),
                           (axes[2], lambda r: r["num_axes"] == nmin, "steps"),
                           (axes[3], lambda r: r["steps"] == steps[0], "num_axes")):
            rs = sorted((r for r in rows if sel(r)), key=lambda r: r[x])
            ax.loglog([r[x] for r in rs], [max(r["p_value"], 1e-300) for r in rs], "o-",
                      label=f"delta {d:g}")
    titles = (f"p vs N (step {steps[-1]})", f"p vs steps (N={nmin})", f"p vs N (step {steps[0]})")
    for ax, t, xl in zip(axes[1:], titles, ("N axes", "steps", "N axes")):
        ax.set(title=t, xlabel=xl, ylabel="Welch t-test p-value")
        ax.axhline(0.01, color="gray", ls=":", lw=1)   # the paper's 1 % level
        ax.legend(fontsize=7)
    fig.suptitle("reproduced vs not-reproduced training images (paper 000 Fig. 2 right, Fig. 3)",
                 fontsize=10)
    fig.tight_layout()
    return fig
