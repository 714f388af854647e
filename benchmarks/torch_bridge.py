"""Cost of the host round trip of memjax.interop.torch (a torch network as a memjax score_fn).

Run:  python benchmarks/torch_bridge.py [--quick] [--out benchmarks/results/torch_bridge.md]

For (0) ``x (1 + c / 1000)`` (no compute: the round trip alone), (a) a small conv net (conv 3x3
-> GroupNorm -> SiLU -> conv 3x3, 32 hidden channels) and (b) a diffusers ``UNet2DModel``
(random weights, attention at 16x16, 4.4M parameters) on 32x32x3 images:

1. one score call ``score_fn(x, t)`` (jitted) against ``module(x, label)`` called directly in
   torch (``no_grad``, input already a torch tensor);
2. ``jax.vmap(jax.jvp)`` of the score over N = 1, 10, 100 tangents (jitted; what
   ``volume_growth(method="jvp")`` does per step) against ``torch.func.vmap(torch.func.jvp)``
   over the same tangents called directly;
3. host round trips per volume-growth step (a forward hook counts the module's calls), with and
   without ``tangent_chunk``.

Timings are interleaved (bridge, direct, bridge, direct, ...) in one process, after a warm-up
(compilation excluded); the minimum over rounds is reported, so the ratio is robust to the
load of a shared machine. The overhead is bridge / direct. torch runs with one intra-op thread
by default (``--threads``), which keeps a loaded 2-core machine from oversubscribing.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

import memjax as mj
from memjax.interop import torch as mt

SDE = mj.VPSDE()
SHAPE = (32, 32, 3)


class Scale(torch.nn.Module):
    """``x (1 + c / 1000)``: almost no compute, so bridge - direct is the round trip itself."""

    def forward(self, x, c):
        return x * (1 + c / 1000)[:, None, None, None]


class SmallNet(torch.nn.Module):
    def __init__(self, hidden=32):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, hidden, 3, padding=1)
        self.norm = torch.nn.GroupNorm(8, hidden)
        self.conv2 = torch.nn.Conv2d(hidden, 3, 3, padding=1)

    def forward(self, x, c):
        h = self.norm(self.conv1(x)) + torch.sin(c / 1000)[:, None, None, None]
        return self.conv2(torch.nn.functional.silu(h))


def unet():
    import diffusers

    torch.manual_seed(0)
    return diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(64, 128, 128), norm_num_groups=32, attention_head_dim=32,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D")).eval()


def _time(fns, budget_s):
    """Interleaved timing: the minimum wall time of each function over rounds (3 to 50, about
    ``budget_s`` seconds in all, after two warm-up rounds)."""
    for f in fns:  # compiles
        f()
    t0 = time.perf_counter()
    for f in fns:
        f()
    rounds = int(min(50, max(3, budget_s / max(time.perf_counter() - t0, 1e-6))))
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for i, f in enumerate(fns):
            t1 = time.perf_counter()
            f()
            best[i] = min(best[i], time.perf_counter() - t1)
    return best, rounds


def _direct(module):
    """The torch calls a user would make directly: forward, and vmap-of-jvp over tangents."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def forward(x, c):
        with torch.no_grad():
            return mt._as_tensor(module(x, c))

    def jvp(x, c, v):
        f = lambda z: mt._as_tensor(module(z, c))
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            if v.shape[0] == 1:
                return torch.func.jvp(f, (x,), (v[0],))
            return torch.func.vmap(lambda u: torch.func.jvp(f, (x,), (u,)), out_dims=(None, 0))(v)

    return forward, jvp


def bench_model(name, module, counts, budget_s):
    rows = []
    score = mt.from_torch(module, SDE, SHAPE)
    forward, jvp = _direct(module)
    key = jax.random.key(0)
    x = jax.random.uniform(key, SHAPE, jnp.float32, -1, 1)
    t = jnp.float32(0.5)
    xt = torch.tensor(np.asarray(x)).permute(2, 0, 1)[None].contiguous()  # NCHW, as users hold it
    ct = torch.full((1,), 999 * 0.5)
    call = jax.jit(score)
    (b, d), r = _time([lambda: call(x, t).block_until_ready(), lambda: forward(xt, ct)], budget_s)
    rows.append(f"| {name} | call | - | {b * 1e3:.2f} | {d * 1e3:.2f} | {b / d:.2f}x | {r} |")
    print(rows[-1], flush=True)
    for n in counts:
        v = jax.random.normal(jax.random.fold_in(key, n), (n,) + SHAPE)
        vt = torch.tensor(np.asarray(v)).permute(0, 3, 1, 2)[:, None].contiguous()
        tangents = jax.jit(jax.vmap(lambda u: jax.jvp(lambda z: score(z, t), (x,), (u,)),
                                    out_axes=(None, 0)))
        (b, d), r = _time([lambda: jax.block_until_ready(tangents(v)), lambda: jvp(xt, ct, vt)],
                          budget_s)
        rows.append(f"| {name} | jvp | {n} | {b * 1e3:.2f} | {d * 1e3:.2f} | {b / d:.2f}x | {r} |")
        print(rows[-1], flush=True)
    return rows


def round_trips(module, num_axes, chunk):
    calls = []
    hook = module.register_forward_hook(lambda *_: calls.append(1))
    score = mt.from_torch(module, SDE, SHAPE)  # its probe call is made before counting starts
    calls.clear()
    x = jax.random.uniform(jax.random.key(1), SHAPE, jnp.float32, -1, 1)
    steps = 3
    mj.volume_growth(score, SDE, x, num_axes=num_axes, num_steps=steps, tangent_chunk=chunk,
                     key=jax.random.key(2))
    hook.remove()
    return (f"| {num_axes} | {chunk or '-'} | {len(calls) / steps:g} |")


def _params(module):
    return sum(p.numel() for p in module.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small run (N = 1, 10; short budgets)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    ap.add_argument("--out", default=None, help="write the Markdown here (default: print)")
    args = ap.parse_args()
    counts = (1, 10) if args.quick else (1, 10, 100)
    budget = 5.0 if args.quick else 30.0
    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    small, big = SmallNet(), unet()
    lines = [
        "# memjax.interop.torch benchmarks (host round trip)", "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores, jax backend "
        f"{jax.default_backend()}, torch device cpu, torch threads {torch.get_num_threads()}",
        f"- versions: python {platform.python_version()}, jax {jax.__version__}, torch "
        f"{torch.__version__}",
        f"- load (uptime 1/5/15 min) at start: {load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}",
        f"- models: small conv net {_params(small) / 1e3:.1f}k parameters; diffusers UNet2DModel "
        f"(64/128/128 channels, attention at 16x16) {_params(big) / 1e6:.2f}M parameters; 32x32x3",
        "", "### 1. Time per call, bridged (jitted JAX) vs the same torch call made directly", "",
        "Minimum over interleaved repeats, milliseconds. `jvp` rows: `jax.vmap(jax.jvp)` over N "
        "tangents (one host call) vs `torch.func.vmap(torch.func.jvp)` over N tangents.", "",
        "| model | what | N | bridge ms | direct torch ms | overhead (bridge / direct) | rounds |",
        "| --- | --- | --- | --- | --- | --- | --- |"]
    print("\n".join(lines), flush=True)
    lines += bench_model("scale x (round trip only)", Scale(), counts, budget)
    lines += bench_model("small conv net", small, counts, budget)
    lines += bench_model("UNet2DModel", big, counts, budget)
    lines += ["", "### 2. Host round trips per volume-growth step (Euler, method=\"jvp\", "
              "stiffness tangent on)", "",
              "| N | tangent_chunk | torch calls per step |", "| --- | --- | --- |"]
    for n, chunk in ((1, None), (10, None), (10, 4)):
        lines.append(round_trips(small, n, chunk))
    load1 = os.getloadavg()
    lines += ["", f"- load (uptime 1/5/15 min) at end: {load1[0]:.1f} / {load1[1]:.1f} / "
              f"{load1[2]:.1f}"]
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
