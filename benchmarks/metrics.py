"""Benchmarks for memjax.metrics: exact nearest neighbours against faiss, t-SNE against
scikit-learn and openTSNE.

    python benchmarks/metrics.py knn  [--m 10000 --n 10000 --d 3072 --k 1 --repeats 3]
    OMP_NUM_THREADS=1 XLA_FLAGS="--xla_cpu_multi_thread_eigen=false \\
        intra_op_parallelism_threads=1" python benchmarks/metrics.py knn ...   # one thread each
    python benchmarks/metrics.py tsne [--sizes 2000 5000]

On CPU memjax's default is the host search (NumPy's BLAS + a certificate); ``method='xla'``
rows time the jitted kernel that runs under ``jax.jit`` and on accelerators.
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


def _brute_force_f64(queries, refs, rows, k):
    """Exact float64 neighbours of ``queries[rows]`` (ties to the lowest index)."""
    q = queries[rows].astype(np.float64)
    r = refs.astype(np.float64)
    d = (q * q).sum(1)[:, None] - 2.0 * q @ r.T + (r * r).sum(1)[None, :]
    # re-score the 64 best of the expansion directly, then a stable sort: exact ordering
    cand = np.argsort(d, axis=1, kind="stable")[:, :64]
    exact = ((q[:, None, :] - r[cand]) ** 2).sum(-1)
    order = np.lexsort((cand, exact), axis=1)[:, :k]
    return np.take_along_axis(cand, order, axis=1)


def _eigen_knn(k: int):
    """memjax's kernel compiled with XLA:CPU's Eigen dot for this one computation (per-jit
    ``compiler_options``; the process's XLA_FLAGS and every other computation are untouched)."""
    import functools

    import jax

    from memjax import parallel
    from memjax.metrics import neighbours as nbr

    fn = jax.jit(nbr._knn.__wrapped__, static_argnames=("k", "c", "metric", "block", "qblock",
                                                      "mesh"),
                 compiler_options={"xla_cpu_experimental_ynn_fusion_type": ""})

    def run(q, r):
        n = r.shape[0]
        block = -(-nbr._balanced(n, 2048) // 16) * 16
        qblock = nbr._balanced(q.shape[0], 4096)
        return fn(q, r, k=k, c=min(n, k + 8), metric="l2", block=block, qblock=qblock,
                  mesh=parallel.data_mesh())
    return functools.partial(run)


def bench_knn(m: int, n: int, d: int, k: int, repeats: int, block_sizes, check: int,
              eigen: bool = False) -> None:
    import faiss
    import jax

    from memjax.metrics.memorization import nearest_neighbours

    rng = np.random.default_rng(0)
    refs = rng.normal(size=(n, d)).astype(np.float32)
    queries = rng.normal(size=(m, d)).astype(np.float32)
    threads = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    faiss.omp_set_num_threads(threads)
    index = faiss.IndexFlatL2(d)
    index.add(refs)

    def run_faiss():
        return index.search(queries, k)

    runners = {}
    qd, rd = jax.device_put(queries), jax.device_put(refs)
    for method in ("host", "xla"):
        for bs in block_sizes:
            def run_ours(bs=bs, method=method):
                v, i = nearest_neighbours(qd, rd, k=k, block_size=bs, method=method)
                return jax.block_until_ready((v, i))
            label = ("memjax (default: host)" if method == "host" else "memjax method='xla'")
            runners[label + ("" if bs is None else f" (block {bs})")] = run_ours
    if eigen:
        eig = _eigen_knn(k)
        runners["memjax (Eigen dot, per-jit compiler_options)"] = (
            lambda: jax.block_until_ready(eig(qd, rd)))
    runners["faiss IndexFlatL2"] = run_faiss
    outs, times = {}, {name: [] for name in runners}
    for name, fn in runners.items():            # warm-up / compile
        outs[name] = fn()
    loads = []
    for _ in range(repeats):
        for name, fn in runners.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
        loads.append(os.getloadavg()[0])
    f_idx = outs["faiss IndexFlatL2"][1]
    rows = np.sort(rng.choice(m, min(check, m), replace=False))
    truth = _brute_force_f64(queries, refs, rows, k)
    t_faiss = min(times["faiss IndexFlatL2"])
    print(f"\n{m} x {n} x {d}, k = {k}, threads {threads}; {_versions()}; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC\n{_machine()}\n"
          f"uptime: {os.popen('uptime').read().strip()}\n")
    print("| m x n x D | threads | method | time (s, min of %d) | x faiss (ratio of minima) | "
          "x faiss per round: median [range] | indices equal to faiss | equal to float64 brute "
          "force (%d queries) | load |" % (repeats, len(rows)))
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    size = f"{m:,} x {n:,} x {d:,}"
    load = f"{min(loads):.1f}-{max(loads):.1f}"
    for name in runners:
        t = min(times[name])
        i = np.asarray(outs[name][1])
        exact = f"{np.mean(np.all(i[rows] == truth, axis=1)) * 100:.1f}%"
        if name.startswith("faiss"):
            print(f"| {size} | {threads} | {name} | {t:.2f} | 1.00 | - | - | {exact} | {load} |")
            continue
        same = np.all(i == f_idx, axis=1)
        per = np.array(times[name]) / np.array(times["faiss IndexFlatL2"])   # same round
        print(f"| {size} | {threads} | {name} | {t:.2f} | {t / t_faiss:.2f} | "
              f"{np.median(per):.2f} [{per.min():.2f}-{per.max():.2f}] | "
              f"{same.mean() * 100:.2f}% | {exact} | {load} |", flush=True)


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
    p.add_argument("--block-sizes", type=int, nargs="+", default=[None])
    p.add_argument("--eigen", action="store_true",
                   help="also time the kernel compiled with XLA:CPU's Eigen dot")
    p.add_argument("--check", type=int, default=500, help="queries checked in float64")
    p.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000])
    a = p.parse_args()
    if a.what == "knn":
        bench_knn(a.m, a.n, a.d, a.k, a.repeats, a.block_sizes, a.check, a.eigen)
    else:
        bench_tsne(a.sizes)


if __name__ == "__main__":
    main()
