from .configuration_linear_probe import LinearProbeConfig
from .modeling_linear_probe import LinearProbeModel

__all__ = ["LinearProbeConfig", "LinearProbeModel"]
