"""Model zoo: backbone registry and the model builder.

Importing this package does not import Keras; ``create_model`` does.
"""

from .backbones import BACKBONES, Backbone, get_backbone, list_backbones, register_backbone
from .factory import HeadSpec, ModelSpec, create_model, get_backbone_model
from .recipes import RECIPES, Recipe, get_recipe, list_recipes, register_recipe

__all__ = [
    "BACKBONES",
    "Backbone",
    "HeadSpec",
    "ModelSpec",
    "RECIPES",
    "Recipe",
    "create_model",
    "get_backbone",
    "get_backbone_model",
    "get_recipe",
    "list_backbones",
    "list_recipes",
    "register_backbone",
    "register_recipe",
]
