from .configuration_dualcoop import DualCoOpConfig
from .modeling_dualcoop import DualCoOpModel

__all__ = ["DualCoOpConfig", "DualCoOpModel"]
