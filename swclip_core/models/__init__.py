"""Backbones through open_clip, with the offline default "swclip-lite" (see backbone.py)."""

from swclip_core.models.backbone import Backbone, available_backbones, create_backbone

__all__ = ["Backbone", "available_backbones", "create_backbone"]
