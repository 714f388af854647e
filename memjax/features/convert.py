"""One-off conversion of published PyTorch weights to the safetensors files memjax loads.

::

    python -m memjax.features.convert NAME IN OUT.safetensors

``NAME`` is a feature network of :mod:`memjax.features`:

* ``sscd``: SSCD's TorchScript, ``.torchvision.pt`` or ``.classy.pt`` files;
* ``squeezenet``: torchvision's ``squeezenet1_1-b8a52dc0.pth``;
* ``dinov2``: the facebookresearch / torch hub ``dinov2_vit*14_pretrain.pth`` (renamed to the
  ``transformers`` layout). A Hugging Face ``Dinov2Model`` directory (``config.json`` +
  ``model.safetensors``) needs no conversion: pass the directory to ``load`` directly;
* ``inception``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``.

``IN`` is a TorchScript file (``torch.jit.load(IN).state_dict()``) or a pickled state dict /
module (``.pt`` / ``.pth``; a ``{"state_dict": ...}`` or ``{"model": ...}`` wrapper is
unwrapped). This is the only place memjax needs torch. The network's module may define
``convert_keys(state: dict) -> dict`` to rename keys to its layout (tensors keep PyTorch's
shapes). The output is then checked by loading it with the network's own loader (names and
shapes against its configuration), so a file for another architecture fails here, naming the
mismatches.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings

import numpy as np

__all__ = ["read_torch", "convert", "main"]


def read_torch(path) -> dict[str, np.ndarray]:
    """The state dict of a TorchScript file or a pickled state dict / module, as NumPy."""
    import torch

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"IN: no such file {path!r}")
    with warnings.catch_warnings():  # torch >= 2.9 flags TorchScript as deprecated
        warnings.simplefilter("ignore", FutureWarning)
        try:
            obj = torch.jit.load(path, map_location="cpu")
        except RuntimeError:  # not TorchScript: a pickled state dict or module
            obj = torch.load(path, map_location="cpu", weights_only=False)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if hasattr(obj, "state_dict"):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ValueError(f"IN: {path!r} holds neither a module nor a state dict "
                         f"({type(obj).__name__})")
    return {k: v.detach().cpu().numpy() for k, v in obj.items() if hasattr(v, "detach")}


def convert(name: str, src, dst) -> dict[str, np.ndarray]:
    """Converts ``src`` for network ``name`` to the safetensors file ``dst`` and checks it."""
    from safetensors.numpy import save_file

    from memjax import features

    if name not in features._LOADERS:
        raise ValueError(f"NAME: expected one of {sorted(features._LOADERS)}, got {name!r}")
    module = importlib.import_module(features._LOADERS[name].split(":")[0])
    state = read_torch(src)
    state = getattr(module, "convert_keys", lambda s: s)(state)
    state = {k: np.ascontiguousarray(v, np.float32 if v.dtype.kind == "f" else v.dtype)
             for k, v in state.items()}
    save_file(state, os.fspath(dst))
    features.load(name, dst)  # shapes against the network's config; raises ValueError
    return state


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[0] + "\nusage: python -m memjax.features.convert "
              "NAME IN OUT.safetensors", file=sys.stderr)
        return 2
    state = convert(*argv)
    print(f"{argv[2]}: {len(state)} tensors for {argv[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
