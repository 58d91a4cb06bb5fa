"""DRAEM's anomaly simulator: Perlin masks filled with augmented textures, batched in torch.

Turns uint8 normal images into (augmented image, mask, clean target) batches for training
(:class:`~.simulator.AnomalySynthesizer`) and lends its parts to the validation set's families."""

from .config import AUGMENTATIONS, SynthesisConfig
from .simulator import AnomalySynthesizer, SynthBatch, load_textures, make_generator
from .textures import TextureBank

__all__ = ["AUGMENTATIONS", "AnomalySynthesizer", "SynthBatch", "SynthesisConfig", "TextureBank", "load_textures",
           "make_generator"]
