"""Paper 003 Table 1 at digits scale: diverse samples per deterministic solver at 8 steps.

    python benchmarks/paper003_solvers.py --workdir /tmp/train_digits [--num-samples 1000]
        [--seeds 0 1] [--num-steps 8]

``--workdir``: a training workdir of ``configs/digits_overfit.py`` (``memjax-train``). For each
solver (DDIM with eta = 0, DPM-Solver++(2M), the probability-flow ODE with Heun, all on the same
``num_steps`` grid; the paper's "8-step inference, eta = 0") it draws ``num_samples`` samples,
counts the diverse ones with paper 003's t-SNE hull (one t-SNE of [training images; samples],
pixel features, perplexity 30, 1000 iterations, strict containment) and, to keep the caveat on
copies visible, how many of those are memorized copies (Carlini's normalized L2 < 1/3).
Prints Markdown rows.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

SOLVERS = {  # name: (memjax sampler, options, network calls per sample at num_steps = T)
    "DDIM (eta = 0)": ("ddim", {}, lambda t: t),
    "DPM-Solver++(2M)": ("dpm++2m", {}, lambda t: t),
    "probability-flow ODE (Heun)": ("ode", {"solver": "heun"}, lambda t: 2 * t),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--workdir", required=True)
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--num-steps", type=int, default=8)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    a = p.parse_args()

    import jax

    from memjax import sampling, training
    from memjax.metrics.diverse import diverse_samples
    from memjax.metrics.memorization import normalized_l2
    from memjax.trained import load_trained

    trained = load_trained(a.workdir)
    train = np.asarray(trained.dataset.train)
    score = training.trained_score_fn(trained)
    flat = train.reshape(len(train), -1)
    print(f"workdir {a.workdir} (step {trained.step}), {len(train)} training images, "
          f"{a.num_samples} samples per solver, {a.num_steps} steps; load "
          f"{os.getloadavg()[0]:.1f}\n")
    print("| solver | network calls | seed | diverse (t-SNE hull) | of which memorized copies "
          "| memorized (nL2 < 1/3) | time (s) |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, (sampler, opts, nfe) in SOLVERS.items():
        smp = sampling.make_sampler(score, trained.sde, train.shape[1:], sampler=sampler,
                                    num_steps=a.num_steps, batch_size=500, **opts)
        for seed in a.seeds:
            t0 = time.perf_counter()
            x = smp(jax.random.key(seed), a.num_samples)
            gen = x.reshape(len(x), -1)
            mask = np.asarray(diverse_samples(flat, gen, method="tsne_hull",
                                              key=jax.random.key(seed)))
            copies = np.asarray(normalized_l2(gen, flat, n=min(50, len(flat))).ratio) < 1 / 3
            print(f"| {name} | {nfe(a.num_steps)} | {seed} | {mask.sum()} | "
                  f"{(mask & copies).sum()} | {copies.mean():.3f} | "
                  f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
