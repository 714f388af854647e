"""Auditing YOUR model and data: the digits audit with the data and model swapped by config.

    memjax-audit --config=configs/audit_custom_example.py --workdir=/tmp/my_audit
    memjax-audit --config=configs/audit_custom_example.py:npz --workdir=/tmp/my_audit
    memjax-audit --config=configs/audit_custom_example.py:folder --workdir=/tmp/my_audit \
        --config.train.data.path=/data/my_images

The argument after ``:`` picks the data source (default ``tfds``):

  tfds    a TFDS dataset by name (``train.data.name``, e.g. "cifar10", "mnist", "celeb_a"),
          read with ``tfds.data_source``, which reads only ArrayRecord: prepare it once with
          ``tfds build cifar10 --file_format=array_record`` (the build needs TensorFlow once;
          the default TFRecord output cannot be read) or set ``train.data.download = True``:
          memjax never downloads on its own.
  npz     a NumPy archive (``train.data.path``) holding an ``image`` array [n, H, W, C]
          (uint8 0..255 or floats) and optionally ``label`` (``train.data.image_key`` /
          ``label_key`` rename them).
  folder  a directory of image files (png, jpg, ...), read in sorted order; center-cropped
          and resized to ``train.data.image_size``.

The model, three ways (``model.*``, see configs/digits_audit.py):

  1. nothing set: the audit trains ``train`` (a memjax training config) on the split
     ``train.data`` describes and audits it;
  2. ``model.workdir``: a workdir written by ``memjax-train`` (its saved data_split.npz says
     exactly which images were trained on and which were held out);
  3. ``model.checkpoint``: an orbax checkpoint directory of a memjax train state (e.g. a copy
     of ``<train workdir>/checkpoints``), with ``model.step`` (0: latest). The architecture is
     ``train.model`` and the split ``train.data``: set ``num_train``, ``num_heldout`` and
     ``seed`` to the values the model was trained with, or the "held-out" images may have
     been trained on.

The trained / held-out split must be known: the audit compares the two. For 32x32 RGB images
the full volume is D = 3072 axes, so the settings below stop at N = 64 and 10 steps for the
network (~66 x 10 forward passes per image); raise them on an accelerator.
"""

from memjax.scripts.common import load_config


def get_config(source: str = "tfds"):
    c = load_config("digits_audit", next_to=__file__)
    d = c.train.data
    if source == "tfds":
        d.source, d.name, d.split = "tfds", "cifar10", "train"
        d.image_size = 32
        c.train.model.image_size, c.train.model.channels = 32, 3
    elif source == "npz":
        d.source, d.path, d.image_key, d.label_key = "npz", "/path/to/images.npz", "image", ""
        d.image_size = 32
        c.train.model.image_size, c.train.model.channels = 32, 3
    elif source == "folder":
        d.source, d.path, d.label_key = "folder", "/path/to/image_folder", ""
        d.channels, d.center_crop, d.image_size = 3, 0, 32
        c.train.model.image_size, c.train.model.channels = 32, 3
    else:
        raise ValueError(f"config argument: expected 'tfds', 'npz' or 'folder', got {source!r}")
    d.num_train = 64          # paper 000: 2^6 images + flips trained, as many held out
    d.num_heldout = -1
    d.flip = True
    d.seed = 0
    c.train.model.channel_mults = (1, 2, 2)
    c.train.model.attn_resolutions = (16,)

    # Restore instead of training (pick one):
    c.model.workdir = ""      # e.g. "/path/to/memjax-train/workdir"
    c.model.checkpoint = ""   # e.g. "/path/to/workdir/checkpoints" (architecture: train.model)
    c.model.step = 0

    c.ease.network.settings = ((1, 1), (1, 10), (8, 1), (64, 1), (64, 10))
    c.ease.network.batch_size = 8
    c.ease.exact.settings = ((1, 1), (64, 10), (64, 100))
    c.ease.exact.batch_size = 16
    c.diverse.features = "pixels"
    return c
