"""`pretrained`: no training, the initial backbone's features — the floor of every table.

The shared self-supervised init, evaluated as is: a method that does not beat it has not adapted anything. From
an init that trains the head with the trunk (SimCLR, MoCo v2) the retrieval feature is the head's output; from a
ViT publisher's weights, which come without a projection head, it is the trunk's feature as they retrieve with it
(DINOv2's normalised CLS token, CLIP's image embedding: `EmbeddingNet.zero_shot_feature`): the row is the
backbone's zero-shot result.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .base import BaseHparams, Method
from .registry import register


@dataclass
class PretrainedHparams(BaseHparams):
    epochs: int = 0


@register("pretrained")
class Pretrained(Method):
    label = "Pretrained (init)"                # the floor of every table; the paper has no such row
    Hparams = PretrainedHparams

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        if self.backbone.zero_shot_feature == "trunk":
            return F.normalize(self.backbone.features(images), dim=1)
        return self.backbone(images)
