"""ovmlc: open-vocabulary multi-label image classification on the Hugging Face stack."""

from transformers import AutoConfig, AutoModel
from transformers.pipelines import PIPELINE_REGISTRY

from .clip_utils import SYNTHETIC_CLIP_PATH, load_clip_backbone
from .factory import load_model
from .images import ImageLoadError, load_image
from .methods.clip_zeroshot import CLIPZeroShotConfig, CLIPZeroShotModel
from .methods.clipft import CLIPFTConfig, CLIPFTModel
from .methods.mkt import MKTConfig, MKTModel
from .methods.qks import QKSConfig, QKSModel
from .methods.vild import ViLDConfig, ViLDModel
from .modeling_base import PIPELINE_TASK, MultiLabelOutput, OVMLCConfig, OVMLCPreTrainedModel
from .pipeline import OpenVocabularyMultiLabelPipeline
from .vocabulary import LabelVocabulary, list_templates, load_labelset, load_templates

__version__ = "0.1.0"

# (config class, model class) of every method; registered with the Auto classes on import.
METHODS = {
    "clip_zeroshot": (CLIPZeroShotConfig, CLIPZeroShotModel),
    "clipft": (CLIPFTConfig, CLIPFTModel),
    "mkt": (MKTConfig, MKTModel),
    "qks": (QKSConfig, QKSModel),
    "vild": (ViLDConfig, ViLDModel),
}

for _config_class, _model_class in METHODS.values():
    AutoConfig.register(_config_class.model_type, _config_class, exist_ok=True)
    AutoModel.register(_config_class, _model_class, exist_ok=True)

PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=OpenVocabularyMultiLabelPipeline, pt_model=AutoModel, type="multimodal"
)

__all__ = [
    "CLIPFTConfig",
    "CLIPFTModel",
    "CLIPZeroShotConfig",
    "CLIPZeroShotModel",
    "ImageLoadError",
    "LabelVocabulary",
    "METHODS",
    "MKTConfig",
    "MKTModel",
    "MultiLabelOutput",
    "OVMLCConfig",
    "OVMLCPreTrainedModel",
    "OpenVocabularyMultiLabelPipeline",
    "PIPELINE_TASK",
    "QKSConfig",
    "QKSModel",
    "SYNTHETIC_CLIP_PATH",
    "ViLDConfig",
    "ViLDModel",
    "list_templates",
    "load_clip_backbone",
    "load_image",
    "load_labelset",
    "load_model",
    "load_templates",
]
