"""Benchmarks of memjax.volume (paper 000): cost of exact tangents, accuracy vs cost, throughput.

Run:  python benchmarks/volume_growth.py [--quick] [--out benchmarks/results/volume_growth.md]

1. Per-step time of ``method="jvp"`` against ``method="finite_difference"`` for the same U-Net
   (memjax.models.UNet, 32x32x3) at N = 1, 16, 100 axes; timed interleaved in one process.
2. Accuracy against cost: drift evaluations and wall time for Euler (T = 1000) and for the
   adaptive path (tsit5, state + tangents, one recording interval) to reach 1% of a reference
   log growth -- the closed form for Gaussian data (mean/covariance of the 8x8 digits), and for
   the exact score of 128 digits (64 + flips) the tightest adaptive solve, cross-checked against
   Euler with 10,000 steps, on trained images. Full volume (N = D = 64).
3. Images per second of ``ease_of_reproduction`` (N = 1, one step) for the 32x32x3 U-Net.

Timings are wall clock after a warm-up call (compilation excluded), median of repeats.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import memjax as mj
from memjax import volume
from memjax.data import load_digits

from _timing import block as _block  # benchmarks/ is the script's folder
from _timing import median_seconds as _time

SDE = mj.VPSDE()


# -- 1. jvp vs finite differences on a U-Net -------------------------------------------------------
def _unet():
    from flax import nnx

    graphdef, state = nnx.split(_unet_model())
    params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(state))

    def score_from(state):
        m = nnx.merge(graphdef, state)
        return mj.scores.from_model(lambda x, t: m(x, t), SDE, "eps")

    return score_from, state, params


def bench_jvp_vs_fd(ns, steps, lines):
    score_from, state, params = _unet()
    x = jax.random.uniform(jax.random.key(0), (32, 32, 3), minval=-1, maxval=1)
    lines += [f"### 1. Per-step time, jvp vs finite differences (U-Net 32x32x3, {params/1e6:.2f}M "
              "parameters, Euler, QR accumulation, stability check off)", "",
              "| N | jvp s/step | finite_difference s/step | jvp / fd |",
              "| --- | --- | --- | --- |"]
    for n in ns:
        fns = {}
        for method in ("jvp", "finite_difference"):
            def run(state, x, method=method, n=n):
                return volume.volume_growth(score_from(state), SDE, x, num_axes=n,
                                            num_steps=1000, stop_after=steps, method=method,
                                            key=jax.random.key(1), check_stability=False).log_growth
            fns[method] = jax.jit(run)
            _block(fns[method](state, x))
        times = {m: [] for m in fns}
        for _ in range(3):                  # interleaved repeats
            for m, fn in fns.items():
                t = time.perf_counter()
                _block(fn(state, x))
                times[m].append((time.perf_counter() - t) / steps)
        tj, tf = statistics.median(times["jvp"]), statistics.median(times["finite_difference"])
        lines.append(f"| {n} | {tj:.4f} | {tf:.4f} | {tj / tf:.2f}x |")
        print(lines[-1], flush=True)
    lines.append("")


# -- 2. accuracy against cost ----------------------------------------------------------------------
def _digits_train():
    images = load_digits()
    idx = np.random.default_rng(0).permutation(images.shape[0])
    base = images[idx[:64]]
    return np.concatenate([base, base[:, :, ::-1]])


def _row(name, value, ref, evals, seconds):
    err = abs(value - ref) / abs(ref)
    return f"| {name} | {value:.4f} | {err:.2e} | {evals} | {seconds:.3f} |", err


def _measure(name, fn, x0, ref, lines):
    """Runs ``fn(x0)``, times it, appends its table row; returns ``(evals, seconds, error)``."""
    res = fn(x0)
    sec = _time(fn, x0, repeats=1)
    row, err = _row(name, float(res.log_growth[-1]), ref, int(res.num_evals), sec)
    lines.append(row)
    print(row, flush=True)
    return int(res.num_evals), sec, err


def _accuracy_table(title, score, x0, ref, ref_note, tols, lines, euler_steps=(1000,)):
    d = x0.size
    lines += [f"### 2{title}", "", ref_note, "",
              "| path | log growth (nats) | rel. error | drift evals | wall s |",
              "| --- | --- | --- | --- | --- |"]
    key = jax.random.key(2)
    best = None
    for t_steps in euler_steps:
        fn = jax.jit(lambda x, t_steps=t_steps: volume.volume_growth(
            score, SDE, x, num_axes=d, num_steps=t_steps, key=key, check_stability=False))
        evals, sec, err = _measure(f"Euler T = {t_steps}", fn, x0, ref, lines)
        if t_steps == 1000:
            euler = (evals, sec, err)
    for tol in tols:
        fn = jax.jit(lambda x, tol=tol: volume.volume_growth(
            score, SDE, x, num_axes=d, num_steps=1, solver="tsit5", rtol=tol, atol=tol,
            key=key, check_stability=False, max_steps=100_000))
        evals, sec, err = _measure(f"tsit5 rtol = atol = {tol:g}", fn, x0, ref, lines)
        if err <= 0.01 and best is None:
            best = (tol, evals, sec, err)
    if best is not None:
        lines += ["", f"Adaptive path within 1%: rtol {best[0]:g}, {best[1]} evaluations "
                  f"({euler[0] / best[1]:.1f}x fewer than Euler T = 1000, whose error is "
                  f"{euler[2]:.2e}), {best[2]:.3f} s vs {euler[1]:.3f} s."]
    lines.append("")


def bench_accuracy(quick, lines):
    train = _digits_train()
    flat = train.reshape(train.shape[0], -1).astype(np.float64)
    with jax.enable_x64(True):
        # (a) Gaussian data with the digits' mean and covariance: closed form.
        mean, cov = flat.mean(0), np.cov(flat, rowvar=False) + 1e-3 * np.eye(flat.shape[1])
        g = mj.scores.gaussian(jnp.asarray(mean), jnp.asarray(cov), SDE)
        x0 = jnp.asarray(flat[3])
        s = np.linalg.eigvalsh(cov)
        m = lambda t: 0.5 * SDE.beta_min * t + 0.25 * (SDE.beta_max - SDE.beta_min) * t**2
        lam = lambda t: 1 + (s - 1) * np.exp(-2 * m(t))
        t1 = SDE.t_min + SDE.t_max
        ref = 0.5 * (np.log(lam(t1)).sum() - np.log(lam(SDE.t_min)).sum())
        _accuracy_table("a. Gaussian data (digits mean and covariance, D = N = 64), float64",
                        g, x0, ref, f"Reference: closed form (1/2)[log det Sigma(t1) - log det "
                        f"Sigma(t_min)] = {ref:.4f}, t1 = t_min + t_max.",
                        (1e-2, 1e-3, 1e-4, 1e-6), lines)
        # (b) the exact score of 128 digits, a trained image.
        e = mj.scores.empirical(jnp.asarray(train.astype(np.float64)), SDE)
        x0 = jnp.asarray(train[5].astype(np.float64))
        tight = jax.jit(lambda x: volume.volume_growth(
            e, SDE, x, num_axes=64, num_steps=1, solver="tsit5", rtol=1e-9, atol=1e-9,
            key=jax.random.key(2), check_stability=False, max_steps=100_000))(x0)
        ref = float(tight.log_growth[-1])
        e10k = None
        if not quick:
            e10k = float(jax.jit(lambda x: volume.volume_growth(
                e, SDE, x, num_axes=64, num_steps=10_000, key=jax.random.key(2),
                check_stability=False))(x0).log_growth[-1])
        note = (f"Reference: tsit5 at rtol = atol = 1e-9 ({int(tight.num_evals)} evaluations): "
                f"{ref:.4f} nats" + ("" if e10k is None else
                                     f"; Euler with 10,000 steps gives {e10k:.4f} "
                                     f"(rel. diff {abs(e10k - ref) / abs(ref):.1e}, first-order "
                                     "convergence towards it)") + ".")
        _accuracy_table("b. Exact score of 128 digits (64 + flips), trained image, N = D = 64, "
                        "float64", e, x0, ref, note, (1e-2, 1e-3, 1e-4, 1e-6), lines,
                        euler_steps=(1000, 2000))


# -- 3. throughput of ease_of_reproduction --------------------------------------------------------
def bench_throughput(n_images, lines):
    model = _unet_model()
    score = mj.scores.from_model(lambda x, t: model(x, t), SDE, "eps")
    images = np.asarray(jax.random.uniform(jax.random.key(3), (n_images, 32, 32, 3),
                                           minval=-1, maxval=1))
    key = jax.random.key(4)
    lines += ["### 3. ease_of_reproduction throughput (N = 1, one step of T = 1000, U-Net "
              "32x32x3, jvp, float32, stability check on)", "",
              "Steady state: the per-batch function ease_of_reproduction runs (vmap of "
              "volume_growth with the per-image fold_in key, jitted), timed after compilation. "
              f"End to end: one ease_of_reproduction call on {n_images} images, compilation "
              "included (it compiles once per call).", "",
              "| batch_size | steady s/batch | steady images/s | end-to-end s "
              "| end-to-end images/s |",
              "| --- | --- | --- | --- | --- |"]
    for bs in (16, 64):
        @jax.jit
        def batch(xs, idx):
            return jax.vmap(lambda x, i: volume.volume_growth(
                score, SDE, x, num_axes=1, num_steps=1000, stop_after=1,
                key=jax.random.fold_in(key, i)).log_growth[-1])(xs, idx)

        xs, idx = jnp.asarray(images[:bs]), jnp.arange(bs)
        sec = _time(batch, xs, idx, repeats=3)
        t = time.perf_counter()
        volume.ease_of_reproduction(score, SDE, images, num_axes=1, steps=1, batch_size=bs,
                                    key=key, progress=False)
        e2e = time.perf_counter() - t
        lines.append(f"| {bs} | {sec:.3f} | {bs / sec:.1f} | {e2e:.1f} | {n_images / e2e:.1f} |")
        print(lines[-1], flush=True)
    lines.append("")


def _unet_model():
    from flax import nnx
    from memjax.models import UNet

    return UNet(image_size=32, channels=3, base_channels=32, channel_mults=(1, 2, 2),
                num_res_blocks=1, attn_resolutions=(16,), dropout=0.0, rngs=nnx.Rngs(0))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer sizes (a smoke run)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                   "volume_growth.md"))
    ap.add_argument("--parts", default="1,2,3")
    args = ap.parse_args()
    import diffrax
    import flax

    parts = set(args.parts.split(","))
    lines = ["# memjax.volume benchmarks", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
             f"- machine: {platform.machine()} {platform.processor() or ''}, "
             f"{os.cpu_count()} CPU cores, {jax.devices()[0].platform} backend, "
             f"{jax.device_count()} device(s)",
             f"- versions: python {platform.python_version()}, jax {jax.__version__}, "
             f"flax {flax.__version__}, diffrax {diffrax.__version__}",
             f"- load: 1-min load average {os.getloadavg()[0]:.1f} at start (the 2 cores are "
             "shared with other jobs: absolute times are noisy; ratios timed interleaved in one "
             "process are the robust numbers)", ""]
    if "1" in parts:
        bench_jvp_vs_fd((1, 16) if args.quick else (1, 16, 100), 2, lines)
    if "2" in parts:
        bench_accuracy(args.quick, lines)
    if "3" in parts:
        bench_throughput(128 if args.quick else 320, lines)
    lines.append(f"- load: 1-min load average {os.getloadavg()[0]:.1f} at end")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
