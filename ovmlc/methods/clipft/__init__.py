from .configuration_clipft import CLIPFTConfig
from .modeling_clipft import CLIPFTModel

__all__ = ["CLIPFTConfig", "CLIPFTModel"]
