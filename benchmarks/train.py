"""Training throughput: steps/s and images/s of the jitted, data-parallel train step.

    python benchmarks/train.py                                # digits + CIFAR-10 rows
    python benchmarks/train.py --steps 20 --out benchmarks/results/train.md

For each shipped config the real U-Net and objective run ``memjax.training.make_train_step``
(the step the training loop uses: forward, backward, clipping, Adam, EMA) on batches of the
config's shape. CIFAR-10 batches are random images of the right shape (no download; the
step's cost does not depend on pixel values). After one compiling call, ``--steps`` steps are
timed (wall clock and process CPU time, which counts every XLA thread), ``--repeats`` times,
interleaving the configs so that shared-machine load hits them alike. The table records the
machine, versions, date and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, config file, batch-size override or None, whether the data is the real source)
ROWS = [
    ("digits_overfit (8x8, 128 digits)", "digits_overfit.py", None),
    ("cifar10_ddpm DDPM++ (32x32), batch 128", "cifar10_ddpm.py", None),
    ("cifar10_ddpm DDPM++ (32x32), batch 8", "cifar10_ddpm.py", 8),
    ("ambient_300 (EDM DDPM++, x0, ambient loss), batch 8", "ambient_300.py", 8),
]


def load_config(name):
    spec = importlib.util.spec_from_file_location(f"cfg_{name[:-3]}",
                                                  os.path.join(ROOT, "configs", name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def make_bench(name, batch_size):
    from memjax import data, parallel, training

    cfg = load_config(name)
    if batch_size:
        cfg.training.batch_size = batch_size
    training.validate_config(cfg)
    mesh = parallel.data_mesh()
    sde = training.make_sde(cfg)
    model = training.build_model(cfg)
    model.train()
    g, params, other = training.split_model(model)
    opt = training.make_optimizer(cfg.optim, cfg.training.num_steps)
    step = training.make_train_step(g, training.build_loss(cfg, sde), opt, seed=0,
                                    ema_decay=cfg.training.ema_decay, mesh=mesh)
    state = jax.device_put(training.init_state(params, other, opt), parallel.replicated(mesh))
    b = cfg.training.batch_size
    if cfg.data.source == "digits":
        ds = data.load_dataset(cfg.data)
    else:
        rng = np.random.default_rng(0)
        shape = (max(b, 16), cfg.model.image_size, cfg.model.image_size, cfg.model.channels)
        imgs = rng.uniform(-1, 1, shape).astype(np.float32)
        labels = rng.integers(0, 10, shape[0]).astype(np.int32)
        ds = data.Dataset(imgs, imgs[:0], labels, labels[:0], np.arange(shape[0]),
                          np.arange(0), np.zeros(shape[0], bool), np.zeros(0, bool), 10, "random")
    batches = [training.global_batch(ds, b, 0, s, mesh) for s in range(2)]
    t0 = time.perf_counter()
    state, m = step(state, batches[0])
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0
    nparams = int(sum(x.size for x in jax.tree.leaves(params)))
    holder = {"state": state}

    def run(n):
        st = holder["state"]
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(n):
            st, m = step(st, batches[i % 2])
        jax.block_until_ready(m)
        holder["state"] = st
        return time.perf_counter() - w0, time.process_time() - c0

    return dict(run=run, batch=b, params=nparams, compile_s=compile_s)


def make_loop_bench(name, steps_per_dispatch):
    """The training loop's own per-step work on the real data: batch assembly
    (``global_batch``) and the dispatch of 1 step, or of ``steps_per_dispatch`` steps in one
    ``lax.scan`` (``training.steps_per_dispatch``)."""
    from memjax import data, parallel, training

    cfg = load_config(name)
    mesh = parallel.data_mesh()
    model = training.build_model(cfg)
    model.train()
    g, params, other = training.split_model(model)
    opt = training.make_optimizer(cfg.optim, cfg.training.num_steps)
    k = steps_per_dispatch
    step = training.cached_train_step(g, training.build_loss(cfg, training.make_sde(cfg)), cfg,
                                      mesh, k)
    state = jax.device_put(training.init_state(params, other, opt), parallel.replicated(mesh))
    ds, b = data.load_dataset(cfg.data), cfg.training.batch_size
    holder = {"state": state, "s": 0}

    def run(n):
        st, s = holder["state"], holder["s"]
        c0, w0 = time.process_time(), time.perf_counter()
        for _ in range(n // k):
            st, m = step(st, training.global_batch(ds, b, cfg.seed, s, mesh,
                                                   num_steps=None if k == 1 else k))
            s += k
        jax.block_until_ready(m)
        holder["state"], holder["s"] = st, s
        return time.perf_counter() - w0, time.process_time() - c0

    t0 = time.perf_counter()
    run(k)
    compile_s = time.perf_counter() - t0
    return dict(run=run, batch=b, params=int(sum(x.size for x in jax.tree.leaves(params))),
                compile_s=compile_s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--cifar-steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=str, default="0,1,2,3")
    ap.add_argument("--dispatch", type=str, default="",
                    help="e.g. 1,10,50: also time digits_overfit's training loop (batch "
                         "assembly + dispatch) with these steps per dispatch")
    # Print only by default: benchmarks/results/train.md also holds hand-written sections (the
    # memorization study) and rows measured under other conditions, which --out overwrites.
    ap.add_argument("--out", type=str, default="",
                    help="write the table to this file, replacing it (default: print only)")
    args = ap.parse_args()
    rows = [ROWS[int(i)] for i in args.rows.split(",") if i]
    load0 = os.getloadavg()
    benches = {label: make_bench(name, bs) for label, name, bs in rows}
    for k in [int(v) for v in args.dispatch.split(",") if v]:
        label = f"digits_overfit training loop, {k} step(s) per dispatch"
        rows.append((label, "digits_overfit.py", None))
        benches[label] = make_loop_bench("digits_overfit.py", k)
    times = {label: [] for label, _, _ in rows}
    for _ in range(args.repeats):
        for label, name, _ in rows:
            n = args.steps if name.startswith("digits") else args.cifar_steps
            wall, cpu = benches[label]["run"](n)
            times[label].append((wall / n, cpu / n))
            print(label, f"{wall / n:.3f} s/step wall, {cpu / n:.3f} s/step cpu", flush=True)
    load1 = os.getloadavg()
    import flax
    import optax

    cpu_model = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu_model = next(ln.split(":", 1)[1].strip() for ln in f if "model name" in ln)
    except (OSError, StopIteration):
        pass
    lines = [
        "# Training throughput (`benchmarks/train.py`)",
        "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cpu_model}, {os.cpu_count()} CPU cores visible, devices "
        f"{[str(d) for d in jax.devices()]}",
        f"- versions: jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}, "
        f"python {platform.python_version()}",
        f"- load average (1 min) before / after: {load0[0]:.1f} / {load1[0]:.1f} -- the 2 cores "
        "are shared with other engineers' jobs, so wall times are inflated by roughly load / 2;"
        " process CPU time (all XLA threads) is the load-robust number, and an idle 2-core "
        "machine runs a step in about CPU time / 2 when XLA keeps both cores busy.",
        f"- median over {args.repeats} interleaved repeats of {args.steps} (digits) / "
        f"{args.cifar_steps} (CIFAR-10) steps after one compiling step.",
        "",
        "| config | params | batch | compile s | s/step (wall) | steps/s | images/s | "
        "CPU s/step |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, _, _ in rows:
        b = benches[label]
        wall = float(np.median([t[0] for t in times[label]]))
        cpu = float(np.median([t[1] for t in times[label]]))
        lines.append(f"| {label} | {b['params'] / 1e6:.2f}M | {b['batch']} | "
                     f"{b['compile_s']:.1f} | {wall:.3f} | {1 / wall:.2f} | "
                     f"{b['batch'] / wall:.1f} | {cpu:.3f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text)
    print(json.dumps({k: v for k, v in times.items()}))


if __name__ == "__main__":
    main()
