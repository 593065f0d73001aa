"""Endpoint-training throughput (images/s) of every zoo model on one device.

Times ``--steps`` SGD steps (forward, backward, update) on random 32×32 RGB batches after
warm-up steps; on CUDA with bf16 autocast and channels-last, as ``neuralign train`` does.
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F
from _common import device_name, timed, write_rows

from neuralign.device import select_device
from neuralign.models import create_model, split_logits

DEFAULT = ["mlp", "tinyten", "resnet20", "resnet32", "vgg11", "googlenet"]


def main(argv: list[str] | None = None) -> list[dict[str, object]]:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", nargs="*", default=DEFAULT)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--image-size", type=int, default=32)
    args = p.parse_args(argv)
    dev = select_device(args.device)
    amp = dev.type == "cuda"
    rows = []
    for name in args.models:
        kw = {"image_size": args.image_size} if name == "mlp" else {}
        model = create_model(name, num_classes=10, in_channels=3, **kw).to(dev)
        if amp:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = torch.rand(args.batch_size, 3, args.image_size, args.image_size, device=dev)
        if amp:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, 10, (args.batch_size,), device=dev)
        ctx = (
            (lambda: torch.autocast("cuda", dtype=torch.bfloat16))
            if amp
            else contextlib.nullcontext
        )

        def steps(k: int) -> None:
            model.train()
            for _ in range(k):
                with ctx():
                    out = model(x)
                    logits, aux = split_logits(out)
                    loss = F.cross_entropy(logits.float(), y) + sum(
                        0.3 * F.cross_entropy(a.float(), y) for a in aux
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        steps(2)
        t = timed(lambda: steps(args.steps), dev)
        ips = args.batch_size * args.steps / t
        n_params = sum(p.numel() for p in model.parameters())
        rows.append(
            {
                "benchmark": "train_throughput",
                "model": name,
                "params": n_params,
                "batch_size": args.batch_size,
                "amp_bf16": amp,
                "device": device_name(dev),
                "img_per_s": round(ips, 1),
            }
        )
        print(f"{name:10s} {n_params / 1e6:6.2f}M params  {ips:9.1f} img/s  ({device_name(dev)})")
    write_rows("train_throughput", rows)
    return rows


if __name__ == "__main__":
    main()
