from .configuration_dualcooppp import DualCoOpPPConfig
from .modeling_dualcooppp import DualCoOpPPModel

__all__ = ["DualCoOpPPConfig", "DualCoOpPPModel"]
