"""State that a training step reads but may only change after the optimiser step: memory banks, key queues, momentum
encoders.

A method stages the step's update where it computes it (in `training_step`, with the step's pre-update features); the
runner calls `Method.commit_staged_updates()` after `optimizer.step()`, which applies every staged update in the order
it was staged, module by module. So a bank never changes under a loss that is still to be back-propagated, and the
update uses the features the loss saw, as in the official code of InstDisc, CDS, PCS, MoCo and UCDIR.
"""
from __future__ import annotations

from functools import partial

from torch import nn


class StagedUpdates(nn.Module):
    """A module whose changes wait for the optimiser step. Subclasses call `self.stage(self.some_update, *args)`."""

    def __init__(self):
        super().__init__()
        self._staged: list = []                 # not state: always empty between steps, so never checkpointed

    def stage(self, update, *args) -> None:
        self._staged.append(partial(update, *args))

    @property
    def has_staged(self) -> bool:
        return bool(self._staged)

    def commit(self) -> None:
        staged, self._staged = self._staged, []
        for update in staged:
            update()
