"""An example method from outside the harness (docs/extending.md, "Adding a method"): instance discrimination against
a memory bank per domain, the bank moved after each optimiser step.

    python run_benchmark.py --plugin examples/my_method.py --methods pretrained mymethod

Dropped into methods/ instead, it is found without --plugin.
"""
from dataclasses import dataclass

from methods.base import BaseHparams, Method, sgd_with_cosine
from methods.losses import masked_info_nce
from methods.registry import register


@dataclass
class MyHparams(BaseHparams):
    epochs: int = 10          # the paper's budget here; the small-data recipe in `budgets`
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    temperature: float = 0.2


@register("mymethod")
class MyMethod(Method):
    Hparams = MyHparams
    label = "MyMethod"                                 # the tables' row label (default: the registered name)
    budgets = {"quickstart": {"epochs": 3}}            # a suite's `budget = "quickstart"` (the synthetic data's)

    def on_fit_start(self, ctx):                       # unlabeled domains only: fill a bank per domain
        self.banks = self.filled_banks(ctx)

    def configure_optimizers(self):                    # per-epoch cosine; an `Optimization` adds per-step schedules
        return sgd_with_cosine(self.backbone.parameters(), self.hparams)

    def training_step(self, batch_a, batch_b, step):  # images in [0, 1], instance indices, domain id; never labels
        h, losses = self.hparams, []
        for batch, bank in zip((batch_a, batch_b), self.banks):
            features = self.backbone(batch.images)
            own = bank.features[batch.index]
            losses.append(masked_info_nce(features, own, bank.features, None, h.temperature))
            bank.stage_momentum_update(batch.index, features, 0.5)   # applied after the optimiser step
        return {"loss": sum(losses)}
