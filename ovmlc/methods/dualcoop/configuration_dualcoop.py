"""Configuration of DualCoOp (Sun, Hu & Saenko, NeurIPS 2022)."""

from ovmlc.methods.coop.configuration_coop import CoOpFamilyConfig

DENSE_FEATURES = ("value", "patch", "global")


class DualCoOpConfig(CoOpFamilyConfig):
    r"""
    DualCoOp: frozen CLIP; a positive and a negative learned prompt per label; class-specific region aggregation over
    dense image features; `p_c = softmax(neg_c, pos_c)[pos]`, i.e. `logits = pos - neg` under a sigmoid; ASL on that
    2-way softmax. Fields are those of `CoOpFamilyConfig` (`prompt_learning` is shared by the two sets: same `n_ctx`
    and initialisation, independent vectors) plus:

    dense_features (`"value"` | `"patch"` | `"global"`): the regions. `"value"`: MaskCLIP-style value-path tokens of the
        last ViT block (the ViT counterpart of the code's ResNet attention-pool value path); `"patch"`: the plain output
        tokens. Both through the final LayerNorm and the projection. `"global"`: the global image embedding alone (no
        region aggregation; the paper's "global feature" ablation, no label maps).
    include_global_token (`bool`): the CLS token (through the same path) is one of the regions, as the code's
        attention-pool mean token is.
    region_logit_scale (`float`): s_{k,r} = region_logit_scale * cos(prompt_k, region_r) (the code's hard-coded 20).
    aggregated_logit_scale (`float`): logit_k = aggregated_logit_scale * sum_r w_{c,r} s_{k,r} (the code's 5).

    `logit_scale` / `logit_bias` of `OVMLCConfig` are not used (the code's `--logit_scale` is not used either).
    """

    model_type = "ovmlc_dualcoop"

    dense_features: str = "value"
    include_global_token: bool = True
    region_logit_scale: float = 20.0
    aggregated_logit_scale: float = 5.0

    def __post_init__(self, **kwargs):
        check_region_aggregation_settings(self)
        super().__post_init__(**kwargs)


def check_region_aggregation_settings(config) -> None:
    """Validate the region-aggregation fields (`dense_features`, `include_global_token`, `region_logit_scale`,
    `aggregated_logit_scale`) of any config that has them: DualCoOp's, or LAMM's with its `dualcoop` head."""
    name = type(config).__name__
    if config.dense_features not in DENSE_FEATURES:
        raise ValueError(f"{name}.dense_features must be one of {DENSE_FEATURES}, got {config.dense_features!r}")
    if config.dense_features == "global" and not config.include_global_token:
        raise ValueError(f"{name}.dense_features='global' is the global token alone: include_global_token must be true")
    for key in ("region_logit_scale", "aggregated_logit_scale"):
        if not float(getattr(config, key)) > 0:
            raise ValueError(f"{name}.{key} must be > 0, got {getattr(config, key)!r}")


__all__ = ["DENSE_FEATURES", "DualCoOpConfig", "check_region_aggregation_settings"]
