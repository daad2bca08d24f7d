"""The trial protocol: a shared stratified validation split, the official loader's steps, DDP-style BatchNorm shares,
the warm-up recipe on any optimizer, and the official Barlow Twins augmentations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.unit.tvlars.train.test_train import BARLOW_TWINS, MNIST1D, _run
from tvlars.data import load_dataset, validation_split
from tvlars.models import build_model
from tvlars.pipeline import barlow_twins_views
from tvlars.schedules import paper_lr, warmup_cosine_factor
from tvlars.train import Trial, TrialConfig, build_optimizer

#: The report keys of the DESIGN contract.
CONTRACT_KEYS = {
    "epoch",
    "train_loss",
    "val_loss",
    "val_acc",
    "best_val_acc",
    "test_loss",
    "test_acc",
    "test_acc_at_best_val",
    "lr",
    "phi",
    "images_per_s",
}
VAL_KEYS = {"val_loss", "val_acc", "best_val_acc", "test_acc_at_best_val"}
PAPER_BATCH_SIZES = (512, 1024, 2048, 4096, 8192, 16384, 32768)


# -- validation split ----------------------------------------------------------------------------------------------


def test_validation_split_is_disjoint_stratified_and_fixed_by_its_seed():
    labels = load_dataset("mnist1d").train_y
    train, val = validation_split(labels, 0.1, seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(len(labels)))
    # stratified: every class gives round(10 %) of its rows
    counts, val_counts = np.bincount(labels), np.bincount(labels[val], minlength=labels.max() + 1)
    assert np.array_equal(val_counts, np.round(0.1 * counts).astype(int))
    again_train, again_val = validation_split(labels, 0.1, seed=0)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert not np.array_equal(val, validation_split(labels, 0.1, seed=1)[1])


def test_every_trial_of_a_study_is_judged_on_the_same_rows():
    data = load_dataset("mnist1d")
    _, val_rows = validation_split(data.train_y, 0.1, seed=0)
    trials = [Trial(TrialConfig.from_dict({**MNIST1D, "seed": seed, "device": "cpu"})) for seed in (0, 1, 7)]
    for trial in trials:  # different trial seeds, one split seed: the same validation rows
        val = trial.eval_loaders["val"]
        assert torch.equal(val.x, torch.from_numpy(data.train_x[val_rows]))
        assert torch.equal(val.y, torch.from_numpy(data.train_y[val_rows]))
        # no validation row is trained on
        train_rows = {bytes(r) for r in trial.train_x.numpy()}
        assert not any(bytes(r) in train_rows for r in val.x.numpy())
        assert len(trial.train_x) + len(val.x) == len(data.train_x)
    other = Trial(TrialConfig.from_dict({**MNIST1D, "split_seed": 1, "device": "cpu"}))
    assert not torch.equal(other.eval_loaders["val"].x, trials[0].eval_loaders["val"].x)


def test_each_epoch_reports_validation_and_the_test_accuracy_at_best_validation():
    result, rows = _run(MNIST1D)
    assert all(CONTRACT_KEYS <= r.keys() for r in rows)
    best = -1.0
    for r in rows:
        if r["val_acc"] > best:
            best, at_best = r["val_acc"], r["test_acc"]
        assert r["best_val_acc"] == best and r["test_acc_at_best_val"] == at_best
        assert 0 < r["val_acc"] <= 1 and r["val_loss"] > 0
    assert result["test_acc_at_best_val"] == at_best and result["best_val_acc"] == max(r["val_acc"] for r in rows)


def test_val_fraction_zero_reports_no_validation_metrics():
    result, rows = _run({**MNIST1D, "val_fraction": 0, "epochs": 2})
    assert all(not (VAL_KEYS & r.keys()) for r in rows) and not (VAL_KEYS & result.keys())
    assert rows[-1]["test_acc"] > 0.2
    assert rows[0]["step"] == 16  # all 4000 rows trained on: 4000 / 250


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"val_fraction": 0.5}, r"Invalid val_fraction: 0.5"),
        ({"val_fraction": -0.1}, r"Invalid val_fraction"),
        ({"split_seed": "a"}, r"Invalid split_seed"),
        ({"ddp_devices": 0}, r"Invalid ddp_devices: 0"),
        ({"lr_scaling": "sqrt"}, r"Invalid lr_scaling: 'sqrt' \(choose from none, linear_256\)"),
        ({"lr_schedule": "step"}, r"Invalid lr_schedule: 'step'"),
        ({"trust_ratio": False}, r"trust_ratio: optimizer .tvlars. does not take it \(optimizers that take it: lamb\)"),
    ],
)
def test_bad_protocol_options_are_clear_errors(config, match):
    with pytest.raises(ValueError, match=match):
        TrialConfig.from_dict({**MNIST1D, **config})


# -- the official loader -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_sized():
    """A 50 000-row training split, as CIFAR-10's, of tiny images."""
    options = {"n_train": 50_000, "n_test": 100, "image_size": 4, "channels": 1}
    return {"dataset": "synthetic", "dataset_options": options, "model": "mlp", "val_fraction": 0, "device": "cpu"}


@pytest.mark.parametrize("bs", PAPER_BATCH_SIZES)
def test_steps_per_epoch_equal_the_official_loaders(cifar_sized, bs):
    trial = Trial(TrialConfig.from_dict({**cifar_sized, "batch_size": bs, "ddp_devices": 4}))
    loader = trial.train_loader(None)
    # official: DistributedSampler deals ceil(50000 / 4) rows to each of 4 GPUs, batches of bs / 4, last one kept
    official = math.ceil(math.ceil(50_000 / 4) / (bs // 4))
    assert len(loader) == official == math.ceil(50_000 / bs)
    sizes = [len(xb) for xb, _ in loader.raw_batches()]
    assert sum(sizes) == 50_000 and len(sizes) == official
    # each batch, the last partial one too, is dealt as 4 equal shares weighted 1/4 (DDP's gradient mean)
    shares = list(trial.micro_batches(*next(iter(loader.raw_batches()))))
    assert len(shares) == 4 and all(w == 0.25 for *_, w in shares)
    last = torch.zeros(sizes[-1], 1), torch.zeros(sizes[-1], dtype=torch.long)
    assert (
        max(len(x) for x, *_ in trial.micro_batches(*last)) - min(len(x) for x, *_ in trial.micro_batches(*last)) <= 1
    )


def test_a_real_epoch_at_batch_16384_takes_the_official_4_steps(cifar_sized):
    result, rows = _run({**cifar_sized, "batch_size": 16384, "epochs": 1, "lr": 1.0, "ddp_devices": 4})
    assert rows[0]["step"] == 4 and math.isfinite(result["train_loss"])
    dropped, _ = _run({**cifar_sized, "batch_size": 16384, "epochs": 1, "lr": 1.0, "drop_last": True})
    assert dropped["step"] == 3  # what the trainer used to do


def test_ddp_devices_normalise_each_share_by_its_own_batchnorm_statistics():
    # with BatchNorm the loss of 4 shares differs from the full batch's; without it the step is the same
    full, _ = _run({**MNIST1D, "model": "cnn", "epochs": 1, "val_fraction": 0})
    shares, _ = _run({**MNIST1D, "model": "cnn", "epochs": 1, "val_fraction": 0, "ddp_devices": 4})
    assert shares["train_loss"] != pytest.approx(full["train_loss"], rel=1e-6)
    micro, _ = _run({**MNIST1D, "model": "cnn", "epochs": 1, "val_fraction": 0, "micro_batch_size": 125})
    two, _ = _run({**MNIST1D, "model": "cnn", "epochs": 1, "val_fraction": 0, "ddp_devices": 2})
    assert two["train_loss"] == pytest.approx(micro["train_loss"], rel=1e-5)  # 2 equal shares = micro 125


# -- the warm-up recipe on any optimizer ---------------------------------------------------------------------------


@pytest.mark.parametrize("optimizer", ["tvlars", "lamb", "sgd"])
def test_the_warmup_recipe_applies_to_any_optimizer(optimizer):
    cfg = TrialConfig.from_dict(
        {**MNIST1D, "optimizer": optimizer, "lr": 0.5, "warmup_epochs": 2, "lr_scaling": "linear_256", "epochs": 10}
    )
    opt, sched = build_optimizer(cfg, build_model("mlp", (1, 40), 10), steps_per_epoch=15)
    base = paper_lr(0.5, 250)
    lrs = []
    for _ in range(150):
        lrs.append(opt.param_groups[-1]["lr"])
        opt.step()  # no gradients: nothing moves, the step counts
        sched.step()
    assert lrs == pytest.approx([base * warmup_cosine_factor(s, 30, 150) for s in range(150)])
    assert lrs[0] == 0 and max(lrs) == pytest.approx(base)
    assert opt.param_groups[-1]["lr"] == pytest.approx(base * 1e-3)  # cosine to 0.001x at the end
    plain, none = build_optimizer(
        TrialConfig.from_dict({**MNIST1D, "optimizer": optimizer, "lr": 0.5}), build_model("mlp", (1, 40), 10), 15
    )
    assert none is None and plain.param_groups[-1]["lr"] == 0.5


def test_lars_warmup_is_the_recipe_on_lars():
    model = build_model("mlp", (1, 40), 10)
    named = TrialConfig.from_dict({**MNIST1D, "optimizer": "lars_warmup", "lr": 0.1, "epochs": 10})
    spelled = TrialConfig.from_dict(
        {**MNIST1D, "optimizer": "lars", "lr": 0.1, "epochs": 10, "warmup_epochs": 2, "lr_scaling": "linear_256"}
    )
    (a, sa), (b, sb) = build_optimizer(named, model, 15), build_optimizer(spelled, model, 15)
    for _ in range(40):
        assert a.param_groups[-1]["lr"] == b.param_groups[-1]["lr"]
        a.step(), b.step()
        sa.step(), sb.step()


# -- Barlow Twins --------------------------------------------------------------------------------------------------


def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g)


def test_barlow_twins_views_shapes_ranges_and_asymmetry():
    x = _images()
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    v1, v2 = barlow_twins_views(x, mean, std, torch.Generator().manual_seed(0))
    assert v1.shape == v2.shape == x.shape and v1.dtype == v2.dtype == torch.float32
    for v in (v1, v2):
        raw = v * std + mean  # back to [0, 1]
        assert raw.min() >= -1e-5 and raw.max() <= 1 + 1e-5
    assert not torch.allclose(v1, v2)
    # the first view is never solarised and always blurred: smoother than the raw images
    raw1 = v1 * std + mean
    assert raw1.diff(dim=-1).abs().mean() < (x.float() / 255).diff(dim=-1).abs().mean()


def test_barlow_twins_views_are_deterministic_per_seed():
    x = _images()
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    a = barlow_twins_views(x, mean, std, torch.Generator().manual_seed(3))
    b = barlow_twins_views(x, mean, std, torch.Generator().manual_seed(3))
    c = barlow_twins_views(x, mean, std, torch.Generator().manual_seed(4))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_barlow_twins_validates_through_the_probe():
    result, rows = _run({**BARLOW_TWINS, "ddp_devices": 2})
    assert all({"val_acc", "best_val_acc", "test_acc_at_best_val"} <= r.keys() for r in rows)
    assert math.isfinite(result["train_loss"])
    assert 0 < rows[-1]["val_acc"] <= 1 and rows[-1]["probe"] == "sgd"


def test_barlow_twins_loss_over_shares_standardises_each_share():
    from tvlars.barlow import barlow_twins_loss

    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(64, 8, generator=g), torch.randn(64, 8, generator=g)
    whole = barlow_twins_loss(z1, z2)
    assert barlow_twins_loss(z1, z2, shares=1) == whole
    # shifting one share's embeddings changes nothing when each share is standardised alone
    shifted = torch.cat([z1[:16] + 5.0, z1[16:]])
    assert barlow_twins_loss(shifted, z2, shares=4) == pytest.approx(
        float(barlow_twins_loss(z1, z2, shares=4)), rel=1e-5
    )
    assert barlow_twins_loss(shifted, z2) != pytest.approx(float(whole), rel=1e-3)
