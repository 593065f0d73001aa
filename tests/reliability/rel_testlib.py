"""Helpers of the reliability tests: tiny models, fixture paths, fuzz budget."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

#: Fast dataset for end-to-end runs: no sklearn import, a few hundred 8×8 images.
SYNTH = "synthetic:channels=1,size=8,classes=4,train=240,test=120"

#: Hypothesis examples per fuzz target (NEURALIGN_FUZZ_EXAMPLES raises it for long runs).
FUZZ_EXAMPLES = int(os.environ.get("NEURALIGN_FUZZ_EXAMPLES", "40"))


def tiny_mlp(hidden: int = 16, num_classes: int = 10, seed: int = 0) -> torch.nn.Module:
    """A 64-16-10 MLP for 8×8 grey images (``digits``-shaped)."""
    from neuralign.models import create_model

    torch.manual_seed(seed)
    return create_model(
        "mlp", in_channels=1, image_size=8, hidden=[hidden], num_classes=num_classes
    )


def run_config(name: str) -> str:
    """TOML of a small, fast `neuralign run` on SYNTH (2 MLP endpoints, line + Bezier)."""
    return f"""
name = {json.dumps(name)}
device = "cpu"
seed = 0
[data]
dataset = "{SYNTH}"
augment = false
batch_size = 32
[model]
arch = "mlp"
kwargs = {{hidden = [16]}}
[endpoints]
seeds = [0, 1]
epochs = 3
lr = 0.05
[curves]
kinds = ["line", "bezier"]
variants = ["unaligned", "correlation"]
epochs = 3
lr = 0.05
[eval]
points = 3
bn_subset = 100
plane = false
"""
