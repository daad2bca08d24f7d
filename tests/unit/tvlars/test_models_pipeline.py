"""Model shapes and the device-side augmentation."""

from __future__ import annotations

import pytest
import torch

from tvlars.barlow import BarlowTwins, barlow_twins_loss, ridge_probe_accuracy
from tvlars.models import MODELS, build_model, list_models, resnet18, resnet50
from tvlars.pipeline import Augment, DeviceLoader, augment_batch


@pytest.mark.parametrize(
    ("name", "stem", "shape", "n_params"),
    [
        ("resnet18", "cifar", (3, 32, 32), 11_173_962),
        ("resnet18", "imagenet", (3, 32, 32), 11_181_642),
        ("resnet34", "cifar", (3, 32, 32), None),
        ("resnet50", "cifar", (3, 32, 32), 23_520_842),
        ("resnet18", "cifar", (3, 64, 64), None),
        ("cnn", None, (1, 40), None),
        ("cnn", None, (1, 8, 8), None),
        ("mlp", None, (1, 40), None),
    ],
)
def test_output_shapes(name, stem, shape, n_params):
    options = {} if stem is None else {"stem": stem}
    model = build_model(name, shape, num_classes=10, **options).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
        feats = model.features(torch.randn(2, *shape))
    assert out.shape == (2, 10)
    assert feats.shape == (2, model.num_features)
    if n_params is not None:
        assert sum(p.numel() for p in model.parameters()) == n_params


def test_resnet_layouts():
    assert len(list(resnet18().parameters())) == 62
    imagenet = resnet18(stem="imagenet")
    assert imagenet.conv1.kernel_size == (7, 7) and isinstance(imagenet.maxpool, torch.nn.MaxPool2d)
    assert resnet18().conv1.kernel_size == (3, 3)
    assert resnet50(num_classes=100).fc.out_features == 100
    # torchvision's parameter names, so its checkpoints map one to one
    names = {n for n, _ in resnet18(stem="imagenet").named_parameters()}
    assert {"conv1.weight", "layer2.0.downsample.0.weight", "layer4.1.bn2.bias", "fc.weight"} <= names


def test_model_errors():
    with pytest.raises(ValueError, match=r"model 'vit' is not installed on host .*\(installed: cnn, mlp, "):
        build_model("vit", (3, 32, 32), 10)
    with pytest.raises(ValueError, match=r"Unknown option\(s\) for model 'mlp': stem \(accepted: hidden=\(256, 256\)"):
        build_model("mlp", (1, 40), 10, stem="cifar")
    with pytest.raises(ValueError, match=r"resnet18 needs images"):
        build_model("resnet18", (1, 40), 10)
    with pytest.raises(ValueError, match=r"Invalid stem: 'tiny'"):
        resnet18(stem="tiny")
    built_in = [e.name for e in MODELS.loaded() if e.source == "built-in"]
    assert built_in == ["cnn", "mlp", "resnet18", "resnet34", "resnet50"]
    assert set(built_in) <= set(list_models())  # and any installed plugins'


def test_model_options_come_from_the_builder():
    assert sum(p.numel() for p in build_model("mlp", (1, 40), 10, hidden=[8]).parameters()) == 40 * 8 + 8 + 8 * 10 + 10
    assert build_model("cnn", (1, 40), 10, width=4).num_features == 8


def _images(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def test_augmentation_keeps_shape_and_dtype_and_changes_images():
    x = _images()
    mean, std = torch.full((1, 3, 1, 1), 0.5), torch.full((1, 3, 1, 1), 0.25)
    g = torch.Generator().manual_seed(1)
    plain = augment_batch(x, Augment.none(), mean, std, g)
    for aug in (Augment(crop_padding=4, flip=False), Augment(crop_padding=0, flip=True), Augment(rotation=15.0)):
        out = augment_batch(x, aug, mean, std, g)
        assert out.shape == x.shape and out.dtype == torch.float32
        changed = (out - plain).abs().flatten(1).amax(1) > 1e-6
        assert changed.float().mean() > 0.3, aug  # most images differ from the un-augmented ones
        assert not changed.all() or aug.rotation or aug.crop_padding  # a flip leaves about half untouched
    torch.testing.assert_close(plain, (x.float() / 255 - 0.5) / 0.25)


def test_random_crop_is_a_shifted_window_with_zero_padding():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(200, 1, 1, 1) + 1
    from tvlars.pipeline import _random_crop

    out = _random_crop(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    # every crop is the 6x6 zero-padded image at some offset in 0..2: check against all 9 candidates
    padded = torch.nn.functional.pad(x[0], (1, 1, 1, 1))
    windows = {tuple(padded[0, r : r + 4, c : c + 4].flatten().tolist()) for r in range(3) for c in range(3)}
    seen = {tuple(o[0].flatten().tolist()) for o in out}
    assert seen <= windows and len(seen) == 9


def test_signal_shift_and_noise():
    x = torch.randn(32, 1, 40)
    mean, std = torch.zeros(1, 1, 1), torch.ones(1, 1, 1)
    out = augment_batch(x, Augment(crop_padding=0, flip=False, shift=3), mean, std, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # a circular shift keeps each row's values
    torch.testing.assert_close(out.sort(-1).values, x.sort(-1).values)


def test_device_loader_batches_and_shuffles():
    x, y = _images(100), torch.arange(100)
    loader = DeviceLoader(x, y, 32, (0.5,) * 3, (0.25,) * 3, generator=torch.Generator().manual_seed(0))
    batches = list(loader)
    assert len(loader) == 3 == len(batches)
    seen = torch.cat([yb for _, yb in batches])
    assert len(set(seen.tolist())) == 96  # drop_last: 4 rows unseen, no repeats
    assert seen.tolist() != sorted(seen.tolist())
    ordered = DeviceLoader(x, y, 32, (0.5,) * 3, (0.25,) * 3, shuffle=False, drop_last=False)
    assert [len(yb) for _, yb in ordered] == [32, 32, 32, 4]
    with pytest.raises(ValueError, match=r"Invalid batch_size: 200 \(larger than the 100 training examples\)"):
        DeviceLoader(x, y, 200, (0.5,) * 3, (0.25,) * 3)


def test_barlow_twins_loss_terms():
    z = torch.randn(256, 16)
    loss_same = barlow_twins_loss(z, z, off_diagonal_weight=0.0)
    assert loss_same.item() == pytest.approx(0.0, abs=1e-4)  # identical embeddings: zero on-diagonal term
    decorrelated = torch.linalg.qr(torch.randn(256, 16))[0] * 16  # orthogonal columns, zero-mean-ish
    full = barlow_twins_loss(decorrelated, decorrelated)
    assert full.item() < barlow_twins_loss(z, z).item()
    assert barlow_twins_loss(z, torch.randn(256, 16)).item() > 10  # unrelated views: large on-diagonal term


def test_barlow_twins_module_and_ridge_probe():
    bt = BarlowTwins(build_model("cnn", (1, 40), 10), projector_dims=(32, 16))
    assert bt(torch.randn(8, 1, 40)).shape == (8, 16)
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 8, generator=g) * 3
    y = torch.randint(0, 4, (400,), generator=g)
    f = centers[y] + torch.randn(400, 8, generator=g)
    acc = ridge_probe_accuracy(f[:300], y[:300], f[300:], y[300:], 4)
    assert acc.item() > 0.9
