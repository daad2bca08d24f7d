"""The trial trainer end to end on CPU: real data, real optimizers, no mocks."""

from __future__ import annotations

import math

import pytest

from tvlars.data import DatasetNotFoundError
from tvlars.schedules import paper_lr, warmup_cosine_factor
from tvlars.train import TrialConfig, build_optimizer, run

MNIST1D = {"dataset": "mnist1d", "model": "mlp", "batch_size": 250, "epochs": 3, "lr": 8.0, "seed": 0}
#: A small Barlow Twins run: a CNN on synthetic images, a small projector, a 10-epoch probe.
BARLOW_TWINS = {
    "task": "barlow_twins",
    "dataset": "synthetic",
    "dataset_options": {"n_train": 512, "n_test": 256, "image_size": 8},
    "model": "cnn",
    "batch_size": 128,
    "epochs": 2,
    "lr": 5.0,
    "projector_dims": [32, 32],
    "probe_epochs": 10,
}
REPORT_KEYS = {
    "epoch",
    "train_loss",
    "test_loss",
    "test_acc",
    "best_test_acc",
    "lr",
    "phi",
    "mean_trust_ratio",
    "images_per_s",
    "diverged",
}


def _run(config):
    rows = []
    result = run(config, rows.append)
    return result, rows


def test_mnist1d_tvlars_beats_chance_and_reports_every_epoch():
    result, rows = _run(MNIST1D)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(REPORT_KEYS <= r.keys() for r in rows)
    assert result["test_acc"] > 0.25  # chance is 0.10
    assert result["best_test_acc"] == max(r["test_acc"] for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert 0 < rows[0]["phi"] < 1 and rows[0]["mean_trust_ratio"] > 0 and rows[0]["images_per_s"] > 0
    assert result["epochs_run"] == 3 and not result["diverged"] and result["device"].startswith("cpu")


def test_same_seed_same_curve_other_seed_other_curve():
    _, a = _run({**MNIST1D, "epochs": 2})
    _, b = _run({**MNIST1D, "epochs": 2})
    _, c = _run({**MNIST1D, "epochs": 2, "seed": 1})
    strip = [{k: r[k] for k in ("train_loss", "test_loss", "test_acc", "mean_trust_ratio")} for r in a]
    assert strip == [{k: r[k] for k in ("train_loss", "test_loss", "test_acc", "mean_trust_ratio")} for r in b]
    assert [r["train_loss"] for r in a] != [r["train_loss"] for r in c]


def test_absurd_lr_diverges_within_one_epoch():
    result, rows = _run({**MNIST1D, "lr": 1e7, "epochs": 5})
    assert len(rows) == 1 and rows[0]["diverged"] is True and result["diverged"] is True
    assert not math.isfinite(rows[0]["train_loss"])
    assert rows[0]["step"] < 16  # stopped mid-epoch, at the first non-finite loss (16 steps per epoch)


@pytest.mark.parametrize("optimizer", ["lars", "lamb", "sgd", "adamw"])
def test_every_optimizer_trains(optimizer):
    lr = {"lars": 8.0, "lamb": 0.01, "sgd": 0.1, "adamw": 0.003}[optimizer]
    result, rows = _run({**MNIST1D, "optimizer": optimizer, "lr": lr, "epochs": 2})
    assert result["test_acc"] > 0.2
    assert (rows[0]["phi"] == 1.0) if optimizer == "lars" else rows[0]["phi"] is None


def test_lars_warmup_follows_the_paper_schedule():
    config = {**MNIST1D, "optimizer": "lars_warmup", "epochs": 5, "lr": 0.1}
    _, rows = _run(config)
    steps_per_epoch = 15  # ceil(3601 / 250): 399 of the 4000 held out (10 % per class), the last partial batch kept
    base = paper_lr(0.1, 250)
    for r in rows:  # warm-up for round(0.2 * 5) = 1 epoch, then cosine to 0.001x
        assert r["lr"] == pytest.approx(base * warmup_cosine_factor(r["epoch"] * steps_per_epoch, 15, 75))
    assert rows[0]["lr"] == pytest.approx(base)


def test_delay_epochs_become_tvlars_delay_in_steps():
    cfg = TrialConfig.from_dict({**MNIST1D, "delay_epochs": 2.5})
    from tvlars.models import build_model

    opt, sched = build_optimizer(cfg, build_model("mlp", (1, 40), 10), steps_per_epoch=16)
    assert opt.defaults["delay"] == 40 and sched is None


@pytest.mark.parametrize("steps_per_epoch", [3, 16, 113, 2712])
def test_lam_steps_and_delay_fraction_are_units_of_training(steps_per_epoch):
    """Equal ``lam_steps``/``delay_fraction``: the same φ at the same share of training, whatever the batch size."""
    from tvlars import phi
    from tvlars.models import build_model

    cfg = TrialConfig.from_dict({**MNIST1D, "epochs": 8, "lam_steps": 12.0, "delay_fraction": 0.25})
    opt, _ = build_optimizer(cfg, build_model("mlp", (1, 40), 10), steps_per_epoch=steps_per_epoch)
    total = 8 * steps_per_epoch
    assert opt.defaults["lam"] == pytest.approx(12.0 / total) and opt.defaults["delay"] == pytest.approx(total / 4)
    d = opt.defaults
    at = [phi(f * total, d["lam"], d["delay"], d["alpha"], d["gamma_min"]) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    # φ(progress) = 1 / (α + exp(lam_steps · (progress − delay_fraction))) with α = 1
    assert at == pytest.approx([1 / (1 + math.exp(12.0 * (f - 0.25))) for f in (0.0, 0.25, 0.5, 0.75, 1.0)])


def test_lam_steps_gives_one_phi_curve_over_epochs_at_two_batch_sizes():
    phis = [[r["phi"] for r in _run({**MNIST1D, "batch_size": bs, "lam_steps": 6.0})[1]] for bs in (50, 500)]
    assert phis[0] == pytest.approx(phis[1], rel=0.05)
    assert phis[0][-1] < 0.5 * phis[0][0]  # it decays: λ was scaled to the run's steps, not left tiny


@pytest.mark.parametrize(
    ("extra", "error"),
    [
        ({"lam_steps": 5.0, "lam": 1e-3}, "lam_steps or lam, not both"),
        ({"delay_fraction": 0.1, "delay_epochs": 1}, "delay_fraction or delay_epochs, not both"),
        ({"delay_fraction": 1.5}, "Invalid delay_fraction"),
        ({"lam_steps": -1.0}, "Invalid lam_steps"),
        ({"lam_steps": 5.0, "optimizer": "lars"}, r"lam_steps: optimizer .lars. does not take it \(.*: tvlars\)"),
    ],
)
def test_units_of_training_errors(extra, error):
    with pytest.raises(ValueError, match=error):
        TrialConfig.from_dict({**MNIST1D, **extra})


def test_micro_batches_accumulate_to_the_same_step():
    full, _ = _run({**MNIST1D, "epochs": 1})
    micro, _ = _run({**MNIST1D, "epochs": 1, "micro_batch_size": 50})
    assert micro["train_loss"] == pytest.approx(full["train_loss"], rel=1e-4)
    assert micro["test_acc"] == pytest.approx(full["test_acc"], abs=0.01)


def test_barlow_twins_reports_probe_accuracy():
    result, rows = _run(BARLOW_TWINS)
    assert [r["probe"] for r in rows] == ["ridge", "sgd"]
    assert rows[0]["test_loss"] is None
    assert result["test_acc"] > 0.2 and result["probe_best_acc"] >= result["test_acc"]  # 10 classes
    assert math.isfinite(result["train_loss"])


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ({"dataset": "mnist1d", "optimiser": "tvlars"}, r"Unknown trial config key\(s\): optimiser"),
        ({"optimizer": "adam"}, r"Invalid optimizer: 'adam' \(choose from adamw, lamb, lars, lars_warmup"),
        ({"batch_size": 0}, r"Invalid batch_size: 0"),
        ({"batch_size": 100, "micro_batch_size": 30}, r"Invalid micro_batch_size: 30"),
        ({"dataset": "imagenet"}, r"dataset 'imagenet' is not installed on host \S+ \(installed: cifar10, "),
        ({"model": "vit"}, r"model 'vit' is not installed on host \S+ \(installed: cnn, mlp, "),
        ({"model": "mlp", "stem": "imagenet"}, r"stem: model 'mlp' has no option 'stem' \(models that do: resnet18"),
        ({"model_options": {"depth": 3}}, r"Unknown option\(s\) for model 'mlp': depth \(accepted: hidden="),
        ({"dataset_options": {"n": 3}}, r"Unknown option\(s\) for dataset 'mnist1d': n \(accepted: num_samples=5000"),
        ({"lam": 1e-3, "optimizer": "lars"}, r"lam: optimizer 'lars' does not take it \(.*take it: tvlars\)"),
        ({"momentum": 0.9, "optimizer": "lamb"}, r"momentum: optimizer 'lamb' does not take it \(.*: lars, lars_warm"),
        ({"probe_lr": 0.1}, r"probe_lr: task 'classification' does not read it \(tasks that do: barlow_twins\)"),
        ({"batch_size": 8000}, r"Invalid batch_size: 8000 \(larger than the 3601 training examples\)"),  # 399 held out
        ({"device": "cuda:0"}, r"CUDA is not available"),
        ({"task": "mae"}, r"task 'mae' is not installed on host \S+ \(installed: barlow_twins, classification;"),
    ],
)
def test_bad_configs_are_clear_errors(config, match):
    with pytest.raises(ValueError, match=match):
        run({**MNIST1D, **config})


def test_missing_data_dir_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TVLARS_DATA_DIR", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py"):
        run({"dataset": "cifar10", "model": "resnet18", "epochs": 1})
