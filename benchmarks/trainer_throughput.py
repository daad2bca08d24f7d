"""Trainer throughput: our device-resident pipeline against an official-style DataLoader pipeline.

Both train the same model with TVLARS on CIFAR-shaped synthetic data (uint8, 3×32×32) with the official code's
augmentation (random crop with 4-pixel padding, horizontal flip, ±15° rotation). The official-style pipeline
applies those per sample on the CPU (PIL/numpy, as torchvision does) in ``torch.utils.data.DataLoader`` worker
processes; ours is ``tvlars.train.run``. Same run, epochs interleaved; the first epoch of each is warm-up.

Data share: the time the device loop spends waiting for a batch (DataLoader) or augmenting on the device (ours),
over the epoch's time.

    python benchmarks/trainer_throughput.py                  # CPU: small CNN, 4096 images
    python benchmarks/trainer_throughput.py --model resnet18 --images 50000 --batch-size 1024   # a GPU run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tvlars import TVLARS  # noqa: E402
from tvlars.data import load_dataset  # noqa: E402
from tvlars.models import build_model  # noqa: E402
from tvlars.pipeline import Augment, DeviceLoader  # noqa: E402
from tvlars.train import run  # noqa: E402

MEAN = np.array([0.4914, 0.4822, 0.4465], dtype=np.float32)
STD = np.array([0.2470, 0.2435, 0.2616], dtype=np.float32)


class OfficialStyleDataset(torch.utils.data.Dataset):
    """Per-sample CPU transforms in torchvision's order: RandomCrop(32, 4), flip, RandomRotation(15), ToTensor,
    Normalize."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int = 0) -> None:
        self.x, self.y = x, y  # (N, 3, 32, 32) uint8
        self.seed = seed

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        from PIL import Image

        rng = np.random.default_rng((self.seed, i, time.perf_counter_ns()))
        img = np.pad(self.x[i].transpose(1, 2, 0), ((4, 4), (4, 4), (0, 0)))
        r, c = rng.integers(0, 9, 2)
        img = img[r : r + 32, c : c + 32]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = Image.fromarray(np.ascontiguousarray(img)).rotate(rng.uniform(-15, 15), resample=Image.NEAREST)
        arr = (np.asarray(img, dtype=np.float32) / 255.0 - MEAN) / STD
        return torch.from_numpy(arr.transpose(2, 0, 1).copy()), int(self.y[i])


def official_style_epochs(args, data, device, epochs: int) -> list[tuple[float, float]]:
    """(images/s, data share) per epoch of a plain DataLoader training loop."""
    torch.manual_seed(0)
    model = build_model(args.model, (3, 32, 32), 10).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = TVLARS(model.parameters(), lr=1.0, foreach=cuda)
    loader = torch.utils.data.DataLoader(
        OfficialStyleDataset(data.train_x, data.train_y),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=cuda,
        persistent_workers=True,
    )
    out = []
    for _ in range(epochs):
        waited = 0.0
        start = time.perf_counter()
        t = time.perf_counter()
        n = 0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            if cuda:
                xb = xb.contiguous(memory_format=torch.channels_last)
                torch.cuda.synchronize()  # count the copy as data time
            waited += time.perf_counter() - t
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(xb).float(), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += len(xb)
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
        seconds = time.perf_counter() - start
        out.append((n / seconds, waited / seconds))
    return out


def ours_epochs(args, device, epochs: int) -> list[float]:
    rows = []
    run(
        {
            "dataset": "synthetic",
            "dataset_options": {"n_train": args.images, "n_test": 512, "image_size": 32},
            "model": args.model,
            "batch_size": args.batch_size,
            "epochs": epochs,
            "lr": 1.0,
            "rotation": 15.0,
            "augment": True,
            "device": str(device),
            "eval_batch_size": 512,
        },
        rows.append,
    )
    return [r["images_per_s"] for r in rows]


def ours_data_seconds(args, data, device) -> float:
    """Seconds per epoch our pipeline spends gathering and augmenting batches on the device, alone."""
    x = torch.from_numpy(data.train_x).to(device)
    y = torch.from_numpy(data.train_y).to(device)
    loader = DeviceLoader(
        x,
        y,
        args.batch_size,
        data.mean,
        data.std,
        augment=Augment(rotation=15.0),
        generator=torch.Generator(device).manual_seed(0),
        channels_last=device.type == "cuda",
    )
    times = []
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _batch in loader:
            pass
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def main() -> None:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="resnet18" if cuda else "cnn")
    parser.add_argument("--images", type=int, default=50_000 if cuda else 4096)
    parser.add_argument("--batch-size", type=int, default=1024 if cuda else 256)
    parser.add_argument("--epochs", type=int, default=3, help="per pipeline; the first is warm-up")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    args = parser.parse_args()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        torch.set_num_threads(2)
    data = load_dataset("synthetic", n_train=args.images, n_test=512, image_size=32)
    where = torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{where}: {args.model}, {args.images} CIFAR-shaped images, batch {args.batch_size}, {args.epochs} epochs")

    official = official_style_epochs(args, data, device, args.epochs)[1:]
    ours = ours_epochs(args, device, args.epochs)[1:]
    official_ips = statistics.median(ips for ips, _ in official)
    official_share = statistics.median(share for _, share in official)
    ours_ips = statistics.median(ours)
    epoch_seconds = args.images // args.batch_size * args.batch_size / ours_ips
    ours_share = ours_data_seconds(args, data, device) / epoch_seconds

    print(f"  official-style DataLoader: {official_ips:10.0f} images/s, data {official_share:6.1%} of step time")
    print(f"  ours (device pipeline):    {ours_ips:10.0f} images/s, data {ours_share:6.1%} of step time")
    print(f"  epoch time, ours: {epoch_seconds:.2f} s for {args.images} images")
    print(f"trainer_throughput: {ours_ips / official_ips:.2f}x ours/DataLoader pipeline (goal >= 3 on GPU)")


if __name__ == "__main__":
    main()
