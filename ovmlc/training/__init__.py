"""Pieces of the `ovmlc train` engine (`ovmlc/train.py`): recipes, checkpoints, feature cache, datasets, transforms."""

from .recipe import Recipe, RecipeError, load_recipe, recipe_from_dict

__all__ = ["Recipe", "RecipeError", "load_recipe", "recipe_from_dict"]
