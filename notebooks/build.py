"""Writes the memjax notebooks from the cell sources below (``python notebooks/build.py``).

The notebooks are generated, not edited by hand, so that a review reads Python, not JSON.
Every notebook starts with the same install cell (skipped when memjax is importable, e.g. in
CI or a local checkout), runs top to bottom on a CPU in a few minutes at the sizes chosen here,
and is executed by ``pytest --nbmake notebooks/``. Outputs are not stored.

Usage::

    python notebooks/build.py            # rewrite every notebook
    python notebooks/build.py 01 03      # only the notebooks whose names start with these
"""

from __future__ import annotations

import os
import sys
import textwrap

import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))

INSTALL = '''\
# Colab / a fresh kernel: install memjax (skipped when it is already importable).
import importlib.util
if importlib.util.find_spec("memjax") is None:
    %pip install -q "memjax @ git+https://github.com/memjax/memjax"
'''


def md(text: str):
    return nbformat.v4.new_markdown_cell(textwrap.dedent(text).strip())


def code(text: str):
    return nbformat.v4.new_code_cell(textwrap.dedent(text).strip())


# -------------------------------------------------------------------------------------------------
def nb01():
    return [
        md("""
        # 01 - The two-dimensional toy: where the exact score sends each training point

        Paper 000 (Hasegawa & Yasuda), Fig. 1. With the **exact** score of a finite training set
        (eq. 11), the probability-flow ODE (eq. 8) carries a small sphere around each training
        point at `t = 1e-3` to a region `R_i` of the latent space at `t = 1`. The regions do not
        overlap and together cover the latent space, so the prior mass of `R_i` is the
        probability that the reverse flow reproduces training point `i`: memorization becomes
        a question of **volume growth** along the ODE.

        This notebook draws the trajectories for 2, 3 and 5 points, colours the latent plane by
        the training point each latent decodes to, and checks the region masses against the
        log-volume growth of each point's sphere.
        """),
        code(INSTALL),
        code("""
        import time
        import diffrax
        import jax
        import jax.numpy as jnp
        import matplotlib.pyplot as plt
        import numpy as np
        import memjax as mj
        from memjax import flow

        sde = mj.VPSDE()          # beta in [0.1, 20], t in [1e-3, 1] (paper 000)
        rng = np.random.default_rng(0)
        point_sets = {k: rng.uniform(-1.0, 1.0, size=(k, 2)).astype(np.float32) for k in (2, 3, 5)}
        print(sde, {k: v.round(2).tolist() for k, v in point_sets.items()})
        """),
        md("""
        ## Trajectories

        Each training point gets a ring of 24 starting points at radius 0.05 (the paper's
        `sigma`). The ODE `dx/dt = -beta(t)/2 (x + s(x, t))` is integrated forward (data to
        noise) with Tsit5, saving the path on a grid of times.
        """),
        code("""
        def trajectories(points, num_ring=24, radius=0.05, num_times=101):
            score = mj.scores.empirical(jnp.asarray(points), sde)
            drift = sde.pf_drift(score)
            ts = jnp.linspace(sde.t_min, sde.t_max, num_times)

            def one(x0):
                sol = diffrax.diffeqsolve(
                    diffrax.ODETerm(lambda t, y, args: drift(t, y)), diffrax.Tsit5(),
                    t0=sde.t_min, t1=sde.t_max, dt0=None, y0=x0,
                    stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-5),
                    saveat=diffrax.SaveAt(ts=ts), max_steps=4096)
                return sol.ys

            ang = np.linspace(0, 2 * np.pi, num_ring, endpoint=False)
            ring = radius * np.stack([np.cos(ang), np.sin(ang)], -1)
            starts = (points[:, None, :] + ring[None]).reshape(-1, 2).astype(np.float32)
            paths = jax.jit(jax.vmap(one))(jnp.asarray(starts))          # [k * ring, times, 2]
            return np.asarray(paths).reshape(len(points), num_ring, num_times, 2)

        start = time.perf_counter()
        paths = {k: trajectories(p) for k, p in point_sets.items()}
        print(f"trajectories in {time.perf_counter() - start:.1f} s")
        """),
        code("""
        colors = plt.get_cmap("tab10")
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
        for ax, (k, pts) in zip(axes, point_sets.items()):
            for i in range(k):
                for path in paths[k][i]:
                    ax.plot(path[:, 0], path[:, 1], color=colors(i), lw=0.4, alpha=0.6)
                ax.scatter(*paths[k][i][:, 0].T, s=4, color=colors(i), zorder=3)      # t = 1e-3
                ax.scatter(*paths[k][i][:, -1].T, s=22, color=colors(i), zorder=3,
                           edgecolor="k", lw=0.3)                                    # t = 1
            ax.scatter(*pts.T, marker="x", color="k", s=40, zorder=4)
            ax.set_title(f"{k} training points")
            ax.set_aspect("equal")
        fig.suptitle("Probability-flow ODE under the exact score: small dots t = 1e-3, "
                     "large dots t = 1")
        plt.show()
        """),
        md("""
        ## Regions in the latent space

        Decoding a grid of latents at `t = 1` back to `t = 1e-3` and colouring each latent by
        the nearest training point to where it lands shows the partition into the regions
        `R_i`. The prior mass of each region (a Monte Carlo estimate with latents drawn from
        `N(0, I)`) is the probability that the sampler reproduces that point.
        """),
        code("""
        def decode_many(points, latents):
            score = mj.scores.empirical(jnp.asarray(points), sde)
            dec = jax.jit(jax.vmap(lambda z: flow.decode(score, sde, z, solver="tsit5",
                                                         rtol=1e-4, atol=1e-4)))
            x = np.asarray(dec(jnp.asarray(latents)))
            d2 = ((x[:, None, :] - points[None]) ** 2).sum(-1)
            return d2.argmin(1), np.sqrt(d2.min(1))

        lim, res = 3.0, 70
        g = np.linspace(-lim, lim, res, dtype=np.float32)
        grid = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2)
        prior_latents = rng.standard_normal((2000, 2)).astype(np.float32)
        regions, masses = {}, {}
        start = time.perf_counter()
        for k, pts in point_sets.items():
            lab, dist = decode_many(pts, grid)
            regions[k] = lab.reshape(res, res)
            lab_p, dist_p = decode_many(pts, prior_latents)
            masses[k] = np.bincount(lab_p, minlength=k) / len(lab_p)
            print(f"{k} points: every decoded latent lands within {dist_p.max():.3f} of a "
                  f"training point; region masses {np.round(masses[k], 3).tolist()}")
        print(f"decoding in {time.perf_counter() - start:.1f} s")
        """),
        code("""
        from matplotlib.colors import ListedColormap
        fig, axes = plt.subplots(1, 3, figsize=(13, 4.4))
        for ax, (k, pts) in zip(axes, point_sets.items()):
            cmap = ListedColormap([colors(i) for i in range(k)])
            ax.imshow(regions[k], origin="lower", extent=(-lim, lim, -lim, lim), cmap=cmap,
                      alpha=0.35, vmin=-0.5, vmax=k - 0.5, interpolation="nearest")
            for i in range(k):
                ax.scatter(*paths[k][i][:, -1].T, s=18, color=colors(i), edgecolor="k", lw=0.3)
                ax.scatter(*pts[i], marker="x", color=colors(i), s=60)
            ax.set_title(f"{k} points: regions R_i at t = 1")
            ax.set_aspect("equal")
        plt.show()
        """),
        md("""
        ## Volume growth predicts the region mass

        Paper 000 measures how much a small sphere around a training point grows along the ODE
        (Algorithm 1). In two dimensions the flow map's Jacobian is cheap to compute exactly
        (`jax.jacfwd` through the solve), so the log-volume growth of each point is
        `log|det d x(1) / d x(1e-3)|`. Points whose sphere grows more own more latent volume,
        so the growth should order the points like the region masses above.
        """),
        code("""
        def log_growth(points):
            score = mj.scores.empirical(jnp.asarray(points), sde)
            enc = lambda x: flow.solve(sde.pf_drift(score), x, sde.t_min, sde.t_max,
                                       solver="tsit5", rtol=1e-6, atol=1e-6,
                                       adjoint=diffrax.ForwardMode()).y
            jac = jax.vmap(jax.jacfwd(enc))(jnp.asarray(points))
            return np.asarray(jnp.linalg.slogdet(jac)[1])

        from scipy.stats import spearmanr
        for k, pts in point_sets.items():
            growth = log_growth(pts)
            rho = spearmanr(growth, masses[k]).statistic if k > 2 else np.nan
            print(f"{k} points: log-volume growth {np.round(growth, 2).tolist()}, "
                  f"region mass {np.round(masses[k], 3).tolist()}, Spearman rho {rho:.2f}")
        """),
        md("""
        **Reading the numbers.** Every latent decodes onto a training point: the exact score
        memorises perfectly, and the latent space splits into one region per training point.
        The growth of a point's sphere and its region's mass move together (the larger the
        growth, the more of the prior the point owns), which is what lets paper 000 rank
        training images by the volume growth along the ODE. Notebook 02 does this for digits
        and a trained network.
        """),
    ]


NOTEBOOKS = {
    "01_two_dimensional_toy": nb01,
}


def build(names=None):
    for name, make in NOTEBOOKS.items():
        if names and not any(name.startswith(n) for n in names):
            continue
        nb = nbformat.v4.new_notebook()
        nb.cells = make()
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nb.metadata["language_info"] = {"name": "python"}
        nb.metadata["colab"] = {"provenance": []}
        for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives identical files
            cell["id"] = f"{name[:2]}-{i:02d}"
        nbformat.validate(nb)
        path = os.path.join(HERE, f"{name}.ipynb")
        with open(path, "w") as f:
            nbformat.write(nb, f)
        print("wrote", os.path.relpath(path))


if __name__ == "__main__":
    build(sys.argv[1:])
