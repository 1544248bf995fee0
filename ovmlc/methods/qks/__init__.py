from .configuration_qks import QKSConfig
from .modeling_qks import QKSModel

__all__ = ["QKSConfig", "QKSModel"]
