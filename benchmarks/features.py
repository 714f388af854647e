"""Feature networks: images / s of memjax's JAX ports against the same PyTorch networks.

    python benchmarks/features.py [--networks sscd squeezenet dinov2 inception]
                                  [--n 8 --size 64 --batch 4 --repeats 2]

Each network is a randomly initialised PyTorch reference, built offline by
:mod:`memjax.features._torch_reference` (SSCD's torchvision layout with random BatchNorm
statistics, torchvision ``squeezenet1_1``, a ViT-S/14 ``Dinov2Model``, pytorch-fid's
Inception-v3 with its FID blocks and random BatchNorm statistics), saved in its native format
(``.pth``, or ``save_pretrained`` for DINOv2), converted with :mod:`memjax.features.convert` where
needed and loaded by :func:`memjax.features.load`. Both sides start from the same raw uint8
images ``[n, size, size, 3]`` and include their preprocessing:

* SSCD: torchvision ``Resize(288)`` (antialiased bilinear), ImageNet ``Normalize``;
* SqueezeNet: ``Resize(256)``, ``CenterCrop(224)``, ``Normalize``;
* DINOv2: ``Resize(256, BICUBIC)``, ``CenterCrop(224)``, ``Normalize``, then the HF model's
  ``pooler_output``; memjax with ``normalized=False`` (the raw CLS features);
* Inception: pytorch-fid's ``InceptionV3([3])`` (its own bilinear resize to 299, ``2x - 1``).

Timings are interleaved in one process (memjax, torch, memjax, ...; best of ``repeats``, after
one warm-up call each that also compiles and gives the "max abs diff" of the features), torch
with ``os.cpu_count()`` threads. Prints Markdown table rows.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import tempfile

import numpy as np


def _normalize():
    from torchvision.transforms import v2

    from memjax.features import preprocess

    return v2.Normalize(preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)


def _sscd(tmp):
    import torch
    from torchvision.transforms import v2

    from memjax.features import _torch_reference

    model, path = _torch_reference.sscd_model(seed=0), os.path.join(tmp, "sscd.pth")
    torch.save(model.state_dict(), path)
    transform = v2.Compose([v2.Resize(288, antialias=True), _normalize()])
    return _torch_reference.torchvision_reference(model, transform), path, {}


def _squeezenet(tmp):
    import torch
    import torchvision
    from torchvision.transforms import v2

    from memjax.features import _torch_reference

    model, path = torchvision.models.squeezenet1_1(weights=None), os.path.join(tmp, "sq.pth")
    torch.save(model.state_dict(), path)
    transform = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), _normalize()])
    return _torch_reference.torchvision_reference(model, transform), path, {}


def _dinov2(tmp):
    import torch
    from torchvision.transforms import v2
    from transformers import Dinov2Config, Dinov2Model
    from transformers.utils import logging

    from memjax.features import _torch_reference

    logging.disable_progress_bar()
    model = Dinov2Model(Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                     patch_size=14, image_size=518)).eval()
    path = os.path.join(tmp, "dinov2")
    model.save_pretrained(path)
    transform = v2.Compose([v2.Resize(256, antialias=True, interpolation=v2.InterpolationMode.BICUBIC),
                            v2.CenterCrop(224), _normalize()])

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(pixel_values=x).pooler_output

    return (_torch_reference.torchvision_reference(Pooled(), transform), path,
            {"normalized": False})


def _inception(tmp):
    import torch

    from memjax.features import _torch_reference, convert

    path = os.path.join(tmp, "pt_inception.pth")
    torch.save(_torch_reference.random_inception_state(0), path)
    converted = os.path.join(tmp, "inception.safetensors")
    convert.convert("inception", path, converted)
    return _torch_reference.inception_reference(converted), converted, {}


REFERENCES = {"sscd": _sscd, "squeezenet": _squeezenet, "dinov2": _dinov2,
              "inception": _inception}


def _in_batches(fn, batch: int):
    return lambda x: np.concatenate([fn(x[s:s + batch]) for s in range(0, len(x), batch)])


def bench(name: str, images: np.ndarray, batch: int, repeats: int, tmp: str) -> str:
    from memjax import features
    from memjax.features import _torch_reference, convert

    reference, native, options = REFERENCES[name](tmp)
    spec = native
    if native.endswith(".pth"):  # a torch-native file: the one-off conversion
        spec = os.path.join(tmp, f"{name}.safetensors")
        convert.convert(name, native, spec)
    ours = features.load(name, spec, **options)
    fns = {"memjax": lambda x: ours(x, batch_size=batch), "torch": _in_batches(reference, batch)}
    err = float(np.abs(fns["memjax"](images) - fns["torch"](images)).max())  # also the warm-up
    rate = _torch_reference.images_per_second(fns, images, repeats=repeats, warmup=False)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"| {ours.name} | {rate['memjax']:.2f} | {rate['torch']:.2f} | "
            f"{rate['memjax'] / rate['torch']:.2f} | {err:.1e} | {images.shape[1]}x"
            f"{images.shape[2]} | {len(images)} | {batch} | {load} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=list(REFERENCES),
                        choices=list(REFERENCES))
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    import jax
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count())
    dev = jax.devices()[0]
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | "
          f"{platform.node()} | {os.cpu_count()} CPU cores (torch threads "
          f"{torch.get_num_threads()}) | {dev.platform}:{dev.device_kind} x{jax.device_count()} | "
          f"jax {jax.__version__}, torch {torch.__version__}")
    print("| feature space | memjax img/s | torch img/s | ratio | max abs diff | images | n "
          "| batch | load (1, 5, 15 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    images = np.random.default_rng(0).integers(0, 256, (args.n, args.size, args.size, 3),
                                               dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            print(bench(name, images, args.batch, args.repeats, tmp), flush=True)


if __name__ == "__main__":
    main()
