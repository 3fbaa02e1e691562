"""Run by tests/test_ddp.py under torchrun (not collected by pytest): a few DDP training steps that
record, on each rank, a digest of the batch the rank trained on and of its parameters after every step.

Usage: torchrun --standalone --nproc_per_node 2 tests/_ddp_probe.py DATA_DIR OUT_DIR

Each rank starts from different random weights (seed 100 + rank) and trains into OUT_DIR/rank<r>, so
the test can see that DDP broadcast rank 0's weights, that only rank 0 wrote checkpoints, and that
both ranks stopped together when only rank 1 asked to cancel (before its step CANCEL_AT + 1).
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from src_model import build_model
from src_model.data import AugmentConfig, load_images, load_pairs
from src_model.distributed import from_env
from src_model.progress import drain
from src_model.trainer import TrainConfig, TrainHook, train

LABELLED = ["train_1", "train_2"]
UNLABELLED = ["train_3", "train_5"]
INIT_SEED = 100
CANCEL_AT = 3


def probe_config() -> TrainConfig:
    """SGD with a constant rate: the first step is linear in the gradient, so the test can check that
    the ranks' step equals the mean of the steps each rank's batch gives alone."""
    return TrainConfig(steps=6, batch_labelled=2, batch_unlabelled=2, patch=64, optimizer="sgd", lr=1e-3,
                       lr_schedule="constant", warmup_steps=0, ramp="step", checkpoint_every=2, device="cpu",
                       seed=7, threads=1, augment=AugmentConfig(noise_p=0))


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Recorder(TrainHook):
    def __init__(self, out: Path) -> None:
        self.out = out
        self.inputs, self.params = [], []

    def extra_loss(self, trainer, x, logits, n_labelled):
        self.inputs.append(digest([x]))
        return {}

    def after_step(self, trainer):
        params = [p for _, p in trainer.model.named_parameters()]
        self.params.append(digest(params))
        if trainer.step == 1:
            np.savez(self.out / "params_step1.npz",
                     **{n: p.detach().numpy() for n, p in trainer.model.named_parameters()})


def main(data: Path, out: Path) -> None:
    info = from_env()
    out = out / f"rank{info.rank}"
    out.mkdir(parents=True)
    torch.manual_seed(INIT_SEED + info.rank)
    model = build_model("lite")
    recorder = Recorder(out)
    calls = {"n": 0}

    def cancel() -> bool:
        calls["n"] += 1
        return info.rank == 1 and calls["n"] > CANCEL_AT

    result = drain(train(model, load_pairs(data, LABELLED), load_images(data, UNLABELLED), probe_config(), out,
                         cancel=cancel, hooks=[recorder]))
    record = {"rank": info.rank, "world_size": info.world_size, "steps_done": result.steps_done,
              "cancelled": result.cancelled, "inputs": recorder.inputs, "params": recorder.params,
              "losses": [h["loss"] for h in result.history],
              "group_left": not torch.distributed.is_initialized()}
    (out / "record.json").write_text(json.dumps(record))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
