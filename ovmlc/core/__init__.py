"""Core modeling layer: CLIP helpers, images, label vocabulary and cache, losses, outputs, the base model and the
method registry. Imports only torch, transformers, safetensors, numpy, PIL, huggingface_hub and layer 0 of ovmlc
(see docs/architecture.md); nothing is imported here, so `import ovmlc.core.registry` stays light."""
