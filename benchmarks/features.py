"""Feature networks: images / s of memjax's JAX ports against the same PyTorch networks.

    python benchmarks/features.py [--networks sscd squeezenet dinov2 inception]
                                  [--n 16 --size 64 --batch 8 --repeats 3]

Each network is a randomly initialised PyTorch reference (SSCD's torchvision layout,
torchvision ``squeezenet1_1``, a ViT-S/14 ``Dinov2Model``, pytorch-fid's Inception-v3 with its
FID blocks), saved in its native format, converted / loaded by :func:`memjax.features.load`
(networks whose memjax module is absent are skipped). Both sides start from the same raw uint8
images ``[n, size, size, 3]`` and include their preprocessing (resize to the network's input
size, normalisation). Timings are interleaved in one process (memjax, torch, memjax, ...) with
the same thread count; the minimum over repeats is reported, compilation excluded (one warm-up
call). The maximum absolute difference of the features is printed as a sanity check. Prints
Markdown table rows.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import os
import platform
import tempfile
import time

import numpy as np


def _sscd(tmp):
    import torch
    import torchvision
    from torchvision.transforms import v2

    class GeM(torch.nn.Module):
        def forward(self, x):
            return x.flatten(2).clamp(min=1e-6).pow(3.0).mean(2).pow(1.0 / 3.0)

    class SSCD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torchvision.models.resnet50(num_classes=512)
            self.backbone.avgpool = GeM()

        def forward(self, x):
            return torch.nn.functional.normalize(self.backbone(x))

    model, path = SSCD().eval(), os.path.join(tmp, "sscd.pth")
    torch.save(model.state_dict(), path)
    return model, v2.Compose([v2.Resize(288, antialias=True), _normalize()]), path


def _squeezenet(tmp):
    import torch
    import torchvision
    from torchvision.transforms import v2

    model, path = torchvision.models.squeezenet1_1(weights=None).eval(), os.path.join(tmp, "sq.pth")
    torch.save(model.state_dict(), path)
    return model, v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224), _normalize()]), path


def _dinov2(tmp):
    from torchvision.transforms import v2
    from transformers import Dinov2Config, Dinov2Model
    from transformers.utils import logging

    logging.disable_progress_bar()
    model = Dinov2Model(Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                                     patch_size=14, image_size=518)).eval()
    model.save_pretrained(os.path.join(tmp, "dinov2"))
    transform = v2.Compose([v2.Resize(256, antialias=True, interpolation=v2.InterpolationMode.BICUBIC),
                            v2.CenterCrop(224), _normalize()])
    return (lambda x: model(pixel_values=x).pooler_output), transform, os.path.join(tmp, "dinov2")


def _inception(tmp):
    import torch
    from pytorch_fid import inception as fid

    net = torch.nn.Module.__new__(fid.InceptionV3)  # pytorch-fid's model without the download
    torch.nn.Module.__init__(net)
    net.resize_input, net.normalize_input, net.output_blocks, net.last_needed_block = True, True, [3], 3
    tv = _fid_inception_v3()
    net.blocks = torch.nn.ModuleList([
        torch.nn.Sequential(tv.Conv2d_1a_3x3, tv.Conv2d_2a_3x3, tv.Conv2d_2b_3x3,
                            torch.nn.MaxPool2d(3, 2)),
        torch.nn.Sequential(tv.Conv2d_3b_1x1, tv.Conv2d_4a_3x3, torch.nn.MaxPool2d(3, 2)),
        torch.nn.Sequential(tv.Mixed_5b, tv.Mixed_5c, tv.Mixed_5d, tv.Mixed_6a, tv.Mixed_6b,
                            tv.Mixed_6c, tv.Mixed_6d, tv.Mixed_6e),
        torch.nn.Sequential(tv.Mixed_7a, tv.Mixed_7b, tv.Mixed_7c,
                            torch.nn.AdaptiveAvgPool2d((1, 1)))])
    net.eval()
    path = os.path.join(tmp, "pt_inception.pth")
    torch.save(tv.state_dict(), path)
    return (lambda x: net(x)[0].flatten(1)), (lambda x: x), path


def _fid_inception_v3():
    """pytorch-fid's ``fid_inception_v3`` (its FID blocks) without loading the weights."""
    import torchvision
    from pytorch_fid import inception as fid

    tv = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None,
                                         init_weights=False)
    tv.Mixed_5b, tv.Mixed_5c = fid.FIDInceptionA(192, 32), fid.FIDInceptionA(256, 64)
    tv.Mixed_5d = fid.FIDInceptionA(288, 64)
    tv.Mixed_6b, tv.Mixed_6c = fid.FIDInceptionC(768, 128), fid.FIDInceptionC(768, 160)
    tv.Mixed_6d, tv.Mixed_6e = fid.FIDInceptionC(768, 160), fid.FIDInceptionC(768, 192)
    tv.Mixed_7b, tv.Mixed_7c = fid.FIDInceptionE_1(1280), fid.FIDInceptionE_2(2048)
    return tv.eval()


def _normalize():
    from torchvision.transforms import v2

    from memjax.features import preprocess

    return v2.Normalize(preprocess.IMAGENET_MEAN, preprocess.IMAGENET_STD)


REFERENCES = {"sscd": _sscd, "squeezenet": _squeezenet, "dinov2": _dinov2,
              "inception": _inception}


def _available(name: str) -> bool:
    return importlib.util.find_spec(f"memjax.features.{name}") is not None


def bench(name: str, images: np.ndarray, batch: int, repeats: int, tmp: str) -> str:
    import torch
    from torchvision.transforms import v2

    from memjax import features
    from memjax.features import convert

    model, transform, native = REFERENCES[name](tmp)
    spec = native
    if os.path.isfile(native):
        spec = os.path.join(tmp, f"{name}.safetensors")
        convert.convert(name, native, spec)
    ours = features.load(name, spec)
    to_float = v2.ToDtype(torch.float32, scale=True)

    def run_torch():
        outs = []
        with torch.no_grad():
            for s in range(0, len(images), batch):
                x = torch.from_numpy(images[s:s + batch]).permute(0, 3, 1, 2)
                outs.append(model(transform(to_float(x))).numpy())
        return np.concatenate(outs)

    def run_ours():
        return ours(images, batch_size=batch)

    err = float(np.abs(run_ours() - run_torch()).max())  # warm-up (compilation) and check
    best = {"memjax": np.inf, "torch": np.inf}
    for _ in range(repeats):
        for label, fn in (("memjax", run_ours), ("torch", run_torch)):
            t = time.perf_counter()
            fn()
            best[label] = min(best[label], time.perf_counter() - t)
    rate = {k: len(images) / v for k, v in best.items()}
    return (f"| {ours.name} | {images.shape[1]}x{images.shape[2]} -> net | {len(images)} | "
            f"{batch} | {rate['memjax']:.2f} | {rate['torch']:.2f} | "
            f"{rate['memjax'] / rate['torch']:.2f} | {err:.1e} | {os.getloadavg()[0]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", default=list(REFERENCES),
                        choices=list(REFERENCES))
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import jax
    import torch

    torch.manual_seed(0)
    threads = os.cpu_count()
    torch.set_num_threads(threads)
    dev = jax.devices()[0]
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC | "
          f"{platform.node()} | {threads} CPU cores (torch threads {torch.get_num_threads()}) | "
          f"{dev.platform}:{dev.device_kind} x{jax.device_count()} | jax {jax.__version__}, "
          f"torch {torch.__version__}")
    print("| network | images | n | batch | memjax img/s | torch img/s | ratio | max abs diff "
          "| load |")
    print("|---|---|---|---|---|---|---|---|---|")
    images = np.random.default_rng(0).integers(0, 256, (args.n, args.size, args.size, 3),
                                               dtype=np.uint8)
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.networks:
            if not _available(name):
                print(f"| {name} | (memjax.features.{name} not present: skipped) |")
                continue
            print(bench(name, images, args.batch, args.repeats, tmp), flush=True)


if __name__ == "__main__":
    main()
