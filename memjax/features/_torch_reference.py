"""The PyTorch references of the feature networks, for the interop tests and the benchmarks
(needs torch, torchvision, transformers, pytorch-fid: the ``interop`` extra). Randomly
initialised reference models (:func:`sscd_model`, :func:`random_inception_state`) and
``*_reference(...)`` functions ``f(uint8 images [n, H, W, 3]) -> features [n, d]`` (NumPy)
computed entirely by the reference code, preprocessing included; nothing is downloaded.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def _nchw_unit(images: np.ndarray, device: str):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float() / 255.0


def randomize_batchnorm(model, gen):
    """Non-trivial affine parameters and running statistics in every BatchNorm (eval mode)."""
    import torch

    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=gen)
            m.bias.data = 0.1 * torch.randn(c, generator=gen)
            m.running_mean.data = 0.1 * torch.randn(c, generator=gen)
            m.running_var.data = 0.5 + torch.rand(c, generator=gen)
    return model.eval()


def sscd_model(layers=(3, 4, 6, 3), groups: int = 1, width_per_group: int = 64, dim: int = 512,
               seed: int = 0):
    """SSCD's torchvision layout, randomly initialised: ``backbone`` a torchvision ResNet
    (ResNet-50 by default) with GeM (p = 3) as ``avgpool`` and ``fc`` to ``dim``, then L2."""
    import torch
    import torchvision

    class GeM(torch.nn.Module):  # SSCD's GlobalGeMPool2d
        def forward(self, x):
            return x.flatten(2).clamp(min=1e-6).pow(3.0).mean(dim=2).pow(1.0 / 3.0)

    class SSCD(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = torchvision.models.ResNet(
                torchvision.models.resnet.Bottleneck, list(layers), groups=groups,
                width_per_group=width_per_group, num_classes=dim)
            self.backbone.avgpool = GeM()

        def forward(self, x):
            return torch.nn.functional.normalize(self.backbone(x))

    torch.manual_seed(seed)
    return randomize_batchnorm(SSCD(), torch.Generator().manual_seed(seed))


def torchvision_reference(model, transform, device: str = "cpu"
                          ) -> Callable[[np.ndarray], np.ndarray]:
    """``model(transform(ToDtype(float32, scale=True)(images)))``: torchvision's tensor
    transforms on the raw images (SSCD, SqueezeNet)."""
    import torch

    model = model.eval().to(device)

    def features(images):
        with torch.no_grad():
            return model(transform(_nchw_unit(images, device))).cpu().numpy()
    return features


def random_inception_state(seed: int = 0) -> dict:
    """A random pt_inception-style state dict built by pytorch-fid's own ``fid_inception_v3()``
    (its weight download replaced; BN statistics and affine terms drawn at random)."""
    import torch
    from pytorch_fid import inception as fid_inception

    torch.manual_seed(seed)
    saved = fid_inception.load_state_dict_from_url
    inception3 = fid_inception.torchvision.models.Inception3
    fid_inception.load_state_dict_from_url = lambda *a, **k: None
    inception3.load_state_dict = lambda self, state_dict, *a, **k: None
    try:
        net = fid_inception.fid_inception_v3()
    finally:
        fid_inception.load_state_dict_from_url = saved
        del inception3.load_state_dict
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0.0, 0.2)
                m.running_mean.normal_(0.0, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return {k: v.contiguous() for k, v in net.state_dict().items()}


def pytorch_fid_model(state: dict, device: str = "cpu"):
    """``pytorch_fid.inception.InceptionV3([3], use_fid_inception=True)`` with ``state`` as the
    published weights (its ``load_state_dict_from_url`` returns ``state``)."""
    from pytorch_fid import inception as fid_inception

    saved = fid_inception.load_state_dict_from_url
    fid_inception.load_state_dict_from_url = lambda *a, **k: state
    try:
        return fid_inception.InceptionV3([3], use_fid_inception=True).eval().to(device)
    finally:
        fid_inception.load_state_dict_from_url = saved


def inception_reference(path: str, device: str = "cpu") -> Callable[[np.ndarray], np.ndarray]:
    """pytorch-fid's pool3 features with the weights of a safetensors file."""
    import torch
    from safetensors.torch import load_file

    model = pytorch_fid_model(load_file(str(path)), device)

    def features(images):
        with torch.no_grad():
            return model(_nchw_unit(images, device))[0][:, :, 0, 0].cpu().numpy()
    return features


def dinov2_reference(path: str, device: str = "cpu", resize: int = 256, crop: int = 224
                     ) -> Callable[[np.ndarray], np.ndarray]:
    """HF ``Dinov2Model.from_pretrained(path)`` ``pooler_output`` after ``BitImageProcessor``
    (facebook/dinov2 settings) applied to the float images in ``[0, 1]``."""
    import torch
    from transformers import BitImageProcessor, Dinov2Model

    model = Dinov2Model.from_pretrained(str(path)).eval().to(device)
    proc = BitImageProcessor(size={"shortest_edge": resize}, resample=3,
                             crop_size={"height": crop, "width": crop}, **IMAGENET)

    def features(images):
        x = _nchw_unit(images, device)
        pixels = proc(images=list(x), do_rescale=False, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            return model(pixel_values=pixels.to(device)).pooler_output.cpu().numpy()
    return features


def images_per_second(fns: dict[str, Callable[[np.ndarray], np.ndarray]], images: np.ndarray,
                      repeats: int = 3, warmup: bool = True) -> dict[str, float]:
    """Images per second of each ``fn(images)``, after one warm-up call each (unless the caller
    made it), the calls interleaved (``a b a b ...``) so that load on the machine hits all
    alike; best of ``repeats``."""
    for fn in fns.values() if warmup else ():
        np.asarray(fn(images))
    best = {name: float("inf") for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            np.asarray(fn(images))
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: len(images) / s for name, s in best.items()}
