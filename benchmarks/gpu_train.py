"""One time-bounded training run of the GlaS benchmark rows, for a shared GPU lease (issues 8 and 12).

Several of these run side by side on one GPU (``benchmarks/gpu_run.sh``). Each trains one row with the
recipe of ``benchmarks/glas_ssl.py`` (same split rule, same TrainConfig) but its step count is chosen
on the machine so that the run ends before ``--deadline``:

1. calibration: it trains a throwaway copy of the model and measures its speed over a window of
   ``--calibrate-until`` - ``--calibrate-from`` seconds that opens at ``--calibrate-from`` (a unix time
   shared by the whole run) or later, once all ``--ready-count`` trainings of the run are training (so
   all rows are measured under the full load), and writes its steps/s to ``--sync-dir``;
2. once every member of its group has written (or after ``--wait-s``), each member computes the same
   step count N = min over the group of (rate x time left x ``--safety``), rounded down to 100;
3. it restores the initial weights, restarts the data stream and trains N steps of the unchanged recipe
   (schedule, warm-up and ramp computed for N) from step 0.

Rows of one group therefore run the same number of steps, and each run is an ordinary N-step run
(``--steps N`` reproduces it without calibration). A run that reaches ``--deadline`` anyway stops there
and says so (``"stopped_by_deadline"``).

Outputs in ``--out``: ``last.pt`` (resumable), ``final.pt`` (with optimiser state); in ``--copy-to``:
``<name>.pt`` (weights + config + provenance only) and ``<name>.json`` (the record).

Rows: ``bundled`` (CDMA, all training images minus validation, labelled and unlabelled),
``bundled_stain`` (the same with HED stain jitter), ``bundled_noise`` (the same with the paper's feature noise),
``bundled_boundary`` (the same with boundary-aware
targets: ``TrainConfig.boundary_weight``), ``full`` (supervised only, same images);
``sup10`` / ``cdma10`` (10 % labelled, as glas_ssl.py), ``cdma10_release`` (cdma10 with
``TrainConfig.release``), ``cdma10_noise`` (cdma10 with the paper's feature noise on branches 2 and 3,
``MTNetConfig.feature_noise`` = ``--noise``), ``mt10`` (mean teacher, :mod:`src_model.mean_teacher`:
supervised loss + EMA-teacher consistency, CDMA's own terms off); ``sup5`` / ``cdma5`` / ``mt5`` /
``cdma5_noise`` / ``cdma5_release``: the same at 5 % labels; issue 12 section 2 (cdma10 with one change
each): ``cdma10_pool`` (the unlabelled images also at scales ``POOL_SCALES``: a pool of 3x the images,
never a test image), ``cdma10_w03`` / ``cdma10_w3`` (CDMA's unsupervised weights x0.3 / x3),
``cdma10_noramp`` (no warm-up, no ramp: the unsupervised terms at full weight from step 0),
``cdma10_slowramp`` (the same warm-up, the sigmoid ramp over 50 % of the steps instead of 20 %: ``RAMPS``).
``--max-steps`` caps the calibrated step count (the recipe's length).
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import math
import os
import platform
import re
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import src_model
from src_model import build_model, get_config
from src_model.checkpoint import save_checkpoint
from src_model.data import TwoStreamPatches, load_images, load_pairs, ssl_split
from src_model.mean_teacher import MeanTeacher
from src_model.trainer import CDMATrainer, TrainConfig, resolve_device

ROOT = Path(__file__).resolve().parents[1]

log = logging.getLogger("gpu_train")
ROWS = ("bundled", "bundled_stain", "bundled_noise", "bundled_boundary", "full", "sup10", "cdma10", "cdma10_release",
        "cdma10_noise", "mt10", "sup5", "cdma5", "mt5", "cdma5_noise", "cdma10_pool", "cdma10_w03", "cdma10_w3",
        "cdma10_noramp", "cdma10_slowramp", "cdma5_release")
POOL_SCALES = (0.75, 1.5)  # cdma10_pool: each unlabelled image also at these scales
WEIGHT_SCALES = {"cdma10_w03": 0.3, "cdma10_w3": 3.0}  # cdma10_w*: CDKD and entropy weights x this
# cdma10_*ramp: (warm-up, ramp) as fractions of the steps; the recipe's is (0.1, 0.2)
RAMPS = {"cdma10_noramp": (0.0, 0.0), "cdma10_slowramp": (0.1, 0.5)}
BOUNDARY = dict(boundary_weight=4.0, boundary_radius=8)  # bundled_boundary: CE weight 5 within 8 px of two glands
# --arch wide: the lite preset about twice as wide (1.8 M parameters, 7.3 MB; a 320-px tile costs ~1.5x on a CPU)
ARCHS = {"lite": {}, "wide": dict(widths=(32, 64, 128, 192), stem_width=32, aspp_channels=96, low_level_channels=32,
                                  decoder_channels=64)}


def row_fraction(row: str) -> float:
    """Labelled fraction of a row: 5 % for ``sup5``, ``cdma5_noise``, ..., else 10 % (bundled rows use train_all)."""
    m = re.match(r"[a-z]+(\d+)", row)
    return 0.05 if m and m.group(1) == "5" else 0.1


def scaled_pool(images, scales=POOL_SCALES) -> list:
    """The images, then each again resized by every factor of ``scales`` (bicubic): a larger unlabelled pool."""
    out = list(images)
    for f in scales:
        for img in images:
            h, w = img.shape[:2]
            size = (max(1, round(w * f)), max(1, round(h * f)))
            out.append(np.asarray(Image.fromarray(img).resize(size, Image.BICUBIC)))
    return out


def row_hooks(row: str, model) -> list:
    """Training hooks of a row: the mean teacher for the ``mt*`` rows (a fresh teacher copied from ``model``)."""
    return [MeanTeacher(model)] if row.startswith("mt") else []



def check_split(split: dict, seed: int) -> None:
    """Where glas_ssl.py recorded the split of this seed (10 % labels), ours must be the same."""
    if split["fraction"] != 0.1:
        return
    rec = ROOT / "benchmarks" / "results" / "glas_ssl" / ("split.json" if seed == 0 else f"split_seed{seed}.json")
    if rec.exists():
        old = json.loads(rec.read_text())
        for key in ("labelled", "val", "unlabelled", "train_all"):
            if old[key] != split[key]:
                raise SystemExit(f"split of seed {seed} differs from {rec} in {key!r}")


def row_setup(row: str, split: dict, steps: int, batch: int, patch: int, seed: int, device: str,
              stain: float):
    """(labelled ids, unlabelled ids, TrainConfig) of a row."""
    if row.startswith("bundled"):
        lab, unl, unsup = split["train_all"], split["train_all"], True
    elif row == "full":
        lab, unl, unsup = split["train_all"], [], False
    elif row in ("sup10", "sup5"):
        lab, unl, unsup = split["labelled"], [], False
    elif row in ROWS:
        lab, unl, unsup = split["labelled"], split["unlabelled"], True
    else:
        raise SystemExit(f"unknown row {row!r}; valid: {', '.join(ROWS)}")
    common = dict(batch_labelled=batch, batch_unlabelled=batch, patch=patch, unsupervised=unsup, seed=seed,
                  device=device, checkpoint_every=0)
    if row in ("cdma10_release", "cdma5_release"):
        cfg = TrainConfig.release(steps, **common)
    else:  # the recipe of glas_ssl.py's run_row
        cfg = TrainConfig(steps=steps, warmup_steps=steps // 10, ramp_steps=steps // 5, **common)
    if row == "bundled_stain":
        cfg.augment = replace(cfg.augment, stain_jitter=stain)
    if row == "bundled_boundary":
        cfg = replace(cfg, **BOUNDARY)
    if row in RAMPS:
        warm, ramp = RAMPS[row]
        cfg = replace(cfg, warmup_steps=int(steps * warm), ramp_steps=int(steps * ramp))
    if row in WEIGHT_SCALES:
        f = WEIGHT_SCALES[row]
        cfg = replace(cfg, cdkd_weight=cfg.cdkd_weight * f, ent_weight=cfg.ent_weight * f)
    if row.startswith("mt"):  # mean teacher alone: the unlabelled patches reach the model, CDMA's terms are off
        cfg = replace(cfg, cdkd_weight=0.0, ent_weight=0.0)
    return lab, unl, cfg


def agree_on_steps(sync: Path, name: str, group_size: int, rate: float, deadline: float, safety: float,
                   wait_s: float, state: dict, max_steps: int = 0):
    """Write our projection once; return (N, records) when the group has written, None while waiting."""
    mine = sync / f"{name}.json"
    if "since" not in state:
        now = time.time()
        proj = rate * max(0.0, deadline - now) * safety
        tmp = sync / f"{name}.tmp"
        tmp.write_text(json.dumps({"name": name, "rate": rate, "time": now, "projected": proj}))
        tmp.replace(mine)
        state["since"] = now
    files = sorted(sync.glob("*.json"))
    if len(files) < group_size and time.time() - state["since"] < wait_s:
        return None
    recs = [json.loads(f.read_text()) for f in files]
    n = max(100, int(min(r["projected"] for r in recs)) // 100 * 100)
    return (min(n, max_steps) if max_steps else n), recs


def make_loader(data, workers: int, device: torch.device):
    return torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, pin_memory=device.type == "cuda",
                                       persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None)


def calibrate(args, name, row_cfg, model, device, data) -> dict:
    """Train a throwaway copy in the calibration window; return the group's agreed step count and the record."""
    # the unsupervised terms (and hooks) on from the start, so the measured step costs what a trained step costs
    trainer = CDMATrainer(model, replace(row_cfg, warmup_steps=0), device, row_hooks(args.row, model))
    trainer.configure_optimizer()
    sync = args.sync_dir
    sync.mkdir(parents=True, exist_ok=True)
    it = iter(make_loader(data, args.workers, device))
    ready = sync.parent / "ready"  # every training of the run, all groups: the window opens when all run
    ready.mkdir(parents=True, exist_ok=True)
    window = max(8.0, args.calibrate_until - args.calibrate_from)
    t0 = s0 = None
    state: dict = {}
    while True:
        try:
            trainer.train_step(next(it))
        except FloatingPointError:
            pass  # counted as a step all the same: it cost what a step costs
        now = time.time()
        if trainer.step == 10:
            (ready / name).touch()
        if t0 is None and trainer.step >= 10 and now >= args.calibrate_from and (
                len(list(ready.iterdir())) >= args.ready_count or now >= args.calibrate_from + args.wait_s):
            t0, s0 = now, trainer.step
        if t0 is None or now < t0 + window:
            continue
        if "rate" not in state:
            state["rate"] = (trainer.step - s0) / (now - t0)
        got = agree_on_steps(sync, name, args.group_size, state["rate"], args.deadline, args.safety, args.wait_s,
                             state, args.max_steps)
        if got is not None:
            n, recs = got
            log.info("calibrated: %.2f steps/s here (%d throwaway steps); group of %d agrees on %d steps",
                     state["rate"], trainer.step, len(recs), n)
            del it  # the throwaway stream's workers stop here
            gc.collect()
            return {"rate_steps_per_s": round(state["rate"], 3), "throwaway_steps": trainer.step, "steps": n,
                    "group": [{k: r[k] for k in ("name", "rate", "projected")} for r in recs],
                    "window_start": t0, "calibration_end": time.time()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--row", required=True, choices=ROWS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", help="run name (default: row, with _seed<k> for seeds other than 0)")
    ap.add_argument("--preset", default="lite")
    ap.add_argument("--arch", default="lite", choices=sorted(ARCHS), help="widths on top of --preset (ARCHS)")
    ap.add_argument("--batch", type=int, default=8, help="patches per stream per batch")
    ap.add_argument("--patch", type=int, default=256)
    ap.add_argument("--stain", type=float, default=0.1, help="HED stain jitter of bundled_stain")
    ap.add_argument("--noise", type=float, default=0.3, help="feature noise of the *_noise rows (the paper's 0.3)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (no calibration)")
    ap.add_argument("--max-steps", type=int, default=0, help="cap of the calibrated step count (0 = none)")
    ap.add_argument("--deadline", type=float, default=0, help="unix time by which training must stop")
    ap.add_argument("--calibrate-from", type=float, default=0, help="unix time: calibration window start")
    ap.add_argument("--calibrate-until", type=float, default=0, help="unix time: calibration window end")
    ap.add_argument("--safety", type=float, default=0.92)
    ap.add_argument("--sync-dir", type=Path, help="rendezvous folder of the step-count group")
    ap.add_argument("--group-size", type=int, default=1)
    ap.add_argument("--wait-s", type=float, default=30.0, help="longest wait for the group's other members")
    ap.add_argument("--ready-count", type=int, default=1,
                    help="trainings of the whole run (all groups) that must be running before the window opens")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--copy-to", type=Path, required=True)
    ap.add_argument("--save-every", type=int, default=1000)
    args = ap.parse_args(argv)
    name = args.name or (args.row if args.seed == 0 else f"{args.row}_seed{args.seed}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s " + name + " %(message)s")
    t_start = time.time()
    torch.set_num_threads(1)
    torch.backends.cudnn.benchmark = True
    if not args.steps and not (args.deadline and args.sync_dir):
        raise SystemExit("give --steps, or --deadline and --sync-dir (calibration)")

    split = ssl_split(args.data, row_fraction(args.row), 8, args.seed)
    check_split(split, args.seed)
    lab_ids, unl_ids, cfg = row_setup(args.row, split, args.steps or 100000, args.batch, args.patch, args.seed,
                                      args.device, args.stain)
    device = resolve_device(cfg.device)
    torch.manual_seed(args.seed)
    noise = {"feature_noise": args.noise} if args.row.endswith("_noise") else {}
    mcfg = get_config(args.preset, **ARCHS[args.arch], **noise)
    model = build_model(mcfg)
    init_state = copy.deepcopy(model.state_dict())
    init_rng = torch.get_rng_state(), (torch.cuda.get_rng_state_all() if device.type == "cuda" else None)
    unl_images = load_images(args.data, unl_ids)
    if args.row.endswith("_pool"):
        unl_images = scaled_pool(unl_images)
    data = TwoStreamPatches(load_pairs(args.data, lab_ids), unl_images, cfg.batch_labelled,
                            cfg.batch_unlabelled if cfg.unsupervised else 0, cfg.patch, cfg.seed, cfg.augment,
                            cfg.boundary_weight, cfg.boundary_radius)
    log.info("%d labelled, %d unlabelled, batch %d+%d, patch %d, %s, engine %s, setup %.1fs", len(lab_ids),
             len(unl_ids), cfg.batch_labelled, cfg.batch_unlabelled if cfg.unsupervised else 0, cfg.patch, device,
             Path(src_model.__file__).parent, time.time() - t_start)
    calib = {"fixed_steps": True}
    if not args.steps:
        calib = calibrate(args, name, cfg, model, device, data)
        _, _, cfg = row_setup(args.row, split, calib["steps"], args.batch, args.patch, args.seed, args.device,
                              args.stain)
        model.load_state_dict(init_state)  # the throwaway training is undone: weights and norm statistics,
        torch.set_rng_state(init_rng[0])  # and the random state (dropout) as after building the model
        if init_rng[1] is not None:
            torch.cuda.set_rng_state_all(init_rng[1])

    prov = {"benchmark": "gpu_train", "row": args.row, "labelled_ids": lab_ids, "unlabelled_ids": unl_ids,
            "val_ids": split["val"], "data": "GlaS (research use only)", "n_labelled": len(lab_ids),
            "n_unlabelled": len(unl_ids), "fraction": split["fraction"]}
    trainer = CDMATrainer(model, cfg, device, row_hooks(args.row, model))  # a fresh teacher from the initial weights
    trainer.configure_optimizer()
    it = iter(make_loader(data, args.workers, device))  # a fresh stream: as a plain --steps run
    history = []
    t_train = time.time()
    stopped_by_deadline = diverged = False
    bad_steps = 0
    while trainer.step < cfg.steps:
        if args.deadline and time.time() > args.deadline:
            stopped_by_deadline = True
            log.warning("deadline reached at step %d of %d", trainer.step, cfg.steps)
            break
        try:
            m = trainer.train_step(next(it))
        except FloatingPointError as exc:  # fp16 overflow: GradScaler skipped the update; give up only if it persists
            bad_steps += 1
            log.warning("%s (%d in a row)", exc, bad_steps)
            if bad_steps >= 20:
                diverged = True
                break
            continue
        bad_steps = 0
        s = trainer.step
        if s % 50 == 0:
            history.append({"step": s, "t": round(time.time() - t_train, 2), **{k: round(v, 5) for k, v in m.items()}})
        if s % 500 == 0:
            log.info("step %d/%d %.2f steps/s loss %.4f sup %.4f w %.2f lr %.2e", s, cfg.steps,
                     s / (time.time() - t_train), m["loss"], m["sup"], m["w"], m["lr"])
        if args.save_every and s % args.save_every == 0 and s < cfg.steps:
            trainer.save(args.out / "last.pt", prov)
    wall = time.time() - t_train
    prov.update(steps_calibration=calib, stopped_by_deadline=stopped_by_deadline, diverged=diverged,
                train_wall_s=round(wall, 1))
    trainer.save(args.out / "final.pt", prov)
    model.eval()
    args.copy_to.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.copy_to / f"{name}.pt", model, step=trainer.step,
                    provenance={**prov, "trainer": "CDMATrainer", "train_config": cfg.to_dict()})
    hw = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine()
    record = {"name": name, "row": args.row, "seed": args.seed, "preset": args.preset, "arch": args.arch,
              "params": sum(p.numel() for p in model.parameters()), "steps": trainer.step,
              "fraction": split["fraction"], "feature_noise": mcfg.feature_noise,
              "hooks": [type(h).__name__ for h in trainer.hooks],
              "planned_steps": cfg.steps, "stopped_by_deadline": stopped_by_deadline, "diverged": diverged,
              "train_wall_s": round(wall, 1),
              "total_wall_s": round(time.time() - t_start, 1), "steps_per_s": round(trainer.step / max(wall, 1e-9), 2),
              "batch": f"{cfg.batch_labelled}+{cfg.batch_unlabelled if cfg.unsupervised else 0}", "patch": cfg.patch,
              "n_labelled": len(lab_ids), "n_unlabelled": len(unl_ids), "unlabelled_pool": len(unl_images),
              "unsupervised": cfg.unsupervised,
              "train_config": cfg.to_dict(), "calibration": calib, "hardware": hw, "workers": args.workers,
              "cpu_count": os.cpu_count(), "torch": str(torch.__version__), "history": history,
              "finite": all(math.isfinite(h["loss"]) for h in history)}
    (args.copy_to / f"{name}.json").write_text(json.dumps(record, indent=1))
    log.info("done: %d steps in %.0fs (%.2f steps/s)", trainer.step, wall, trainer.step / max(wall, 1e-9))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
