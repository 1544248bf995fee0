"""Configuration of QKS (Query-Based Knowledge Sharing, Zhu et al., arXiv 2401.01181 / ACM TOMM 2025)."""

from ovmlc.core.modeling_base import OVMLCConfig

QKS_LOSSES = ("asl", "bce")


class QKSConfig(OVMLCConfig):
    r"""
    QKS: a frozen CLIP image tower, `num_queries` learnable label-agnostic query tokens refined by a
    `num_query_layers`-layer query transformer (self-attention among queries, cross-attention to all image tokens,
    FFN), projected into the joint space; each label picks the query with the largest (unnormalised) dot product with
    its prompt-pool text embedding. Fields are those of `OVMLCConfig` (defaults: `templates="qks-pool85"`,
    `prompt_pool="raw"`, `logit_scale=1.0`) plus:

    num_queries (`int`): m, the number of query tokens (12 on NUS-WIDE, 22 on Open Images).
    num_query_layers (`int`): L, the number of query-transformer layers (7 on NUS-WIDE, 8 on Open Images).
    query_hidden_size (`int`, *optional*): width of the query transformer; `None` = the vision width (as the
        official code, where the Q-Former width equals ViT-B/16's 768). Only at the vision width can the projection
        start from CLIP's `visual_projection`.
    query_num_heads (`int`, *optional*): attention heads; `None` = the vision tower's head count.
    query_intermediate_size (`int`, *optional*): FFN width; `None` = 4 x `query_hidden_size`.
    query_dropout (`float`): dropout on the query embeddings and after attention/FFN (BERT's 0.1).
    query_attention_dropout (`float`): dropout on attention probabilities (BERT's 0.1).
    query_layer_norm_eps (`float`): LayerNorm epsilon of the query transformer (BERT's 1e-12).
    initializer_range (`float`): std of the normal init of query tokens and query-transformer weights.
    include_cls_token (`bool`): whether the CLS token is among the image tokens the queries attend to (the
        official default; `False` is the code's `--rmcls`).
    train_projection (`bool`): train the projection from query space to the joint space (official: yes). It is a
        trainable copy of CLIP's `visual_projection`, so the zero-shot projection inside `clip` stays intact.
    loss (`"asl"` | `"bce"`): ASL (NUS-WIDE recipe) or BCE (Open Images recipe).
    asl_gamma_neg, asl_gamma_pos, asl_clip (`float`): ASL focusing parameters (4, 0, 0 on NUS-WIDE).
    mask_unannotated (`bool`): drop unannotated label entries from the loss (the paper's intent). `False` reproduces
        the official Open Images command, whose plain BCE treats unannotated labels as negatives.
    """

    model_type = "ovmlc_qks"

    templates: str | list[str] | None = "qks-pool85"
    prompt_pool: str = "raw"
    logit_scale: float | None = 1.0
    num_queries: int = 12
    num_query_layers: int = 7
    query_hidden_size: int | None = None
    query_num_heads: int | None = None
    query_intermediate_size: int | None = None
    query_dropout: float = 0.1
    query_attention_dropout: float = 0.1
    query_layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    include_cls_token: bool = True
    train_projection: bool = True
    loss: str = "asl"
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.0
    mask_unannotated: bool = True

    def __post_init__(self, **kwargs):
        if self.loss not in QKS_LOSSES:
            raise ValueError(f"QKSConfig.loss must be one of {QKS_LOSSES}, got {self.loss!r}")
        for name in ("num_queries", "num_query_layers"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"QKSConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        super().__post_init__(**kwargs)


__all__ = ["QKSConfig"]
