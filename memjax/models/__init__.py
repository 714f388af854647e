"""Flax NNX networks: the score U-Net (optionally class-conditional) and ResNet classifiers."""

from memjax.models import config, layers
from memjax.models.config import (objective_config, unet_config, validate_model_config,
                                  validate_objective_config)
from memjax.models.resnet import ResNet, resnet18, resnet34
from memjax.models.unet import UNet, create_unet

__all__ = ["ResNet", "UNet", "config", "create_unet", "layers", "objective_config", "resnet18",
           "resnet34", "unet_config", "validate_model_config", "validate_objective_config"]
