"""`pretrained`: no training, the initial backbone's features — the floor of every table.

The shared self-supervised init, evaluated as is: a method that does not beat it has not adapted anything.
"""
from __future__ import annotations

from dataclasses import dataclass

from .base import BaseHparams, Method
from .registry import register


@dataclass
class PretrainedHparams(BaseHparams):
    epochs: int = 0


@register("pretrained")
class Pretrained(Method):
    label = "Pretrained (init)"                # the floor of every table; the paper has no such row
    Hparams = PretrainedHparams
