"""Barlow Twins: self-supervised pretraining with the optimizer under test, judged by a linear probe."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from ...barlow import BarlowTwins, barlow_twins_loss, linear_probe, ridge_probe_accuracy
from ...pipeline import Augment, augment_batch, barlow_twins_views
from ..keys import BarlowTwinsKeys
from ..metrics import Metric
from ..trial import Trial, features
from . import Training, register_task

__all__ = ["BarlowTwinsTask"]

#: The official Barlow Twins projector; the small MLP/CNN workloads get a smaller one.
_BT_PROJECTOR_RESNET = [4096, 4096, 4096]
_BT_PROJECTOR_SMALL = [512, 512, 512]
#: The accuracy each evaluated split reports.
_ACCURACY = {"val": Metric.VAL_ACC, "test": Metric.TEST_ACC}


class BarlowTwinsTask:
    """Pretrain with Barlow Twins and the optimizer under test; probe the frozen backbone.

    Each epoch reports a closed-form ridge probe's validation and test accuracy (fast, for pruning); the last
    epoch reports the SGD linear probe's (``probe: "sgd"``), the trial's result. On CUDA the probe follows the
    official protocol (100 epochs, lr 0.3, weight decay 5e-4, batch 256, trained on augmented images through the
    frozen backbone); on CPU it trains 20 epochs on standardised features computed once.
    """

    keys: ClassVar[tuple[str, ...]] = tuple(BarlowTwinsKeys.__dataclass_fields__)

    def prepare(self, trial: Trial) -> Training:
        cfg = trial.cfg
        cuda = trial.device.type == "cuda"
        backbone = trial.build_model()
        projector = cfg.projector_dims or (
            _BT_PROJECTOR_RESNET if cfg.model.startswith("resnet") else _BT_PROJECTOR_SMALL
        )
        model = BarlowTwins(backbone, projector).to(trial.device)
        if trial.channels_last:
            model = model.to(memory_format=torch.channels_last)
        images = len(trial.data.input_shape) == 3
        loader = trial.train_loader(
            None if images else Augment(crop_padding=0, flip=False, shift=4, jitter=0.3, noise=0.2)
        )
        opt, sched = trial.build_optimizer(model, len(loader))

        def views(xb: Tensor) -> tuple[Tensor, Tensor]:
            if not images:
                return loader.transform(xb), loader.transform(xb)
            v1, v2 = barlow_twins_views(xb, loader.mean, loader.std, trial.generator)
            if trial.channels_last:
                v1, v2 = (v.contiguous(memory_format=torch.channels_last) for v in (v1, v2))
            return v1, v2

        def train_step(xb: Tensor, yb: Tensor) -> Tensor:
            model.train()
            opt.zero_grad(set_to_none=True)
            v1, v2 = views(xb)
            shares = min(cfg.ddp_devices, len(xb))  # per-device BatchNorm, the loss over the whole batch

            def embed(v: Tensor) -> Tensor:
                return torch.cat([model(s).float() for s in v.tensor_split(shares)])

            with trial.autocast():
                loss = barlow_twins_loss(embed(v1), embed(v2), cfg.bt_lambda, shares=shares)
            loss.backward()
            opt.step()
            return loss.detach()

        eval_splits = [s for s in ("val", "test") if s in trial.eval_loaders]

        def evaluate(epoch: int) -> dict[str, Any]:
            model.eval()
            feats = {s: features(backbone, trial.eval_loaders[s], trial.autocast) for s in ("train", *eval_splits)}
            labels = {s: trial.eval_loaders[s].y for s in eval_splits}
            if epoch < cfg.epochs:
                out: dict[str, Any] = {"probe": "ridge"}
                for s in eval_splits:
                    out[_ACCURACY[s]] = ridge_probe_accuracy(
                        feats["train"], trial.train_y, feats[s], labels[s], trial.data.num_classes
                    )
                return out
            augmented = cfg.probe_augment if cfg.probe_augment is not None else (cuda and images)
            if augmented:
                probe_aug = trial.default_augment() or Augment(crop_padding=4, flip=True)

                @torch.no_grad()
                def train_features(rows: Tensor) -> Tensor:
                    xb = augment_batch(trial.train_x[rows], probe_aug, loader.mean, loader.std, trial.generator)
                    with trial.autocast():
                        return backbone.features(xb).float()

                evals = {s: (feats[s], labels[s]) for s in eval_splits}
            else:
                mean, std = feats["train"].mean(0), feats["train"].std(0).clamp_min(1e-6)
                train_std = (feats["train"] - mean) / std

                def train_features(rows: Tensor) -> Tensor:
                    return train_std[rows]

                evals = {s: ((feats[s] - mean) / std, labels[s]) for s in eval_splits}
            final, best = linear_probe(
                train_features,
                trial.train_y,
                evals,
                trial.data.num_classes,
                epochs=cfg.probe_epochs or (100 if cuda else 20),
                lr=cfg.probe_lr,
                weight_decay=cfg.probe_weight_decay,
                batch_size=min(cfg.probe_batch_size, len(trial.train_y)),
                generator=trial.generator,
            )
            return {**{_ACCURACY[s]: final[s] for s in eval_splits}, "probe": "sgd", "probe_best_acc": best["test"]}

        return Training(model, loader, opt, sched, train_step, evaluate)


register_task("barlow_twins", BarlowTwinsTask)
