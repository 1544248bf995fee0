from .configuration_mkt import MKTConfig
from .modeling_mkt import MKTModel

__all__ = ["MKTConfig", "MKTModel"]
