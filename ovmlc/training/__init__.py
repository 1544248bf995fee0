"""The `ovmlc train` engine (`trainer.py` orchestrates; one module per concern, see its docstring) and
`pretrain_vlp.py` (`ovmlc pretrain-vlp`)."""

from .recipe import Recipe, RecipeError, load_recipe, recipe_from_dict


def release_accelerator_state() -> None:
    """Forget earlier runs' mixed precision / accumulation settings (process-wide singletons in accelerate), so
    several runs (training recipes, `pretrain-vlp`) can follow each other in one Python process (tests, notebooks,
    `ovmlc quickstart`). The distributed setup itself is kept."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()


__all__ = ["Recipe", "RecipeError", "load_recipe", "recipe_from_dict", "release_accelerator_state"]
