from .configuration_coop import CoOpConfig
from .modeling_coop import CoOpModel

__all__ = ["CoOpConfig", "CoOpModel"]
