"""Bridges in: diffusers UNet2DModel -> Flax NNX (safetensors, no torch), any torch module -> score_fn."""
