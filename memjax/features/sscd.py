r"""SSCD copy-detection descriptors (Pizzi et al., CVPR 2022; paper 001's similarity).

The network is SSCD's torchvision layout: a ResNet-50 trunk (``disc_mixup``; ResNeXt-101
32x4d for ``disc_large``), GeM pooling with ``p = 3``, a linear projection ``fc`` (2048 -> 512,
or 1024 for ``disc_large``) and L2 normalisation, so the inner product of two descriptors is
their cosine similarity, the quantity paper 001's bands ([0.4, 0.5), [0.5, 0.6), [0.6, 1])
threshold (declared for the ``"sscd-*"`` feature spaces only: :func:`memjax.features.bands_for`).

Preprocessing (the SSCD README's ``small_288``, which the authors recommend for inference):
resize the shorter side to 288 (antialiased bilinear, aspect kept), no crop, ImageNet
mean / std. ``square=True`` gives the README's alternative ``skew_320`` (resize to 320 x 320).
Images smaller than 288 px are upscaled, as the README's transform does.

Weights: a ``.safetensors`` state dict with torchvision names (``conv1.weight``,
``layer1.0.conv1.weight``, ..., ``fc.weight``). Convert the published files once with::

    python -m memjax.features.convert sscd sscd_disc_mixup.torchscript.pt sscd_disc_mixup.safetensors

which reads the TorchScript, ``.torchvision.pt`` or ``.classy.pt`` files (torch needed only
there).
"""

from __future__ import annotations

import re

import jax.numpy as jnp
from flax import nnx

from memjax.features import preprocess, weights
from memjax.features.base import FeatureExtractor, check_precision, from_nnx
from memjax.features.resnet import ResNet

__all__ = ["ARCHS", "build", "convert_keys", "load"]

# arch -> (blocks per stage, groups, width per group, descriptor dimension)
ARCHS = {
    "resnet50": ((3, 4, 6, 3), 1, 64, 512),
    "resnext101": ((3, 4, 23, 3), 32, 4, 1024),
}
GEM_P = 3.0


def build(arch: str = "resnet50", *, rngs: nnx.Rngs | None = None) -> ResNet:
    """The SSCD network (ResNet trunk, GeM p = 3, ``fc``) for ``arch`` in :data:`ARCHS`."""
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {sorted(ARCHS)}, got {arch!r}")
    layers, groups, width, dim = ARCHS[arch]
    return ResNet(layers, num_outputs=dim, groups=groups, width_per_group=width, gem_p=GEM_P,
                  rngs=rngs or nnx.Rngs(0))


def _detect_arch(tensors: dict) -> str:
    return "resnext101" if "layer3.6.conv1.weight" in tensors else "resnet50"


def load(path, *, arch: str | None = None, size: int = 288, square: bool = False,
         batch_size: int = 32, precision: str = "highest") -> FeatureExtractor:
    """SSCD descriptors from a converted ``.safetensors`` file (module docstring).

    Args:
      path: the weights.
      arch: ``"resnet50"`` (``disc_mixup``) or ``"resnext101"`` (``disc_large``); default:
        read from the file.
      size: shorter-side resize (288), or the square side with ``square=True`` (use 320).
      square: resize to ``size x size`` ignoring the aspect ratio (README's ``skew_320``).
      batch_size: default images per step.
      precision: matmul / convolution precision (:func:`memjax.features.base.from_nnx`).

    Raises:
      ValueError: unknown ``arch`` or ``precision``, missing or unreadable file, or weights that do not fit.
    """
    check_precision(precision)
    if arch is not None and arch not in ARCHS:
        raise ValueError(f"arch: expected one of {sorted(ARCHS)}, got {arch!r}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a positive int, got {size!r}")
    tensors = weights.read_safetensors(path)
    arch = _detect_arch(tensors) if arch is None else arch
    model = weights.load_into(build, path, args=(arch,), what=f"sscd {arch}", tensors=tensors,
                              ignore=weights.BN_COUNTERS)

    def fn(net: ResNet, x):
        x = preprocess.resize(x, size, size) if square else preprocess.resize_shorter(x, size)
        z = net(preprocess.normalize(x))
        return z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)

    return from_nnx(f"sscd-{arch}", model, fn, dim=ARCHS[arch][3], normalized=True,
                    batch_size=batch_size, precision=precision)


_CLASSY_CONV = {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3"}
_CLASSY = (  # classy-vision ResNeXt names (after dropping "_module.") -> torchvision names
    (re.compile(r"^initial_block\.0\.(.*)$"), lambda m: f"conv1.{m[1]}"),
    (re.compile(r"^initial_block\.1\.(.*)$"), lambda m: f"bn1.{m[1]}"),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.convolutional_block\.(\d)\.(.*)$"),
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.{_CLASSY_CONV.get(m[3], 'unknown' + m[3])}.{m[4]}"),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.bn\.(.*)$"),
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.bn3.{m[3]}"),
    (re.compile(r"^blocks\.(\d+)\.(\d+)\.downsample\.(.*)$"),
     lambda m: f"layer{int(m[1]) + 1}.{m[2]}.downsample.{m[3]}"),
)


def convert_keys(state: dict) -> dict:
    """Published SSCD state dicts -> the torchvision names :func:`load` reads.

    Handles SSCD's torchvision layout (``backbone.conv1.weight`` .. ``backbone.fc.weight``,
    GeM in ``backbone.avgpool``) and its classy-vision layout (TorchScript and ``.classy.pt``
    files: ``backbone.initial_block._module.0.weight``, ``backbone.blocks.0.0._module.
    convolutional_block.0.weight``, ..., projection ``embeddings.1``); BatchNorm counters are
    dropped. Unknown keys pass through (the loader then names them).
    """
    out = {}
    for key, value in state.items():
        if key.endswith("num_batches_tracked"):
            continue
        k = key.removeprefix("module.").removeprefix("model.").removeprefix("backbone.")
        k = k.replace("._module.", ".").replace("embeddings.1.", "fc.")
        for pattern, repl in _CLASSY:
            m = pattern.match(k)
            if m:
                k = repl(m)
                break
        out[k] = value
    return out
