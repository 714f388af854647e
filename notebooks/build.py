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
        the training point each latent decodes to, and compares the region masses with the
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
        `R_i`. The prior mass of each region (a Monte Carlo estimate with 2,000 latents drawn
        from `N(0, I)`) is the probability that the sampler reproduces that point.
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
        ## Region masses and the local volume growth

        Paper 000 measures how much a small sphere around a training point grows along the ODE
        (Algorithm 1). In two dimensions the flow map's Jacobian is cheap to compute exactly
        (`jax.jacfwd` through the solve), so the log-volume growth of each point is
        `log|det d x(1) / d x(1e-3)|`. Compare it with the region masses above.
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
        The region masses are all `1/k` (up to Monte Carlo error): the probability flow carries
        the data distribution, here the uniform mixture over the training points, to the prior,
        so each point is reproduced with probability `1/k` however the regions are shaped. The
        log-volume growth of a small sphere, a *local* quantity, still differs between points
        (by up to about 0.7 nats for 5 points), and it does not order the points by mass
        (the Spearman correlation is about 0 for 5 points; for 3 points it is 1.0 only through
        differences of 0.003 in mass). So for the exact score the growth of a small ball says
        where the flow stretches, not how likely a point is to be reproduced; paper 000 uses
        it to rank the images of a *trained* network, whose regions do differ in mass.
        Notebook 02 finds the same on digits: a few leading axes do not separate the exact
        score's trained images from held-out ones, the full volume does.
        """),
    ]


# -------------------------------------------------------------------------------------------------
def nb02():
    return [
        md("""
        # 02 - Volume growth on real digits: trained vs held-out images

        Paper 000 measures how easily a diffusion model reproduces an image by the growth of a
        small ball around it along the probability-flow ODE (Algorithm 1, eq. 13), and shows
        that an overfit model grows its **trained** images far more than images it never saw
        (Fig. 2 left); Fig. 3 asks how many axes `N` and steps are needed.

        Here the model is the **exact score** of the training set (eq. 11), a perfect memoriser,
        on scikit-learn's 8x8 digits (64 digits + mirror images = 128 trained, 128 held out,
        `D = 64`). Its answer is the reference for any trained network:
        `memjax-audit --config=configs/digits_audit.py` computes the same table for the
        network and the exact score side by side.
        """),
        code(INSTALL),
        code("""
        import time
        import jax
        import matplotlib.pyplot as plt
        import numpy as np
        import memjax as mj
        from memjax import audit
        from memjax.data import data_config, load_dataset

        ds = load_dataset(data_config(num_train=64, flip=True))     # the split of digits_overfit
        sde = mj.VPSDE()
        score = mj.scores.empirical(ds.train, sde)                  # exact score of all 128
        trained, heldout = ds.train[::4], ds.heldout[::4]           # 32 + 32 analysed (CPU budget)
        images = np.concatenate([trained, heldout])
        print(ds, images.shape)
        """),
        md("""
        ## One run, every (N, steps)

        `audit.volume_curves` integrates the forward ODE on the paper's grid (Euler,
        `dt = 1e-3`) with exact tangents (`jax.jvp`, vmapped over the axes) and QR
        re-orthonormalisation. Because Gram-Schmidt processes the axes in order, the first
        `k` axes of an `N`-axis run are a `k`-axis run: one full-volume run (`N = D = 64`) over
        100 steps gives every `N <= 64` and every step `<= 100`; a second run with `N = 8` goes
        to step 1000.
        """),
        code("""
        key = jax.random.key(0)
        start = time.perf_counter()
        full = audit.volume_curves(score, sde, images, num_axes=64, steps=100,
                                   report_axes=(1, 2, 4, 8, 16, 32, 64),
                                   report_steps=(1, 3, 10, 30, 100), key=key, batch_size=64)
        few = audit.volume_curves(score, sde, images, num_axes=8, steps=1000,
                                  report_axes=(1, 8), report_steps=(1, 10, 100, 300, 1000),
                                  key=key, batch_size=64)
        print(f"{time.perf_counter() - start:.1f} s; growth arrays {full.growth.shape}, "
              f"{few.growth.shape}")
        n = len(trained)
        """),
        md("## Fig. 2: histograms of the log volume growth"),
        code("""
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        panels = [(full, 0, 0, "N=1, step 1 (the paper's ranking setting)"),
                  (few, 1, 4, "N=8, step 1000"), (full, 6, 4, "N=D=64, step 100 (full volume)")]
        for ax, (vc, a, s, title) in zip(axes, panels):
            g = vc.growth[:, a, s]
            st = audit.separation(g[:n], g[n:])
            bins = np.linspace(g.min(), g.max(), 25)
            ax.hist(g[:n], bins, alpha=0.6, color="C3", label="trained")
            ax.hist(g[n:], bins, alpha=0.6, color="C0", label="held out")
            ax.set_title(f"{title}\\nAUROC {st['auroc']:.2f}, p = {st['p_value']:.1e}", fontsize=9)
            ax.set_xlabel("log volume growth (nats)")
        axes[0].legend()
        plt.tight_layout()
        plt.show()
        """),
        md("## Fig. 3: Welch t-test p-values against N and steps"),
        code("""
        def pvals(vc, a=None, s=None):
            if a is None:
                return [audit.separation(vc.growth[:n, i, s], vc.growth[n:, i, s])["p_value"]
                        for i in range(len(vc.axes))]
            return [audit.separation(vc.growth[:n, a, j], vc.growth[n:, a, j])["p_value"]
                    for j in range(len(vc.steps))]

        fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
        axes[0].semilogy(full.axes, pvals(full, s=4), "o-")
        axes[0].set_title("each N at step 100")
        axes[0].set_xlabel("N")
        axes[1].loglog(few.steps, pvals(few, a=0), "o-")
        axes[1].set_title("each step at N = 1")
        axes[1].set_xlabel("steps")
        axes[2].semilogy(full.axes, pvals(full, s=0), "o-")
        axes[2].set_title("each N at step 1")
        axes[2].set_xlabel("N")
        for ax in axes:
            ax.axhline(0.05, color="gray", ls=":")
        plt.tight_layout()
        plt.show()
        for a_i, a in enumerate(full.axes):
            row = [audit.separation(full.growth[:n, a_i, j], full.growth[n:, a_i, j])["auroc"]
                   for j in range(len(full.steps))]
            print(f"N={a:2d}  AUROC at steps {full.steps}: {np.round(row, 2).tolist()}")
        """),
        md("""
        **What this shows, and where it differs from the paper.** For the exact score the full
        volume (`N = D`) separates trained from held-out digits completely once the ODE has run
        long enough (about 100 steps of the 1000-step grid), with trained images growing by
        hundreds of nats more. A few leading axes (`N = 1`, `N = 8`) do **not** separate them:
        held-out images even grow slightly more along their leading directions, and the
        one-axis, one-step ranking that paper 000 found sufficient for its trained CIFAR-10
        network does not carry over to a perfect memoriser. So what `N = 1` measures depends
        on the network, not only on memorization: report `N`, steps and accumulation with every
        score (the audit does), and check the full-volume row.

        The `stable` flags of `memjax.volume.volume_growth` warn that the paper's Euler grid is
        outside explicit Euler's stability interval for held-out images under this very sharp
        score (REFERENCE.md); the separation is a property of the discrete map the paper uses.
        """),
    ]


# -------------------------------------------------------------------------------------------------
def nb05():
    return [
        md("""
        # 05 - Diverse samples per sampler

        Paper 003 calls a generated image *diverse* when its deep features land outside the
        boundary of the real images' features: one t-SNE of `[real; generated]`, the convex hull
        (Quickhull) of the real points, generated points outside it (eq. 18, appendix A). Its
        Table 1 counts them per sampler.

        Two score functions make the contrast sharp without training anything:

        * the **exact score** of 64 training digits (paper 000 eq. 11): a perfect memoriser,
          whose samples are copies of training images, so almost none should be diverse;
        * the **Gaussian fit** of the same 64 digits: it generalises (too much), producing new,
          blurry images, many of them outside the real support.

        Each is sampled with the three memjax samplers (probability-flow ODE, reverse SDE,
        DDIM). `memjax-audit` reports the same count for a trained network.
        """),
        code(INSTALL),
        code("""
        import time
        import jax
        import jax.numpy as jnp
        import matplotlib.pyplot as plt
        import numpy as np
        import memjax as mj
        from memjax import sampling
        from memjax.metrics import diverse, memorization

        sde = mj.VPSDE()
        from memjax.data import load_digits
        digits = load_digits()
        rng = np.random.default_rng(0)
        train = digits[rng.permutation(len(digits))[:64]]
        flat = train.reshape(64, -1).astype(np.float64)
        cov = np.cov(flat, rowvar=False) + 1e-3 * np.eye(64)
        models = {
            "exact score (memoriser)": mj.scores.empirical(train, sde),
            "Gaussian fit (generaliser)": mj.scores.gaussian(
                jnp.asarray(flat.mean(0).reshape(8, 8, 1), jnp.float32),
                jnp.asarray(cov, jnp.float32), sde),
        }
        """),
        code("""
        num_samples, samplers = 128, {"ode": dict(num_steps=100, solver="heun"),
                                      "sde": dict(num_steps=200), "ddim": dict(num_steps=100)}
        samples = {}
        start = time.perf_counter()
        for name, score in models.items():
            for sampler, opts in samplers.items():
                samples[name, sampler] = sampling.sample(score, sde, jax.random.key(1), num_samples,
                                                         (8, 8, 1), sampler=sampler, **opts)
        print(f"sampling: {time.perf_counter() - start:.1f} s")
        """),
        md("""
        ## Counting diverse samples

        Features: the pixels (64-d). `memjax.metrics.features.digits_classifier_features`
        gives the penultimate features of a small digits classifier instead (the offline
        stand-in for paper 003's SqueezeNet class scores). Alongside, the fraction of samples
        memorized by Carlini's normalized L2 (< 1/3) shows what each model does.
        """),
        code("""
        rows, embeddings = [], {}
        start = time.perf_counter()
        for (name, sampler), x in samples.items():
            res = diverse.tsne_hull(train.reshape(64, -1), x.reshape(len(x), -1),
                                    perplexity=20.0, num_iters=500)
            knn = diverse.knn_support(train.reshape(64, -1), x.reshape(len(x), -1), k=5)
            ratio = np.asarray(memorization.normalized_l2(x, train, n=50).ratio)
            embeddings[name, sampler] = res
            rows.append((name, sampler, int(res.diverse.sum()), int(knn.diverse.sum()),
                         float(np.mean(ratio < 1 / 3))))
        print(f"metrics: {time.perf_counter() - start:.1f} s\\n")
        print(f"{'model':28s} {'sampler':7s} {'diverse (t-SNE hull)':>21s} {'diverse (k-NN)':>15s} "
              f"{'memorized':>10s}")
        for r in rows:
            print(f"{r[0]:28s} {r[1]:7s} {r[2]:21d} {r[3]:15d} {r[4]:10.2f}")
        """),
        code("""
        fig, axes = plt.subplots(2, 3, figsize=(11, 7))
        for ax, ((name, sampler), res) in zip(axes.ravel(), embeddings.items()):
            ax.scatter(*np.asarray(res.real_embedding).T, s=6, c="gray", label="real")
            g, d = np.asarray(res.generated_embedding), np.asarray(res.diverse)
            ax.scatter(*g[~d].T, s=6, c="C0", label="generated")
            ax.scatter(*g[d].T, s=14, c="C3", label="diverse")
            ax.set_title(f"{name}\\n{sampler}: {int(d.sum())} diverse", fontsize=9)
        axes[0, 0].legend(fontsize=7)
        plt.tight_layout()
        plt.show()
        """),
        md("""
        **Reading the table** (measured on 2 shared CPU cores, see `docs/reproductions.md`).
        The memoriser's samples are copies of training images (memorized fraction 1.00). The
        k-NN support count finds none of them diverse, as it should; the t-SNE hull, however,
        counts 15-21 of the 128 copies as "diverse": a copy of a training image that lies on
        the hull boundary is embedded right next to it, about half the time just outside, and
        the containment test is strict. The Gaussian fit's samples are all new (memorized
        0.00), and both methods find more of them outside the real support (20-31 by the
        hull, 7-18 by k-NN), with the count moving with the sampler (paper 003, Table 1).
        So a diverse-sample count from the t-SNE hull has a floor set by copies of boundary
        images; check it against the memorized fraction, or use `method="knn_support"`.
        """),
    ]


TINY_TRAIN = """
from memjax import training

def tiny_config(objective="standard", num_train=32, num_steps=300, seed=0):
    # a small digits U-Net trained for minutes on a CPU (x0-prediction, as paper 002)
    c = training.default_config()
    c.seed = seed
    c.data.num_train, c.data.num_heldout, c.data.flip = num_train, num_train, False
    c.model.image_size, c.model.channels = 8, 1
    c.model.base_channels, c.model.channel_mults = 16, (1, 2)
    c.model.num_res_blocks, c.model.attn_resolutions, c.model.dropout = 1, (), 0.0
    c.model.parameterization = c.objective.parameterization = "x0"
    c.objective.name = objective
    if objective == "ambient":
        c.objective.sigma_tn = 0.5 / (1 + 0.5**2) ** 0.5   # the authors' EDM sigma_n = 0.5
    c.optim.learning_rate, c.optim.warmup_steps = 2e-3, 20
    c.training.batch_size, c.training.num_steps = 32, num_steps
    c.training.ema_decay = 0.99
    c.training.checkpoint_every, c.training.log_every = num_steps, 50
    c.training.sample_every, c.training.tensorboard, c.training.progress = -1, False, False
    return c

def train_tiny(config, workdir):
    res = training.train(config, workdir)
    model = training.merge_model(res.graphdef, res.state["ema"], res.state["other"])
    model.eval()
    return training.Trained(model=model, config=config, sde=res.sde, dataset=res.dataset,
                            step=int(config.training.num_steps))
"""


def nb03():
    return [
        md("""
        # 03 - Ambient diffusion vs standard training

        Paper 002 trains on a **fixed noisy copy** of each image above a noise level `t_n`
        (Algorithm 1: the clean denoising loss below `t_n`, ambient score matching on the noisy
        copy above it) and finds that the model copies its training images far less at
        comparable quality (Table 1: the fraction of samples whose nearest-neighbour similarity
        exceeds a threshold, and FID).

        This notebook runs both objectives on the same few digits (same images, batches and
        initialisation; only the loss differs) at a size that trains in minutes on a CPU, then
        compares: the fraction of near-copies (Carlini's normalized L2 in pixels; cosine
        similarity in classifier features above thresholds, as paper 002 does with DINOv2) and
        quality (Fréchet distance in the features of memjax's digits classifier). At this size
        the numbers are noisy; `docs/reproductions.md` holds the larger run
        (`configs/ambient_300.py` describes the paper's CIFAR-10 setting).
        """),
        code(INSTALL),
        code(TINY_TRAIN),
        code("""
        import os
        import tempfile
        import time
        import jax
        import numpy as np
        from memjax import sampling
        from memjax.metrics import features, memorization, stats

        # sizes: small by default (CI); docs/reproductions.md runs NUM_TRAIN=300
        NUM_TRAIN = int(os.environ.get("MEMJAX_NB03_NUM_TRAIN", 32))
        NUM_STEPS = int(os.environ.get("MEMJAX_NB03_NUM_STEPS", 300))
        NUM_SAMPLES = int(os.environ.get("MEMJAX_NB03_NUM_SAMPLES", 128))
        workdir = tempfile.mkdtemp()
        models = {}

        def train(objective):
            start = time.perf_counter()
            models[objective] = train_tiny(tiny_config(objective, NUM_TRAIN, NUM_STEPS),
                                           f"{workdir}/{objective}")
            print(f"{objective}: trained in {time.perf_counter() - start:.0f} s")

        train("standard")
        ds = models["standard"].dataset
        """),
        code("""
        train("ambient")
        """),
        code("""
        samples = {name: sampling.sample(training.trained_score_fn(t), t.sde, jax.random.key(0),
                                         NUM_SAMPLES, (8, 8, 1), sampler="ddim", num_steps=50)
                   for name, t in models.items()}
        feature_fn = features.digits_classifier_features(train=ds.train, workdir=workdir)
        f_train = features.compute_features(features.l2_normalized(feature_fn), ds.train)
        f_held = features.compute_features(feature_fn, ds.heldout)
        print(f"digits classifier accuracy {feature_fn.accuracy:.3f}\\n")
        thresholds = (0.95, 0.98, 0.99)
        print(f"{'objective':10s} {'memorized (nL2<1/3)':>20s} "
              + " ".join(f"{'cos>' + str(t):>9s}" for t in thresholds) + f" {'FD(held-out)':>13s}")
        for name, x in samples.items():
            ratio = np.asarray(memorization.normalized_l2(x, ds.train, n=min(50, NUM_TRAIN)).ratio)
            f_x = features.compute_features(features.l2_normalized(feature_fn), x)
            best, _ = memorization.best_match(f_x, f_train, measure="cosine")
            frac = np.asarray(memorization.similarity_fractions(best, thresholds))
            fd = float(stats.frechet_distance(features.compute_features(feature_fn, x), f_held))
            print(f"{name:10s} {np.mean(ratio < 1 / 3):20.3f} "
                  + " ".join(f"{v:9.3f}" for v in frac) + f" {fd:13.2f}")
        """),
        code("""
        import matplotlib.pyplot as plt
        fig, axes = plt.subplots(2, 12, figsize=(12, 2.4))
        for row, (name, x) in zip(axes, samples.items()):
            for ax, img in zip(row, x[:12]):
                ax.imshow(img[..., 0], cmap="gray", vmin=-1, vmax=1)
                ax.axis("off")
            row[0].set_title(name, fontsize=8, loc="left")
        plt.show()
        """),
        md("""
        **Reading the numbers.** With a few hundred steps on 32 digits neither model has had
        time to memorize much, so the comparison here only exercises the pipeline; the
        measured numbers (3 seeds per arm, a sigma_tn sweep, and where they disagree with
        paper 002) are in `docs/reproductions.md`, made by the job
        `python -m memjax.scripts.ambient_sweep --config=ambient_sweep`.
        """),
    ]


def nb04():
    return [
        md("""
        # 04 - SIDE: extracting training images with a time-dependent classifier

        Paper 001 extracts training images from an unconditional diffusion model by guiding it
        with a classifier (eqs. 10-12, the power prior `lambda`): pseudo-label the model's own
        samples, distil a **time-dependent** classifier from them (TDKD, eq. 13), and sweep
        `lambda`; `lambda = 0` is unguided sampling ("Random"). Memorization is counted by AMS
        and UMS (eqs. 14-15) in similarity bands.

        `memjax.side.run` does all stages and caches each; here at a size that runs in minutes
        on a CPU (a briefly trained target, small classifiers, three lambdas). The full digits
        run is `python -m memjax.scripts.side --config=configs/digits_side.py`.
        """),
        code(INSTALL),
        code(TINY_TRAIN),
        code("""
        import json
        import tempfile
        import time
        import ml_collections
        from memjax import side

        workdir = tempfile.mkdtemp()
        start = time.perf_counter()
        target = train_tiny(tiny_config("standard", num_train=32, num_steps=300), f"{workdir}/target")
        print(f"target trained in {time.perf_counter() - start:.0f} s")
        """),
        code("""
        c = side.default_config()
        c.labels, c.num_clusters = "original", 10
        c.classifier.num_steps, c.classifier.width = 100, 8
        c.synthetic.num_samples, c.synthetic.heldout, c.synthetic.num_steps = 256, 64, 20
        c.tdkd.num_steps, c.tdkd.width = 100, 8
        c.extraction.lambdas = (0, 2, 8)
        c.extraction.samples_per_class, c.extraction.num_steps = 8, 20
        c.metrics.bands = ml_collections.ConfigDict(dict(high=(0.0, 0.5), mid=(0.5, 1.0),
                                                         low=(1.0, 1.5)))
        c.progress = False
        start = time.perf_counter()
        summary = side.run(c, f"{workdir}/side", trained=target)
        print(f"SIDE in {time.perf_counter() - start:.0f} s")
        """),
        code("""
        print(open(f"{workdir}/side/results.md").read())
        print(json.dumps(summary, indent=1, default=str)[:1500])
        """),
        code("""
        import matplotlib.pyplot as plt
        for name in ("ams_ums_vs_lambda.png", "extracted.png"):
            plt.figure(figsize=(8, 3.5))
            plt.imshow(plt.imread(f"{workdir}/side/{name}"))
            plt.axis("off")
            plt.show()
        """),
        md("""
        **Reading the numbers.** The bands are Carlini's normalized L2 (smaller is more
        similar); on 8x8 digits a copy has a ratio far below paper 001's printed bands, so this
        notebook uses digits bands (`configs/digits_side.py` reports both, the paper's verbatim
        and the digits ones, labelled). With a target trained this briefly few samples are
        copies at any `lambda`; the digits-scale result (SIDE against the unguided baseline,
        the lambda sweep, TD against TI, the number of classes) is in `docs/reproductions.md`.
        """),
    ]


NOTEBOOKS = {
    "01_two_dimensional_toy": nb01,
    "02_volume_growth_digits": nb02,
    "03_ambient_vs_standard": nb03,
    "04_side_extraction": nb04,
    "05_diverse_samples": nb05,
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
        # nbmake's per-cell limit (default 300 s) with room for a loaded CI machine
        nb.metadata["execution"] = {"timeout": 1200}
        for i, cell in enumerate(nb.cells):  # stable ids: rebuilding gives identical files
            cell["id"] = f"{name[:2]}-{i:02d}"
        nbformat.validate(nb)
        path = os.path.join(HERE, f"{name}.ipynb")
        with open(path, "w") as f:
            nbformat.write(nb, f)
        print("wrote", os.path.relpath(path))


if __name__ == "__main__":
    build(sys.argv[1:])
