"""ViLD for open-vocabulary tagging with boxes (Gu et al., ICLR 2022)."""

from .configuration_vild import ViLDConfig
from .modeling_vild import ViLDModel

__all__ = ["ViLDConfig", "ViLDModel"]
