"""MoCo pieces shared by the momentum-encoder methods (UCDIR, DGDIR, DARL, DN2A): an EMA key encoder and a FIFO
queue of keys that remembers which instance each key came from. Both keep their state in buffers, so a checkpoint
restores them with the method's state_dict, and both change only after the optimiser step: a training step stages
the update (`stage_update`, `stage_enqueue`) and the runner commits it (`methods/staged.py`)."""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from .staged import StagedUpdates


class MomentumEncoder(StagedUpdates):
    """A frozen copy of an online network, moved towards it after each step: theta_k <- m theta_k + (1 - m) theta_q
    (MoCo). Only parameters move: buffers (BatchNorm running statistics) are the key encoder's own, estimated by its
    own forward passes in training mode, as in MoCo and UCDIR's key encoders."""

    def __init__(self, online: nn.Module):
        super().__init__()
        self.encoder = copy.deepcopy(online).requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module, momentum: float) -> None:
        for key, query in zip(self.encoder.parameters(), online.parameters()):
            key.mul_(momentum).add_(query.detach(), alpha=1.0 - momentum)

    def stage_update(self, online: nn.Module, momentum: float) -> None:
        """`update` towards `online` as it will be after the optimiser step (applied then)."""
        self.stage(self.update, online, momentum)

    @torch.no_grad()
    def forward(self, *args, **kwargs):
        return self.encoder(*args, **kwargs)

    @property
    def has_batchnorm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.encoder.modules())

    @torch.no_grad()
    def shuffled_keys(self, images: torch.Tensor, splits: int) -> torch.Tensor:
        """Keys of a batch with MoCo's shuffle-BN emulated on one device (UCDIR's split BatchNorm): the batch is
        permuted and forwarded in `splits` chunks, each normalised with its own statistics, then put back in order,
        so BatchNorm cannot leak which key belongs to which query. Nets without BatchNorm (the quickstart's
        GroupNorm CNN) go through in one piece and draw no permutation."""
        if splits < 1:
            raise ValueError(f"shuffle-BN needs at least one split, got {splits}")
        if splits == 1 or not self.has_batchnorm:
            return self.encoder(images)
        order = torch.randperm(len(images), device=images.device)
        shuffled = torch.cat([self.encoder(chunk) for chunk in images[order].chunk(splits)])
        keys = torch.empty_like(shuffled)
        keys[order] = shuffled
        return keys


class KeyQueue(StagedUpdates):
    """A FIFO of `size` L2-normalised keys with the instance index of each (-1 while a slot is empty).

    `negatives_mask(index)` says which slots may serve as negatives for queries of the given instances: filled slots
    whose key does not come from the query's own instance (DGDIR masks the own sample's older keys)."""

    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("index", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("pointer", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, index: torch.Tensor) -> None:
        n = len(keys)
        if n > len(self):
            keys, index, n = keys[-len(self):], index[-len(self):], len(self)
        slots = (self.pointer + torch.arange(n, device=self.keys.device)) % len(self)
        self.keys[slots] = F.normalize(keys.detach().to(self.keys), dim=1)
        self.index[slots] = index.to(self.index)
        self.pointer.copy_((self.pointer + n) % len(self))

    def stage_enqueue(self, keys: torch.Tensor, index: torch.Tensor) -> None:
        """`enqueue` this step's keys after the optimiser step."""
        self.stage(self.enqueue, keys.detach(), index)

    def negatives_mask(self, query_index: torch.Tensor) -> torch.Tensor:
        """Bool [B, size]: True where slot j is a valid negative for query i."""
        filled = self.index >= 0
        return filled[None, :] & (self.index[None, :] != query_index[:, None])
