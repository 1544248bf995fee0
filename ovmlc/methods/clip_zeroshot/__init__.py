from .configuration_clip_zeroshot import CLIPZeroShotConfig
from .modeling_clip_zeroshot import CLIPZeroShotModel

__all__ = ["CLIPZeroShotConfig", "CLIPZeroShotModel"]
