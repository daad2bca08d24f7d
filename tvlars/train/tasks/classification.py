"""Supervised classification: cross-entropy on the labels, accuracy on the validation and test splits."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.nn import functional as F

from ..metrics import Metric
from ..trial import Trial, evaluate_classifier
from . import Training, register_task

__all__ = ["Classification"]


class Classification:
    """Train the model on cross-entropy; report validation and test loss and accuracy each epoch."""

    keys: ClassVar[tuple[str, ...]] = ("micro_batch_size",)

    def prepare(self, trial: Trial) -> Training:
        model = trial.build_model().to(trial.device)
        if trial.channels_last:
            model = model.to(memory_format=torch.channels_last)
        loader = trial.train_loader(trial.default_augment())
        opt, sched = trial.build_optimizer(model, len(loader))

        def train_step(xb: Tensor, yb: Tensor) -> Tensor:
            model.train()
            opt.zero_grad(set_to_none=True)
            xb = loader.transform(xb)
            total = torch.zeros((), device=trial.device)
            for xc, yc, weight in trial.micro_batches(xb, yb):
                with trial.autocast():
                    loss = F.cross_entropy(model(xc).float(), yc) * weight
                loss.backward()
                total += loss.detach()
            opt.step()
            return total

        def evaluate(epoch: int) -> dict[str, Any]:
            model.eval()
            metrics: dict[str, Any] = {}
            loaders = trial.eval_loaders
            if "val" in loaders:
                val = evaluate_classifier(model, loaders["val"], trial.autocast)
                metrics[Metric.VAL_LOSS], metrics[Metric.VAL_ACC] = val
            test = evaluate_classifier(model, loaders["test"], trial.autocast)
            metrics[Metric.TEST_LOSS], metrics[Metric.TEST_ACC] = test
            return metrics

        return Training(model, loader, opt, sched, train_step, evaluate)


register_task("classification", Classification)
