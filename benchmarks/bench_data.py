"""Data pipeline throughput: our batched tensor loader vs a per-sample Dataset + DataLoader.

Both apply the same augmentation (random crop with padding, flip, ±15° rotation): the
baseline calls :class:`neuralign.data.Augment` on one sample at a time inside
``Dataset.__getitem__`` and lets ``DataLoader`` collate, as torchvision-style pipelines do.
Prints images/s of each and their ratio, measured in one run.
"""

from __future__ import annotations

import argparse

import torch
from _common import device_name, timed, write_rows
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from neuralign.data import Augment, TensorLoader, load_dataset


class PerSample(TorchDataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: Augment) -> None:
        self.images, self.labels, self.augment = images, labels, augment
        self.gen = torch.Generator().manual_seed(0)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images[i : i + 1].float().div(255.0)
        return self.augment(x, generator=self.gen)[0], self.labels[i]


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="synthetic")
    p.add_argument("--images", type=int, default=10000)
    p.add_argument("--batch-size", type=int, default=128)
    args = p.parse_args(argv)
    ds = load_dataset(args.dataset, "train")
    n = min(args.images, len(ds.labels))
    images, labels = ds.images[:n], ds.labels[:n]
    aug = Augment(crop_padding=4, flip=True, rotation=15.0)
    dev = torch.device("cpu")

    ours = TensorLoader(
        type(ds)(images, labels, ds.num_classes, ds.name, ds.mean, ds.std),
        batch_size=args.batch_size,
        shuffle=True,
        augment=aug,
        seed=0,
    )

    def run_ours() -> None:
        for _ in ours:
            pass

    base = DataLoader(PerSample(images, labels, aug), batch_size=args.batch_size, shuffle=True)

    def run_base() -> None:
        for _ in base:
            pass

    t_ours = timed(run_ours, dev, repeats=2)
    t_base = timed(run_base, dev, repeats=1)
    row = {
        "benchmark": "data_pipeline",
        "dataset": args.dataset,
        "images": n,
        "device": device_name(dev),
        "ours_img_per_s": round(n / t_ours, 1),
        "per_sample_img_per_s": round(n / t_base, 1),
        "speedup": round(t_base / t_ours, 2),
    }
    print(
        f"data pipeline ({args.dataset}, {n} images, augment on): tensor loader "
        f"{row['ours_img_per_s']} img/s, per-sample DataLoader {row['per_sample_img_per_s']} "
        f"img/s -> speed-up {row['speedup']}x"
    )
    write_rows("data_pipeline", [row])
    return [row]


if __name__ == "__main__":
    main()
