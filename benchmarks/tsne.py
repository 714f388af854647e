"""Benchmark: memjax's exact t-SNE against scikit-learn and openTSNE (time, trustworthiness).

Data: scikit-learn's 1,797 8x8 digits (no download) plus one-pixel translated copies
(shifts in {-1, 0, 1}^2 other than (0, 0), zero fill, drawn with a fixed seed) up to n rows,
as raw 64-dim pixel vectors in [0, 16]. All methods use perplexity 30 and 1000 iterations
(openTSNE: 250 exaggerated + 750 normal, its default split).

Rows: memjax ``tsne`` (exact O(n^2), jitted; first call includes compilation, the steady
state is a second call), scikit-learn ``TSNE`` Barnes-Hut (its default) and exact (n <= 2000
only: it loops over points in Python), openTSNE (FFT-accelerated interpolation, its default).
Trustworthiness: ``sklearn.manifold.trustworthiness(x, y, n_neighbors=10)``.

Run::

    python benchmarks/tsne.py --sizes 2000 5000 --threads 1 --out benchmarks/results/tsne.md

``--threads 1`` (default) pins XLA, OpenMP and BLAS to one thread for every method, which
keeps the comparison fair and stable on shared machines; ``--threads 0`` leaves each library
its default.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time


def _parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    p.add_argument("--threads", type=int, default=1,
                   help="1: single thread everywhere; 0: library defaults")
    p.add_argument("--sklearn-exact-max", type=int, default=2000)
    p.add_argument("--out", default=None, help="markdown file to write (printed anyway)")
    return p.parse_args()


ARGS = _parse()
if ARGS.threads == 1:   # before importing numpy / jax
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_cpu_multi_thread_eigen=false"
                               " intra_op_parallelism_threads=1").strip()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"

import jax  # noqa: E402
import numpy as np  # noqa: E402
import openTSNE  # noqa: E402
import sklearn  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.manifold import TSNE, trustworthiness  # noqa: E402

from memjax.metrics.embedding import tsne  # noqa: E402

SEED = 0


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


def run(n: int):
    x = augmented_digits(n)
    rows = []

    def add(name, seconds, y, note=""):
        tw = trustworthiness(x, y, n_neighbors=10)
        rows.append((n, name, seconds, tw, note))
        print(f"n={n} {name:32s} {seconds:8.1f} s  trustworthiness {tw:.4f} {note}", flush=True)

    t_first, _ = timed(lambda: tsne(x, perplexity=30.0))
    t_run, y = timed(lambda: tsne(x, perplexity=30.0))
    add("memjax tsne (exact, jit)", t_run, y, f"first call incl. compile {t_first:.1f} s")
    t, y = timed(lambda: TSNE(perplexity=30.0, random_state=SEED).fit_transform(x))
    add("scikit-learn TSNE (barnes_hut)", t, y)
    if n <= ARGS.sklearn_exact_max:
        t, y = timed(lambda: TSNE(perplexity=30.0, method="exact",
                                  random_state=SEED).fit_transform(x))
        add("scikit-learn TSNE (exact)", t, y)
    n_jobs = 1 if ARGS.threads == 1 else -1
    t, y = timed(lambda: openTSNE.TSNE(perplexity=30, n_jobs=n_jobs,
                                       random_state=SEED).fit(x))
    add("openTSNE (FFT)", t, y)
    return rows


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
    load_before = os.getloadavg()
    started = datetime.datetime.now(datetime.timezone.utc)
    rows = [r for n in ARGS.sizes for r in run(n)]
    load_after = os.getloadavg()
    lines = [
        "# t-SNE: memjax vs scikit-learn vs openTSNE",
        "",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC; command: `python benchmarks/tsne.py "
        f"--sizes {' '.join(map(str, ARGS.sizes))} --threads {ARGS.threads}`",
        f"- Machine: {machine()}; device: {jax.devices()[0].platform} (no GPU rows: none "
        f"available)",
        f"- Versions: Python {platform.python_version()}, jax {jax.__version__}, "
        f"scikit-learn {sklearn.__version__}, openTSNE {openTSNE.__version__}, "
        f"numpy {np.__version__}",
        "- Threads: " + ("1 per method (XLA, OpenMP, BLAS pinned; openTSNE n_jobs=1)"
                         if ARGS.threads == 1 else "library defaults"),
        f"- Load: the 2 cores are shared with other jobs; 1-minute load average "
        f"{load_before[0]:.1f} before and {load_after[0]:.1f} after the run, so absolute "
        f"times are inflated and noisy; trustworthiness is not affected.",
        "- Data: 1,797 scikit-learn digits (64 raw pixels, 0..16), then seeded one-pixel "
        "translated copies up to n. Perplexity 30, 1000 iterations, PCA initialisation "
        "everywhere (each library's default); trustworthiness with 10 neighbours.",
        "- memjax time is a second call (compiled); the first call including compilation is "
        "in the note.",
        "",
        "| n | method | time (s) | trustworthiness | note |",
        "| ---: | --- | ---: | ---: | --- |",
    ]
    lines += [f"| {n} | {name} | {t:.1f} | {tw:.4f} | {note} |" for n, name, t, tw, note in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if ARGS.out:
        with open(ARGS.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    sys.exit(main())
