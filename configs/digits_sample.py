"""Samples of the overfit digits U-Net (configs/digits_overfit.py), on 2 CPU cores.

    python -m memjax.scripts.sample --config=configs/digits_sample.py --workdir=/tmp/samples
    python -m memjax.scripts.sample --config=configs/digits_sample.py \
        --config.target_workdir=/tmp/train_digits --workdir=/tmp/samples
    python -m memjax.scripts.sample --config=configs/digits_sample.py:tiny --workdir=/tmp/s

Fields:
  target_workdir: a training workdir (``memjax.scripts.train``); empty: train ``target``
    (the digits_overfit config) under ``workdir/target`` first.
  target_step: checkpoint step (0: the latest).
  model.source: instead, any model source ("diffusers:PATH", "package.module:function",
    memjax.jobs.sources.load_model_source); a non-memjax model needs a ``data`` section
    (memjax.data.data_config) in the config: its training images, for the nearest-neighbour
    statistics.
  seed: chunk ``c`` draws from ``fold_in(key(seed), c)``; each sample's noise from its index.
  num_samples, chunk_size: how many samples, and how many per resumable chunk file.
  sampler: "ddim" (eta: stochasticity), "sde" (Euler-Maruyama, paper 000 eq. 2), "dpm++2m"
    (DPM-Solver++(2M)) or "ode" (probability flow; num_steps None = adaptive Tsit5).
    num_steps: the grid.
  denoise: the last step adds no noise.
  batch_size: samples per device-sharded batch.
  label, guidance_scale: for class-conditional models (configs/conditional_digits.py), the
    class and the classifier-free guidance lambda; label -1 samples unconditionally.
  progress: tqdm bars.
"""

import ml_collections


def get_config(variant: str = ""):
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location(
        "digits_side_config", os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits_side.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tiny = variant == "tiny"
    c = ml_collections.ConfigDict()
    c.target_workdir = ""
    c.target_step = 0
    c.model = ml_collections.ConfigDict(dict(source=""))
    c.target = module._train_config(tiny)
    c.seed = 0
    c.num_samples = 8 if tiny else 512
    c.chunk_size = 4 if tiny else 128
    c.sampler = "ddim"
    c.num_steps = 5 if tiny else 100
    c.eta = 0.0
    c.denoise = True
    c.batch_size = 128
    c.label = -1
    c.guidance_scale = 1.0
    c.progress = not tiny
    return c
