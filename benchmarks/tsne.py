"""Benchmark: memjax's t-SNE (FFT method) against openTSNE and scikit-learn, side by side.

Data: scikit-learn's 1,797 8x8 digits (no download) plus one-pixel translated copies
(shifts in {-1, 0, 1}^2 other than (0, 0), zero fill, drawn with a fixed seed) up to n rows,
as raw 64-dim pixel vectors in [0, 16]. Every method runs 1000 iterations, 250 of them with
exaggeration 12, perplexity 30, PCA initialisation: memjax ``tsne(x)`` with its defaults
(``method="auto"``: the FFT method from 2,000 points on), openTSNE with its defaults except
``n_iter=750`` (its default is 500 after the 250 exaggerated ones; its ``"auto"`` gradient
method is Barnes-Hut below 10,000 points and FFT from 10,000 on), scikit-learn's Barnes-Hut
``TSNE`` where affordable (``--sklearn-max``).

Methods run one after the other on the same data for each n (memjax, openTSNE, memjax again
where ``n <= --second-call-max``, so that the ratio is fair on a shared machine), with the
1-minute load average recorded next to each row. memjax's first call includes compilation
(a few programs: the k-NN search, the calibration and one optimisation segment per grid
size); the second call runs compiled. Threads: JAX uses every core, openTSNE gets
``n_jobs = os.cpu_count()``. Trustworthiness: ``sklearn.manifold.trustworthiness(x, y,
n_neighbors=10)``, on all points up to ``--tw-max`` and above that on a seeded random subsample
of ``--tw-max`` points (neighbours taken within the subsample).

Run::

    python benchmarks/tsne.py --sizes 2000 5000 20000 --out benchmarks/results/tsne.md
    python benchmarks/tsne.py --sizes 50000 --out benchmarks/results/tsne.md --append
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import jax
import numpy as np
import openTSNE
import sklearn
from sklearn.datasets import load_digits
from sklearn.manifold import TSNE, trustworthiness

from memjax.metrics.embedding import tsne

SEED = 0


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 20000])
    p.add_argument("--sklearn-max", type=int, default=2000)
    p.add_argument("--second-call-max", type=int, default=5000)
    p.add_argument("--tw-max", type=int, default=5000)
    p.add_argument("--out", default=None, help="markdown file to write (printed anyway)")
    p.add_argument("--append", action="store_true", help="append rows to --out")
    return p.parse_args()


def augmented_digits(n: int) -> np.ndarray:
    """The 1,797 digits, then seeded one-pixel translations of them, ``[n, 64]`` float32."""
    images = load_digits().images.astype(np.float32)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    rng = np.random.default_rng(SEED)
    extra = max(n - len(images), 0)
    which = rng.integers(0, len(images), size=extra)
    how = rng.integers(0, len(shifts), size=extra)
    out = [images.reshape(len(images), -1)[:n]]
    if extra:
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1)))
        copies = np.stack([padded[i, 1 - shifts[s][0]:9 - shifts[s][0],
                                  1 - shifts[s][1]:9 - shifts[s][1]]
                           for i, s in zip(which, how)])
        out.append(copies.reshape(extra, -1))
    return np.concatenate(out)


def timed(fn):
    t = time.perf_counter()
    y = np.asarray(fn())
    return time.perf_counter() - t, y


def run(n: int, args, emit):
    x = augmented_digits(n)
    sub = None
    if n > args.tw_max:
        sub = np.sort(np.random.default_rng(SEED).choice(n, args.tw_max, replace=False))
    tw_note = "all points" if sub is None else f"subsample of {args.tw_max}"

    def add(name, seconds, y, note=""):
        xs, ys = (x, y) if sub is None else (x[sub], y[sub])
        tw = trustworthiness(xs, ys, n_neighbors=10)
        emit(n, name, seconds, tw, f"{tw_note}; {note}".strip("; "), os.getloadavg()[0])

    t, y = timed(lambda: tsne(x))
    add("memjax tsne (auto: fft), 1st call", t, y, "includes compilation")
    t, y = timed(lambda: openTSNE.TSNE(n_iter=750, n_jobs=os.cpu_count(),
                                       random_state=SEED).fit(x))
    add("openTSNE (defaults, n_iter=750)", t, y, "BH" if n < 10_000 else "FFT")
    if n <= args.second_call_max:
        t, y = timed(lambda: tsne(x))
        add("memjax tsne (auto: fft), 2nd call", t, y, "compiled")
    if n <= args.sklearn_max:
        t, y = timed(lambda: TSNE(perplexity=30.0, random_state=SEED).fit_transform(x))
        add("scikit-learn TSNE (barnes_hut)", t, y)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def main():
    args = _parse()
    started = datetime.datetime.now(datetime.timezone.utc)
    header = [
        "# t-SNE: memjax (FFT method) vs openTSNE vs scikit-learn",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; command: `python benchmarks/tsne.py --sizes "
        f"{' '.join(map(str, args.sizes))}`",
        f"- Machine: {machine()}; device: {jax.devices()[0].platform} (no GPU rows: none "
        f"available)",
        f"- Versions: Python {platform.python_version()}, jax {jax.__version__}, "
        f"scikit-learn {sklearn.__version__}, openTSNE {openTSNE.__version__}, "
        f"numpy {np.__version__}",
        "- Settings and data: see the docstring of benchmarks/tsne.py. Load: the 1-minute "
        "load average when the row finished (2 cores shared with other jobs).",
        "",
        "| n | method | time (s) | trustworthiness | load | note |",
        "| ---: | --- | ---: | ---: | ---: | --- |",
    ]
    out = None
    if args.out:
        out = open(args.out, "a" if args.append else "w")
        if not args.append:
            out.write("\n".join(header) + "\n")
    print("\n".join(header), flush=True)

    def emit(n, name, t, tw, note, load):
        line = f"| {n} | {name} | {t:.1f} | {tw:.4f} | {load:.1f} | {note} |"
        print(line, flush=True)
        if out is not None:
            out.write(line + "\n")
            out.flush()

    for n in args.sizes:
        run(n, args, emit)
    if out is not None:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
