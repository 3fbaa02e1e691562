"""Data-parallel training: real 2-process torchrun runs on the CPU (gloo) of the trainer and of `cdma train`."""
from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import _ddp_probe as probe
import numpy as np
import pytest
import torch

from src_model import build_model, load_checkpoint
from src_model.checkpoint import read_checkpoint
from src_model.data import TwoStreamPatches, load_images, load_pairs
from src_model.distributed import DistInfo, from_env, rank_seed
from src_model.trainer import CDMATrainer

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def torchrun(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node 2 ARGS`` (the venv's torchrun, else its module form)."""
    exe = Path(sys.executable).with_name("torchrun")
    launcher = [str(exe)] if exe.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([*launcher, "--standalone", "--nproc_per_node", "2", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT)


def test_placement_from_the_environment():
    assert from_env({}) == DistInfo(0, 1, 0) and not from_env({}).active
    info = from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.is_main, info.active) == (3, 4, 1, False, True)
    with pytest.raises(ValueError, match="RANK='x'"):
        from_env({"RANK": "x", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="not a valid placement"):
        from_env({"RANK": "2", "WORLD_SIZE": "2"})
    seeds = [rank_seed(5, r) for r in range(4)]
    assert seeds[0] == 5 and len(set(seeds)) == 4 and seeds == [rank_seed(5, r) for r in range(4)]


def test_cli_train_refuses_a_broken_placement(glas_dir, tmp_path):
    env = {**os.environ, "RANK": "one", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    r = subprocess.run([sys.executable, "-m", "src_model.cli", "train", "--data", str(glas_dir), "--steps", "1",
                        "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "RANK='one'" in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def probe_run(glas_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_probe")
    r = torchrun(str(REPO / "tests" / "_ddp_probe.py"), str(glas_dir), str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    records = [json.loads((out / f"rank{k}" / "record.json").read_text()) for k in range(2)]
    return out, records


def test_ranks_train_on_different_patches_yet_hold_the_same_weights(probe_run):
    out, (r0, r1) = probe_run
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["group_left"] and r1["group_left"]  # train() destroyed the process group it created
    # rank 1 alone asked to stop before its 4th step: both ranks stopped after step 3
    assert r0["steps_done"] == r1["steps_done"] == probe.CANCEL_AT and r0["cancelled"] and r1["cancelled"]
    assert len(r0["inputs"]) == len(r1["inputs"]) == probe.CANCEL_AT
    assert all(a != b for a, b in zip(r0["inputs"], r1["inputs"], strict=True))  # distinct data streams
    assert r0["params"] == r1["params"]  # started from different weights, trained on different data
    assert len(set(r0["params"])) == probe.CANCEL_AT  # the weights moved at every step
    assert r0["losses"] == r1["losses"]  # the logged loss is the mean over the ranks
    # only rank 0 wrote checkpoints; they hold the plain model's weights, as trained
    assert sorted(p.name for p in (out / "rank1").glob("*.pt")) == []
    assert sorted(p.name for p in (out / "rank0").glob("*.pt")) == ["final.pt", "last.pt"]
    data = read_checkpoint(out / "rank0" / "final.pt")
    assert data["step"] == probe.CANCEL_AT and data["provenance"]["world_size"] == 2
    model = load_checkpoint(out / "rank0" / "final.pt")
    assert probe.digest(p for _, p in model.named_parameters()) == r0["params"][-1]


def test_a_ddp_step_is_the_mean_of_the_ranks_gradient_steps(probe_run, glas_dir):
    """Recompute step 1 in this process: each rank's batch (rebuilt from its seed) gives a step from the
    shared initial weights; DDP's step must be their mean (SGD: linear in the gradient) and not either one."""
    out, records = probe_run
    torch.set_num_threads(1)
    cfg = probe.probe_config()
    torch.manual_seed(probe.INIT_SEED)
    init = build_model("lite")
    labelled, unlabelled = load_pairs(glas_dir, probe.LABELLED), load_images(glas_dir, probe.UNLABELLED)
    steps, losses = [], []
    for rank, record in enumerate(records):
        batch = next(iter(TwoStreamPatches(labelled, unlabelled, cfg.batch_labelled, cfg.batch_unlabelled,
                                           cfg.patch, rank_seed(cfg.seed, rank), cfg.augment)))
        assert probe.digest([batch["image"]]) == record["inputs"][0]  # the very batch that rank trained on
        trainer = CDMATrainer(copy.deepcopy(init), cfg, torch.device("cpu"))
        trainer.configure_optimizer()
        torch.manual_seed(rank_seed(cfg.seed, rank))  # the rank's dropout masks
        losses.append(trainer.train_step(batch)["loss"])
        steps.append({n: (p.detach() - dict(init.named_parameters())[n].detach()).numpy()
                      for n, p in trainer.model.named_parameters()})
    ddp = np.load(out / "rank0" / "params_step1.npz")
    names = list(ddp.files)
    start = {n: p.detach().numpy() for n, p in init.named_parameters()}
    got = np.concatenate([(ddp[n] - start[n]).ravel() for n in names])
    mean = np.concatenate([((steps[0][n] + steps[1][n]) / 2).ravel() for n in names])
    alone = np.concatenate([steps[0][n].ravel() for n in names])
    scale = np.abs(mean).max()
    assert scale > 0
    assert np.abs(got - mean).max() < 1e-3 * scale
    assert np.abs(got - alone).max() > 0.05 * scale
    assert records[0]["losses"][0] == pytest.approx(sum(losses) / 2, rel=1e-5)


def test_cdma_train_under_torchrun_writes_one_checkpoint_and_resumes(glas_dir, tmp_path):
    out = tmp_path / "run"
    args = ["-m", "src_model.cli", "train", "--data", str(glas_dir), "--labelled-ids", "train_1,train_2",
            "--patch", "64", "--batch", "1", "--device", "cpu", "--out", str(out)]
    r = torchrun(*args, "--steps", "3")
    assert r.returncode == 0, r.stderr[-3000:]
    done = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert done == [{"event": "done", "checkpoint": str(out / "final.pt"), "steps": 3}]  # rank 0 alone reports
    assert [line.split()[1] for line in r.stderr.splitlines() if line.startswith("[train]")] == ["1/3", "2/3", "3/3"]
    assert sorted(p.name for p in out.iterdir()) == ["final.pt", "last.pt", "split.json"]
    data = read_checkpoint(out / "final.pt")
    assert data["step"] == 3 and data["provenance"]["world_size"] == 2
    assert not any(k.startswith("module.") for k in data["state_dict"])
    load_checkpoint(out / "final.pt")
    r = torchrun(*args, "--steps", "5", "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert [line.split()[1] for line in r.stderr.splitlines() if line.startswith("[train]")] == ["4/5", "5/5"]
    assert read_checkpoint(out / "final.pt")["step"] == 5
