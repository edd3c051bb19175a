"""Model zoo: backbone registry and the model builder.

Importing this package does not import Keras; ``create_model`` does.
"""

from .backbones import BACKBONES, Backbone, get_backbone, list_backbones, register_backbone
from .factory import (HeadSpec, ModelSpec, check_img_size, check_weights, create_model, format_img_size,
                      get_backbone_model, img_hw)
from .recipes import RECIPES, Recipe, get_recipe, list_recipes, register_recipe

__all__ = [
    "BACKBONES",
    "Backbone",
    "HeadSpec",
    "ModelSpec",
    "RECIPES",
    "Recipe",
    "check_img_size",
    "check_weights",
    "create_model",
    "format_img_size",
    "get_backbone",
    "get_backbone_model",
    "get_recipe",
    "img_hw",
    "list_backbones",
    "list_recipes",
    "register_backbone",
    "register_recipe",
]
