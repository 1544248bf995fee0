"""A minimal prompt-learning method for tests (not registered): CoOp's unified context, `n_ctx` learned vectors in
front of the class name, scored by a scaled cosine. It lives in a module of its own so that `save_pretrained` can
export its code like a method's."""

import torch.nn.functional as F

from ovmlc.core.modeling_base import OVMLCConfig, OVMLCPreTrainedModel
from ovmlc.core.outputs import MultiLabelOutput
from ovmlc.prompting.configuration_prompting import PromptLearningConfig
from ovmlc.prompting.prompt_mixin import PromptLearningMixin


class TinyPromptConfig(OVMLCConfig):
    model_type = "ovmlc_test_tiny_prompt"

    prompt_learning: dict | None = None


class TinyPromptModel(PromptLearningMixin, OVMLCPreTrainedModel):
    config: TinyPromptConfig
    trains_text_side = True

    def __init__(self, config: TinyPromptConfig):
        super().__init__(config)
        prompt = PromptLearningConfig.from_dict(config.prompt_learning or {"n_ctx": 16})
        config.prompt_learning = self.build_prompt_learner(prompt).to_dict()
        self.post_init()
        self.post_load()

    def post_load(self) -> None:
        self.requires_grad_(False)
        self.prompt_learner.requires_grad_(True)

    def score(self, image_features, label_embeds, return_label_maps=False) -> MultiLabelOutput:
        image_embeds = F.normalize(image_features["image_embeds"], dim=-1)  # [B, D]
        logits = 10.0 * image_embeds @ F.normalize(label_embeds.to(image_embeds.dtype), dim=-1).T  # [B, C]
        return MultiLabelOutput(logits=logits, image_embeds=image_embeds)


TinyPromptConfig.register_for_auto_class()
TinyPromptModel.register_for_auto_class("AutoModel")
