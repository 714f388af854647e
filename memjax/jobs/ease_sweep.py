r"""Paper 000 Appendix A (Figs. 4-5): Algorithm 1 as written, swept over sigma and N.

For a trained model (the audit's ``model`` stage: trained here or restored) and the first
``sweep.images_per_group`` trained and held-out images (by index, fixed before any score is
seen), the job integrates Algorithm 1 -- finite-difference neighbours at ``sigma``, raw
per-axis stretches (``ease.algorithm1``'s ``method`` / ``accumulate``), Euler on the full
``ease.grid_steps`` grid -- once per ``(N, sigma)`` of::

    {(N, sweep.sigma) for N in sweep.num_axes} | {(sweep.sigma_axes, s) for s in sweep.sigmas}

and reads the growth after each of ``sweep.report_steps`` from the same run (the norms
accumulation is a per-step sum, so a prefix of steps is exact). For every ``(N, sigma,
step)`` it reports the AUROC (trained positive; Mann-Whitney), Welch's t-test and the mean
growth of each group (:func:`memjax.metrics.groups.separation`), and the CPU and wall time of
each run. Outputs in the workdir: ``sweep.json`` (rows and timings), ``sweep.md`` and
``sweep.png`` (AUROC and mean growth against sigma and against N). Each run is a cached stage
(``workdir/sweep/*.npz``): a rerun reuses it and an interrupted job resumes.

Initial axes of image ``i`` come from ``fold_in(fold_in(key(seed), 0), i)`` as in the
audit's network rows, so the same subset gives the same numbers at any ``N``'s prefix of the
Haar frame (:func:`memjax.volume_settings.nested_axes`).
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from memjax import workdir as wd
from memjax.metrics.groups import separation

__all__ = ["sweep_settings", "run_ease_sweep", "sweep_table", "fig_sweep"]


def sweep_settings(sc, dim: int) -> tuple[tuple[int, float], ...]:
    """The ``(N, sigma)`` pairs of the sweep config ``sc`` (``N = -1``: ``D``), de-duplicated in
    order: the N sweep at ``sc.sigma`` first, then the sigma sweep at ``sc.sigma_axes``."""
    def axes(n):
        n = dim if n == -1 else int(n)
        if not 1 <= n <= dim:
            raise ValueError(f"sweep.num_axes: expected values in [1, D = {dim}] or -1, got {n}")
        return n

    pairs = [(axes(n), float(sc.sigma)) for n in sc.num_axes]
    pairs += [(axes(sc.sigma_axes), float(s)) for s in sc.sigmas]
    for _, s in pairs:
        if not s > 0:
            raise ValueError(f"sweep.sigmas / sweep.sigma: expected positive radii, got {s}")
    return tuple(dict.fromkeys(pairs))


def _one_run(subject, images, n, sigma, config, workdir, log) -> tuple[dict, dict]:
    from memjax.volume_settings import volume_curves

    ec, sc = config.ease, config.sweep
    steps = tuple(int(s) for s in sc.report_steps)
    opts = dict(method=ec.algorithm1.method, accumulate=ec.algorithm1.accumulate,
                solver=ec.solver, check_stability=False)
    key = jax.random.fold_in(jax.random.key(int(config.seed)), 0)
    cost = {}

    def compute():
        t0, c0 = time.perf_counter(), time.process_time()
        vc = volume_curves(subject.score_fn, subject.sde, images, num_axes=n, steps=max(steps),
                           report_axes=(n,), report_steps=steps, key=key,
                           grid_steps=int(ec.grid_steps), batch_size=int(sc.batch_size),
                           sigma=sigma, progress=False, **opts)
        cost.update(wall_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)
        return {"growth": vc.growth[:, 0, :], "steps": np.asarray(steps),
                "wall_s": np.asarray(cost["wall_s"]), "cpu_s": np.asarray(cost["cpu_s"])}

    stage_key = (subject.model_id, wd.fingerprint(images), n, sigma, steps, int(ec.grid_steps),
                 opts, int(config.seed))
    arrays, reused = wd.cached(f"{workdir}/sweep/N{n}_sigma{sigma:g}", stage_key, compute,
                               log=log)
    log(f"[sweep] N={n} sigma={sigma:g}: {'cached' if reused else 'done'} "
        f"({float(arrays['wall_s']):.0f} s wall, {float(arrays['cpu_s']):.0f} s CPU when run)")
    return arrays, {"wall_s": float(arrays["wall_s"]), "cpu_s": float(arrays["cpu_s"])}


def run_ease_sweep(config, workdir: str, *, log: Callable[[str], None] = print) -> dict:
    """Runs (or resumes) the sweep; returns the content of ``workdir/sweep.json``."""
    from memjax import audit

    workdir = str(workdir)
    wd.makedirs(f"{workdir}/sweep")
    subject = audit.prepare_model(config, workdir, log=log)
    k = int(config.sweep.images_per_group)
    most = min(len(subject.train), len(subject.heldout))
    if not 2 <= k <= most:
        raise ValueError(f"sweep.images_per_group: expected 2 .. {most}, got {k}")
    images = np.concatenate([subject.train[:k], subject.heldout[:k]])
    dim = int(np.prod(images.shape[1:]))
    rows, timings = [], {}
    for n, sigma in sweep_settings(config.sweep, dim):
        arrays, cost = _one_run(subject, images, n, sigma, config, workdir, log)
        timings[f"N={n},sigma={sigma:g}"] = cost
        for j, s in enumerate(arrays["steps"].tolist()):
            g = arrays["growth"][:, j]
            rows.append({"num_axes": n, "sigma": sigma, "steps": int(s),
                         **separation(g[:k], g[k:])})
    ec = config.ease
    out = {"model": subject.description, "images_per_group": k, "dimension": dim,
           "method": ec.algorithm1.method, "accumulate": ec.algorithm1.accumulate,
           "grid_steps": int(ec.grid_steps), "seed": int(config.seed), "rows": rows,
           "timings": timings,
           "cpu_s_per_image_per_axis_step": {
               name: c["cpu_s"] / (2 * k * (int(name.split(",")[0][2:]) + 1) *
                                   max(config.sweep.report_steps)) for name, c in timings.items()}}
    wd.save_json(f"{workdir}/sweep.json", out)
    wd.write_text(f"{workdir}/sweep.md", sweep_table(out))
    from memjax.report import save_figure

    save_figure(fig_sweep(out, config.sweep), f"{workdir}/sweep.png", tight=False)
    log(sweep_table(out))
    return wd.to_jsonable(out)


def sweep_table(out: dict) -> str:
    """Markdown table of the sweep's rows."""
    what = ("Algorithm 1 as written" if (out["method"], out["accumulate"]) ==
            ("finite_difference", "norms") else "Not Algorithm 1")
    md = [f"{what} (method {out['method']}, accumulation {out['accumulate']}, grid "
          f"{out['grid_steps']}), {out['images_per_group']} trained vs "
          f"{out['images_per_group']} held-out images, D = {out['dimension']}.", "",
          "| N | sigma | steps | AUROC | Welch p | mean trained | mean held-out |",
          "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in out["rows"]:
        md.append(f"| {r['num_axes']} | {r['sigma']:g} | {r['steps']} | {r['auroc']:.3f} | "
                  f"{r['p_value']:.2e} | {r['mean_trained']:.2f} | {r['mean_heldout']:.2f} |")
    return "\n".join(md) + "\n"


def fig_sweep(out: dict, sc):
    """AUROC and mean growth (trained solid, held-out dashed) against N (at ``sc.sigma``) and
    against sigma (at ``sc.sigma_axes``), one line per reported step (paper 000 Figs. 4-5)."""
    from memjax.report import figure

    dim = out["dimension"]
    na = dim if sc.sigma_axes == -1 else int(sc.sigma_axes)
    fig = figure(12, 6)
    axes = fig.subplots(2, 2)
    for col, (xname, fixed) in enumerate((("num_axes", ("sigma", float(sc.sigma))),
                                          ("sigma", ("num_axes", na)))):
        for i, step in enumerate(sorted({r["steps"] for r in out["rows"]})):
            rs = sorted((r for r in out["rows"] if r["steps"] == step and
                         r[fixed[0]] == fixed[1]), key=lambda r: r[xname])
            x = [r[xname] for r in rs]
            axes[0][col].plot(x, [r["auroc"] for r in rs], "o-", color=f"C{i}",
                              label=f"step {step}")
            axes[1][col].plot(x, [r["mean_trained"] for r in rs], "o-", color=f"C{i}",
                              label=f"trained, step {step}")
            axes[1][col].plot(x, [r["mean_heldout"] for r in rs], "s--", color=f"C{i}",
                              label=f"held out, step {step}")
        for row in (0, 1):
            axes[row][col].set_xscale("log")
            axes[row][col].set_xlabel("N axes" if xname == "num_axes" else "sigma")
        axes[0][col].set_title(f"{fixed[0]} = {fixed[1]:g}", fontsize=9)
        axes[1][col].set_yscale("symlog")
        axes[0][col].axhline(0.5, color="gray", ls=":", lw=1)
    axes[0][0].set_ylabel("AUROC (trained vs held out)")
    axes[1][0].set_ylabel("mean log volume growth (nats)")
    axes[0][0].legend(fontsize=7)
    axes[1][1].legend(fontsize=6)
    fig.suptitle(f"{out['method']}, {out['accumulate']}: {out['images_per_group']} + "
                 f"{out['images_per_group']} digits (paper 000 Figs. 4-5)", fontsize=10)
    fig.tight_layout()
    return fig
