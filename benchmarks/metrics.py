"""Benchmarks for memjax.metrics: exact nearest neighbours against faiss, t-SNE against
scikit-learn and openTSNE.

    python benchmarks/metrics.py knn  [--m 10000 --n 10000 --d 3072 --k 1 --repeats 3]
    python benchmarks/metrics.py tsne [--sizes 2000 5000]

Timings are interleaved in one process (memjax, faiss, memjax, faiss, ...) so that the ratio is
robust to the load of a shared machine; the minimum over repeats is reported, compilation
excluded (one warm-up call). Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np


def _machine() -> str:
    import jax

    dev = jax.devices()[0]
    return (f"{platform.node()} | {os.cpu_count()} CPU cores | {dev.platform}:{dev.device_kind} x"
            f"{jax.device_count()} | load avg {os.getloadavg()[0]:.1f} | "
            f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")


def _versions() -> str:
    import faiss
    import jax

    return f"jax {jax.__version__}, faiss {faiss.__version__}, numpy {np.__version__}"


def bench_knn(m: int, n: int, d: int, k: int, repeats: int, block_sizes) -> None:
    import faiss
    import jax

    from memjax.metrics.memorization import nearest_neighbours

    rng = np.random.default_rng(0)
    refs = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(m, d)).astype(np.float32)
    index = faiss.IndexFlatL2(d)
    index.add(refs)

    def run_faiss():
        return index.search(queries, k)

    runners = {}
    qd, rd = jax.device_put(queries), jax.device_put(refs)
    for bs in block_sizes:
        def run_ours(bs=bs):
            v, i = nearest_neighbours(qd, rd, k=k, block_size=bs)
            return jax.block_until_ready((v, i))
        runners[f"memjax (block {bs})"] = run_ours
    runners["faiss IndexFlatL2"] = run_faiss
    outs, times = {}, {name: [] for name in runners}
    for name, fn in runners.items():            # warm-up / compile
        outs[name] = fn()
    for _ in range(repeats):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    f_dist, f_idx = outs["faiss IndexFlatL2"]
    t_faiss = min(times["faiss IndexFlatL2"])
    print(f"\n{m} queries x {n} refs x {d} dims, k = {k}; {_versions()}; "
          f"{datetime.date.today()}\n{_machine()}\n")
    print("| method | time (s, min of %d) | x faiss | neighbours equal to faiss | "
          "mismatches resolved by float64 |" % repeats)
    print("| --- | --- | --- | --- | --- |")
    for name in runners:
        t = min(times[name])
        if name.startswith("faiss"):
            print(f"| {name} | {t:.2f} | 1.00 | - | - |")
            continue
        v, i = (np.asarray(a) for a in outs[name])
        same = np.all(i == f_idx, axis=1)
        # where they differ, which one is right? exact float64 distances of both answers
        rows = np.flatnonzero(~same)
        ours_right = 0
        for r in rows:
            q = queries[r].astype(np.float64)
            d_ours = np.linalg.norm(refs[i[r]].astype(np.float64) - q, axis=1)
            d_faiss = np.linalg.norm(refs[f_idx[r]].astype(np.float64) - q, axis=1)
            ours_right += int(np.all(d_ours <= d_faiss))
        print(f"| {name} | {t:.2f} | {t / t_faiss:.2f} | {same.mean() * 100:.2f}% of queries | "
              f"{ours_right}/{len(rows)} memjax closer-or-equal |")


def bench_tsne(sizes, perplexity: float = 30.0) -> None:
    import jax
    from sklearn.datasets import load_digits
    from sklearn.manifold import TSNE, trustworthiness

    try:
        from memjax.metrics.embedding import tsne
    except ImportError:
        tsne = None
    x0 = load_digits().data.astype(np.float32)
    print("\n| n | method | time (s) | trustworthiness (10 nn) |\n| --- | --- | --- | --- |")
    for n in sizes:
        rng = np.random.default_rng(0)
        reps = -(-n // len(x0))
        x = np.concatenate([x0] * reps)[:n] + rng.normal(0, 0.5, (reps * len(x0), 64))[:n]
        x = x.astype(np.float32)
        methods = {}
        methods["scikit-learn TSNE (Barnes-Hut)"] = lambda: TSNE(
            perplexity=perplexity, random_state=0, init="random").fit_transform(x)
        try:
            import openTSNE

            methods["openTSNE (Barnes-Hut)"] = lambda: np.asarray(openTSNE.TSNE(
                perplexity=perplexity, negative_gradient_method="bh", random_state=0,
                n_jobs=2).fit(x))
        except ImportError:
            pass
        if tsne is not None:
            def ours():
                y = tsne(x, perplexity=perplexity, key=jax.random.key(0))
                return np.asarray(jax.block_until_ready(y))
            ours()   # compile
            methods["memjax tsne (exact)"] = ours
        for name, fn in methods.items():
            t0 = time.perf_counter()
            y = fn()
            t = time.perf_counter() - t0
            tw = trustworthiness(x, y, n_neighbors=10)
            print(f"| {n} | {name} | {t:.1f} | {tw:.4f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("what", choices=["knn", "tsne"])
    p.add_argument("--m", type=int, default=10_000)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--d", type=int, default=3072)
    p.add_argument("--k", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--block-sizes", type=int, nargs="+", default=[2048])
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    a = p.parse_args()
    if a.what == "knn":
        bench_knn(a.m, a.n, a.d, a.k, a.repeats, a.block_sizes)
    else:
        bench_tsne(a.sizes)


if __name__ == "__main__":
    main()
