"""Benchmarks of bring-your-own models: diffusers' DDPM CIFAR-10 U-Net (35.7M parameters) in memjax.

Run:  python benchmarks/interop.py [--quick] [--out benchmarks/results/interop.md]

The network is google/ddpm-cifar10-32's architecture (config written out in
tests/test_interop_diffusers.py) with random weights: built by diffusers and loaded through
``memjax.interop.load_pretrained`` when diffusers is installed (extra ``interop``), else the
NNX port initialised directly (same architecture, same cost). Two paths per setting, timed
interleaved in one process on the same weights:

* ``nnx``   -- the Flax NNX port (:mod:`memjax.interop.unet2d`), jitted end to end;
* ``torch`` -- the same diffusers module through ``memjax.interop.torch.from_torch`` (pure_callback
  + custom_jvp, ``torch.func.jvp``) on the checkpoint's schedule and label map; "n/a" without
  torch.

1. Per-step time of exact volume growth (``method="jvp"``, Euler on the discrete table's grid,
   QR accumulation) at N = 1, 10, 100 axes (``tangent_chunk`` bounds memory at N = 100).
2. Images per second of ``ease_of_reproduction`` (N = 1, one step of T = 1000).

Wall clock with compilation excluded (volume growth is compiled ahead of time, the rest gets a
warm-up call), median of repeats; each setting times the port then the bridge back to back, and
the ratio bridge / nnx is the robust number on a loaded machine. Load average recorded.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import memjax as mj
from memjax.interop import diffusers as mjd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from _timing import median_seconds as _time  # noqa: E402 (benchmarks/ is the script's folder)


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
    """The same module through :func:`memjax.interop.torch.from_torch` (eps-prediction, the
    checkpoint's discrete schedule and label ``N t - 1``), or None without torch."""
    if torch_model is None:
        return None
    from memjax.interop import torch as mt

    return mt.from_torch(torch_model, pre.schedule, (32, 32, 3), label=pre.label_fn)


# -- 0. the network alone -------------------------------------------------------------------------
def bench_forward(pre, torch_model, batch, lines):
    """One eps-prediction forward pass of ``batch`` images: the NNX port vs diffusers' own module."""
    x = np.asarray(jax.random.uniform(jax.random.key(4), (batch, 32, 32, 3), minval=-1, maxval=1))
    labels = np.full((batch,), 500.0, np.float32)
    fwd = mjd.apply_batched(pre.model)
    nnx_s = _time(fwd, jnp.asarray(x), jnp.asarray(labels), repeats=2)
    torch_s = "n/a"
    if torch_model is not None:
        import torch

        xt, tt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), torch.from_numpy(labels)
        with torch.no_grad():
            torch_s = f"{_time(lambda: torch_model(xt, tt).sample, repeats=2) / batch:.4f}"
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
def _ratio(row):
    return f"{row[1] / row[0]:.2f}x" if None not in row else "n/a"


def _fmt(v, spec):
    return "n/a" if v is None else format(v, spec)


def bench_volume(score_fns, sched, ns, lines, repeats):
    """One Euler step (``stop_after=1`` of T = 1000), compiled ahead of time, then timed: each
    setting runs the port then the bridge, back to back, on the same image and key."""
    x = jax.random.uniform(jax.random.key(0), (32, 32, 3), minval=-1, maxval=1)
    lines += ["### 1. Exact volume growth, seconds per step (method='jvp', Euler, T = 1000, QR)", "",
              "| N | tangent_chunk | nnx s/step | torch bridge s/step | bridge / nnx | load |",
              "| --- | --- | --- | --- | --- | --- |"]
    for n in ns:
        chunk = 25 if n > 25 else None
        row = []
        for fn in score_fns.values():
            if fn is None:
                row.append(None)
                continue

            def run(x, fn=fn, n=n):
                return mj.volume_growth(fn, sched, x, num_axes=n, num_steps=1000, stop_after=1,
                                        key=jax.random.key(1), check_stability=False,
                                        tangent_chunk=chunk).log_growth
            compiled = jax.jit(run).lower(x).compile()  # compile only: the timed calls are steps
            row.append(_time(compiled, x, repeats=1 if n >= 100 else repeats, warm_up=False))
        lines.append(f"| {n} | {chunk or '-'} | {_fmt(row[0], '.3f')} | {_fmt(row[1], '.3f')} | "
                     f"{_ratio(row)} | {_load():.1f} |")
        print(lines[-1], flush=True)
    lines.append("")


# -- 2. ease of reproduction -----------------------------------------------------------------------
def bench_ease(score_fns, sched, num_images, lines):
    """Warm-up run (compiles), then one timed run, per path; same images and key."""
    images = jax.random.uniform(jax.random.key(2), (num_images, 32, 32, 3), minval=-1, maxval=1)
    lines += [f"### 2. ease_of_reproduction (N = 1, one step of T = 1000, {num_images} images, batch 8)",
              "", "| path | images/s | s/image | load |", "| --- | --- | --- | --- |"]
    rates = []
    for name, fn in score_fns.items():
        if fn is None:
            lines.append(f"| {name} | n/a | n/a | {_load():.1f} |")
            rates.append(None)
            continue

        def run(imgs, fn=fn):
            return jnp.asarray(mj.ease_of_reproduction(fn, sched, imgs, num_axes=1, steps=1, batch_size=8,
                                                       key=jax.random.key(3), progress=False))
        dt = _time(run, images, repeats=1)
        rates.append(num_images / dt)
        label = "torch bridge" if name == "torch" else name
        lines.append(f"| {label} | {num_images / dt:.2f} | {dt / num_images:.3f} | {_load():.1f} |")
        print(lines[-1], flush=True)
    if None not in rates:
        lines += ["", f"bridge / nnx images/s: {rates[1] / rates[0]:.2f}x"]
    lines.append("")


def agreement(score_fns, lines):
    """Max relative difference of the two scores on one image (a sanity check of the setup)."""
    if None in score_fns.values():
        return
    x = jax.random.uniform(jax.random.key(5), (32, 32, 3), minval=-1, maxval=1)
    a, b = (np.asarray(jax.jit(fn)(x, 0.5), np.float64) for fn in score_fns.values())
    lines += [f"- bridge vs port on the same weights: score at t = 0.5, max |diff| / max |score| = "
              f"{np.abs(a - b).max() / np.abs(a).max():.1e}", ""]
    print(lines[-2], flush=True)


def _uptime() -> str:
    return " / ".join(f"{v:.1f}" for v in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 1, 10 only")
    parser.add_argument("--images", type=int, default=8, help="images for ease_of_reproduction")
    parser.add_argument("--repeats", type=int, default=2, help="timed steps at N < 100 (N = 100: one)")
    parser.add_argument("--device-note", default="no GPU lent to this run",
                        help="a line on the accelerator (recorded in the table)")
    parser.add_argument("--out", default=None, help="write the markdown table here (default: print)")
    args = parser.parse_args()
    pre, torch_model = build_subjects()
    score_fns = {"nnx": pre.score_fn, "torch": torch_bridge_score(torch_model, pre)}
    params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(nnx.state(pre.model)))
    lines = ["# memjax.interop benchmarks (diffusers DDPM CIFAR-10 U-Net): NNX port vs torch bridge", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
             f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, {jax.default_backend()} backend, "
             f"{jax.device_count()} device(s) ({jax.devices()[0].device_kind}); {args.device_note}; "
             f"torch {_torch_threads()} intra-op threads",
             f"- network: UNet2DModel, google/ddpm-cifar10-32 config, {params / 1e6:.2f}M parameters, random "
             f"weights; schedule DiscreteVP (DDPMScheduler defaults), eps-prediction, label N t - 1",
             "- paths: `nnx` = `load_pretrained(dir).score_fn` (Flax NNX port, jitted); `torch bridge` = "
             "`from_torch(module, pre.schedule, (32, 32, 3), label=pre.label_fn)` on the same weights",
             f"- load (uptime 1/5/15 min) at start: {_uptime()} (shared cores: absolute times are noisy; "
             "the ratios are timed back to back)", ""]
    agreement(score_fns, lines)
    bench_forward(pre, torch_model, 8, lines)
    bench_volume(score_fns, pre.schedule, (1, 10) if args.quick else (1, 10, 100), lines, args.repeats)
    bench_ease(score_fns, pre.schedule, args.images, lines)
    lines.append(f"- load (uptime 1/5/15 min) at end: {_uptime()}")
    if score_fns["torch"] is None:
        lines.append("torch columns: n/a -- torch / diffusers were not importable in this run (extra "
                     "`interop`); rerun this script where they are.")
    text = "\n".join(lines)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
