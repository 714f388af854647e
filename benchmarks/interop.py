"""Benchmarks of bring-your-own models: diffusers' DDPM CIFAR-10 U-Net (35.7M parameters) in memjax.

Run:  python benchmarks/interop.py [--quick] [--out benchmarks/results/interop.md]

The network is google/ddpm-cifar10-32's architecture (config written out in
tests/test_interop_diffusers.py) with random weights: built by diffusers and loaded through
``memjax.interop.load_pretrained`` when diffusers is installed (extra ``interop``), else the
NNX port initialised directly (same architecture, same cost). Two paths per setting, timed
interleaved in one process on the same weights:

* ``nnx``   -- the Flax NNX port (:mod:`memjax.interop.unet2d`), jitted end to end;
* ``torch`` -- the torch module through ``memjax.interop.torch`` (pure_callback + custom_jvp),
  imported lazily: the column reads "n/a" where that module or torch is absent.

1. Per-step time of exact volume growth (``method="jvp"``, Euler on the discrete table's grid,
   QR accumulation) at N = 1, 10, 100 axes (``tangent_chunk`` bounds memory at N = 100).
2. Images per second of ``ease_of_reproduction`` (N = 1, one step of T = 1000).

Wall clock after a warm-up call (compilation excluded), median of repeats. Load average recorded.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import memjax as mj
from memjax.interop import diffusers as mjd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))


def _block(x):
    return jax.tree_util.tree_map(lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x)


def _time(fn, *args, repeats=2):
    _block(fn(*args))                      # compile + warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        _block(fn(*args))
        out.append(time.perf_counter() - t)
    return statistics.median(out)


def _load():
    return os.getloadavg()[0]


# -- the subjects ----------------------------------------------------------------------------------
def build_subjects():
    """``(pretrained, torch_module or None)`` on the DDPM CIFAR-10 architecture, random weights."""
    from test_interop_diffusers import DDPM_CIFAR10

    config = {k: v for k, v in DDPM_CIFAR10.items() if not k.startswith("_")}
    try:
        import diffusers
        import torch
    except ImportError:
        torch_model = None
    else:
        torch.manual_seed(0)
        torch_model = diffusers.UNet2DModel(**config).eval()
    with tempfile.TemporaryDirectory() as d:
        if torch_model is not None:
            torch_model.save_pretrained(d)
            diffusers.DDPMScheduler().save_pretrained(os.path.join(d, "scheduler"))
        else:
            from test_interop_diffusers_load import SCHEDULER, _write_checkpoint
            _write_checkpoint(pathlib.Path(d), config=DDPM_CIFAR10, scheduler=SCHEDULER)
        return mjd.load_pretrained(d), torch_model


def torch_bridge_score(torch_model, pre):
    """The same network through ``memjax.interop.torch`` (eps-prediction, label ``N t - 1``), or None.

    The bridge lives on another branch while this script is written: adapt this one call to its
    final signature when merging.
    """
    if torch_model is None:
        return None
    try:
        from memjax.interop import torch as bridge
    except ImportError:
        return None
    return bridge.eps_score_fn(lambda x, label: torch_model(x, label).sample, pre.schedule,
                               label_fn=pre.label_fn)


# -- 0. the network alone -------------------------------------------------------------------------
def bench_forward(pre, torch_model, batch, lines):
    """One eps-prediction forward pass of ``batch`` images: the NNX port vs diffusers' own module."""
    x = np.asarray(jax.random.uniform(jax.random.key(4), (batch, 32, 32, 3), minval=-1, maxval=1))
    labels = np.full((batch,), 500.0, np.float32)
    fwd = mjd.apply_batched(pre.model)
    nnx_s = _time(fwd, jnp.asarray(x), jnp.asarray(labels), repeats=3)
    torch_s = "n/a"
    if torch_model is not None:
        import torch

        xt, tt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels)
        with torch.no_grad():
            torch_s = f"{_time(lambda: torch_model(xt, tt).sample, repeats=3) / batch:.4f}"
    lines += [f"### 0. Forward pass, batch {batch} (the network alone)", "",
              "| path | s/image | load |", "| --- | --- | --- |",
              f"| nnx (jit) | {nnx_s / batch:.4f} | {_load():.1f} |",
              f"| torch (diffusers, eager, {_torch_threads()} threads) | {torch_s} | {_load():.1f} |", ""]
    print("\n".join(lines[-4:-1]), flush=True)


def _torch_threads():
    try:
        import torch
    except ImportError:
        return "-"
    return torch.get_num_threads()


# -- 1. volume growth per step ---------------------------------------------------------------------
def bench_volume(score_fns, sched, ns, steps, lines):
    x = jax.random.uniform(jax.random.key(0), (32, 32, 3), minval=-1, maxval=1)
    names = list(score_fns)
    lines += [f"### 1. Exact volume growth, seconds per step (method='jvp', Euler, T = 1000, {steps} step(s))",
              "", "| N | tangent_chunk | " + " | ".join(f"{n} s/step" for n in names) + " | load |",
              "| --- | --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for n in ns:
        chunk = 25 if n > 25 else None
        row = []
        for name in names:
            fn = score_fns[name]
            if fn is None:
                row.append("n/a")
                continue

            def run(x, fn=fn, n=n):
                return mj.volume_growth(fn, sched, x, num_axes=n, num_steps=1000, stop_after=steps,
                                        key=jax.random.key(1), check_stability=False,
                                        tangent_chunk=chunk).log_growth
            run = jax.jit(run)
            row.append(f"{_time(run, x, repeats=1 if n >= 100 else 2) / steps:.3f}")
        lines.append(f"| {n} | {chunk or '-'} | " + " | ".join(row) + f" | {_load():.1f} |")
        print(lines[-1], flush=True)
    lines.append("")


# -- 2. ease of reproduction -----------------------------------------------------------------------
def bench_ease(score_fns, sched, num_images, lines):
    images = jax.random.uniform(jax.random.key(2), (num_images, 32, 32, 3), minval=-1, maxval=1)
    lines += [f"### 2. ease_of_reproduction images/s (N = 1, one step of T = 1000, {num_images} images, "
              "batch 8)", "", "| path | images/s | s/image | load |", "| --- | --- | --- | --- |"]
    for name, fn in score_fns.items():
        if fn is None:
            lines.append(f"| {name} | n/a | n/a | {_load():.1f} |")
            continue

        def run(imgs, fn=fn):
            return jnp.asarray(mj.ease_of_reproduction(fn, sched, imgs, num_axes=1, steps=1, batch_size=8,
                                                       key=jax.random.key(3), progress=False))
        dt = _time(run, images, repeats=1)
        lines.append(f"| {name} | {num_images / dt:.2f} | {dt / num_images:.3f} | {_load():.1f} |")
        print(lines[-1], flush=True)
    lines.append("")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 10 only; 8 images")
    parser.add_argument("--out", default=None, help="write the markdown table here (default: print)")
    args = parser.parse_args()
    pre, torch_model = build_subjects()
    score_fns = {"nnx": pre.score_fn, "torch": torch_bridge_score(torch_model, pre)}
    params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(nnx.state(pre.model)))
    lines = ["# memjax.interop benchmarks (diffusers DDPM CIFAR-10 U-Net)", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {jax.default_backend()} backend, "
             f"{jax.device_count()} device(s) ({jax.devices()[0].device_kind})",
             f"- network: UNet2DModel, google/ddpm-cifar10-32 config, {params / 1e6:.2f}M parameters, random "
             f"weights; schedule DiscreteVP (DDPMScheduler defaults), eps-prediction",
             f"- load: 1-min load average {_load():.1f} at start (shared cores: absolute times are noisy)", ""]
    bench_forward(pre, torch_model, 8, lines)
    bench_volume(score_fns, pre.schedule, (1, 10) if args.quick else (1, 10, 100), 1, lines)
    bench_ease(score_fns, pre.schedule, 8 if args.quick else 16, lines)
    if score_fns["torch"] is None:
        lines.append("torch columns: n/a -- memjax.interop.torch (the torch bridge) or torch was not importable "
                     "in this run; rerun this script where both are.")
    text = "\n".join(lines)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
