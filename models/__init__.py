"""Model zoo: backbone registry and the model builder.

Importing this package does not import Keras; ``create_model`` does.
"""

from .backbones import BACKBONES, Backbone, get_backbone, list_backbones, register_backbone
from .factory import HeadSpec, ModelSpec, create_model, get_backbone_model

__all__ = [
    "BACKBONES",
    "Backbone",
    "HeadSpec",
    "ModelSpec",
    "create_model",
    "get_backbone",
    "get_backbone_model",
    "list_backbones",
    "register_backbone",
]
