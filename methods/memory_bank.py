"""Per-domain, index-addressed memory bank: one L2-normalised feature slot per training image (InstDisc / CDS / PCS /
UCDIR / UEM). A buffer, so it is saved and restored with the method's state_dict. A training step stages its update
(`stage_momentum_update`, `stage_overwrite`); the runner commits it after the optimiser step (`methods/staged.py`)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .staged import StagedUpdates


class MemoryBank(StagedUpdates):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("features", torch.zeros(size, dim))

    def __len__(self) -> int:
        return self.features.shape[0]

    @torch.no_grad()
    def fill(self, features: torch.Tensor) -> None:
        if features.shape != self.features.shape:
            raise ValueError(f"bank of shape {tuple(self.features.shape)} filled with {tuple(features.shape)}")
        self.features.copy_(F.normalize(features.to(self.features), dim=1))

    @torch.no_grad()
    def momentum_update(self, index: torch.Tensor, features: torch.Tensor, momentum: float) -> None:
        """m_i <- normalize(momentum * m_i + (1 - momentum) * f_i)."""
        mixed = momentum * self.features[index] + (1.0 - momentum) * features.detach().to(self.features)
        self.features[index] = F.normalize(mixed, dim=1)

    def stage_momentum_update(self, index: torch.Tensor, features: torch.Tensor, momentum: float) -> None:
        """`momentum_update` with this step's features, applied after the optimiser step."""
        self.stage(self.momentum_update, index, features.detach(), momentum)

    def stage_overwrite(self, index: torch.Tensor, features: torch.Tensor) -> None:
        """`overwrite` with this step's features, applied after the optimiser step."""
        self.stage(self.overwrite, index, features.detach())

    @torch.no_grad()
    def overwrite(self, index: torch.Tensor, features: torch.Tensor) -> None:
        self.features[index] = F.normalize(features.detach().to(self.features), dim=1)
