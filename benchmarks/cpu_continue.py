"""Continue training the bundled model on the CPU with a longer schedule (issue 8 item 5).

The bundled model (``src_model/bundled/cdma_lite_glas.pt``: 2300 GPU steps of the ``bundled`` row of
``benchmarks/gpu_train.py``) is trained further from its weights with the same recipe and data (every
GlaS training image but the 8 validation ones, labelled and unlabelled; the row's TrainConfig) except:
a lower peak learning rate (``--lr``, poly decay over the new steps), a fresh AdamW (the bundled file
holds no optimiser state), the unsupervised terms at full weight from step 0 (the bundled model ended
its ramp at w = 1), and a new data-stream seed (``--seed``, so the patches are not those of the first
run's opening steps). Checkpoints (weights + config + provenance) are written every ``--save-every``
steps as ``<out>/step_<k>.pt``.

  python benchmarks/cpu_continue.py time --batch 4 --steps 6           # s/step here
  python benchmarks/cpu_continue.py train --steps N --batch B --lr 5e-4 --out runs/cpu_continue
  python benchmarks/cpu_continue.py eval bundled runs/cpu_continue/step_*.pt --out /tmp/D_train/val
  python benchmarks/cpu_continue.py report --val /tmp/D_train/val --notes "..."   # results/cpu_continue.md/.json

``eval`` scores checkpoints (and the bundled model, ``bundled``) on the 8 validation images only with
``benchmarks/eval_gpu_run.py``'s ``score`` (tiled inference, mean of the three branches, raw and with
``src_model.postprocess.DEFAULT_INSTANCES``) and writes one JSON per checkpoint (skipping existing ones).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch
from _common import RESULTS, add_data_argument, require_glas
from eval_gpu_run import score
from gpu_train import row_setup

from src_model.checkpoint import bundled_model_path, load_model, save_checkpoint
from src_model.data import TwoStreamPatches, load_images, load_pairs, ssl_split
from src_model.evaluate import select_rows
from src_model.postprocess import DEFAULT_INSTANCES
from src_model.trainer import CDMATrainer

log = logging.getLogger("cpu_continue")
ROW = "bundled"


def continue_config(data: Path, steps: int, batch: int, patch: int, lr: float, seed: int):
    """(split, labelled ids, unlabelled ids, TrainConfig): the bundled row's recipe, continued."""
    split = ssl_split(data, 0.1, 8, 0)  # the split of the bundled model (seed 0; train_all = train - val)
    lab, unl, cfg = row_setup(ROW, split, steps, batch, patch, seed, "cpu", 0.0)
    # already trained to w = 1: no warm-up, no ramp; a lower peak lr, poly decay over the new steps
    cfg = replace(cfg, lr=lr, warmup_steps=0, ramp_steps=0, threads=1)
    return split, lab, unl, cfg


def make_trainer(args):
    split, lab, unl, cfg = continue_config(args.data, args.steps, args.batch, args.patch, args.lr, args.seed)
    torch.manual_seed(args.seed)
    model = load_model(args.init)
    trainer = CDMATrainer(model, cfg, torch.device("cpu"))
    trainer.configure_optimizer()
    stream = TwoStreamPatches(load_pairs(args.data, lab), load_images(args.data, unl), cfg.batch_labelled,
                              cfg.batch_unlabelled, cfg.patch, cfg.seed, cfg.augment)
    return split, lab, unl, cfg, trainer, iter(stream)


def cmd_time(args) -> int:
    """Train a few steps (throwaway) and print seconds per step, the first step excluded."""
    *_, trainer, it = make_trainer(args)
    trainer.train_step(next(it))
    t0 = time.perf_counter()
    for _ in range(args.steps):
        trainer.train_step(next(it))
    dt = (time.perf_counter() - t0) / args.steps
    print(json.dumps({"batch": f"{args.batch}+{args.batch}", "patch": args.patch, "s_per_step": round(dt, 2),
                      "steps_timed": args.steps, "load_avg": os.getloadavg(), "threads": torch.get_num_threads()}))
    return 0


def cmd_train(args) -> int:
    split, lab, unl, cfg, trainer, it = make_trainer(args)
    args.out.mkdir(parents=True, exist_ok=True)
    every = args.save_every or max(1, args.steps // 10)
    prov = {"benchmark": "cpu_continue", "row": ROW, "continued_from": str(args.init), "labelled_ids": lab,
            "unlabelled_ids": unl, "val_ids": split["val"], "data": "GlaS (research use only)",
            "n_labelled": len(lab), "n_unlabelled": len(unl), "fraction": split["fraction"],
            "hardware": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(), "nice": os.nice(0)}
    history = []
    t0 = time.time()
    while trainer.step < cfg.steps:
        m = trainer.train_step(next(it))
        s = trainer.step
        if s % 10 == 0:
            history.append({"step": s, "t": round(time.time() - t0, 1), "load1": os.getloadavg()[0],
                            **{k: round(v, 5) for k, v in m.items()}})
            log.info("step %d/%d %.1f s/step loss %.4f sup %.4f lr %.2e load %.2f", s, cfg.steps,
                     (time.time() - t0) / s, m["loss"], m["sup"], m["lr"], os.getloadavg()[0])
        if s % every == 0 or s == cfg.steps:
            trainer.model.eval()
            save_checkpoint(args.out / f"step_{s:05d}.pt", trainer.model, step=s,
                            provenance={**prov, "trainer": "CDMATrainer", "train_config": cfg.to_dict(),
                                        "continued_steps": s, "train_wall_s": round(time.time() - t0, 1)})
            trainer.model.train()
            (args.out / "history.json").write_text(json.dumps(history))
    log.info("done: %d steps in %.0f s", trainer.step, time.time() - t0)
    return 0


def cmd_eval(args) -> int:
    rows = select_rows(args.data, ids=ssl_split(args.data, 0.1, 8, 0)["val"])
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.checkpoints:
        path = bundled_model_path() if name == "bundled" else Path(name)
        dest = args.out / f"{'bundled' if name == 'bundled' else path.stem}.json"
        if dest.exists():
            continue
        t0 = time.perf_counter()
        res = score(path, args.data, rows, DEFAULT_INSTANCES, False)
        res["load_avg"] = os.getloadavg()
        dest.write_text(json.dumps(res, indent=1))
        a, p = res["raw"]["all"], res["post"]["all"]
        log.info("%s (%.0fs): dice %.4f f1 %.4f | post dice %.4f f1 %.4f", dest.stem, time.perf_counter() - t0,
                 a["dice"], a["f1"], p["dice"], p["f1"])
    return 0


def val_table(folder: Path) -> list:
    """Rows (name, step, raw all, post all, per-image post) of the eval JSONs in ``folder``, bundled first."""
    rows = []
    for f in sorted(folder.glob("*.json"), key=lambda f: (f.stem != "bundled", f.stem)):
        r = json.loads(f.read_text())
        rows.append({"name": f.stem, "step": r["step"], "raw": r["raw"]["all"], "post": r["post"]["all"],
                     "post_per_image": {p["id"]: round(p["dice"], 4) for p in r["post_per_image"]},
                     "post_f1_per_image": {p["id"]: round(p["f1"], 4) for p in r["post_per_image"]},
                     "postprocess": r["postprocess"], "load_avg": r.get("load_avg")})
    return rows


def cmd_report(args) -> int:
    """Write ``<name>.md`` / ``.json``: the validation table of ``eval``'s folder, the run's record."""
    rows = val_table(args.val)
    hist = json.loads((args.run / "history.json").read_text()) if (args.run / "history.json").exists() else []
    keys = ("dice", "f1", "object_dice", "object_hausdorff")
    lines = ["| checkpoint | continued steps | raw Dice | raw F1 | post Dice | post F1 | post obj. Dice"
             " | post obj. Hausdorff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        steps = "0 (shipped, 2300 GPU steps)" if r["name"] == "bundled" else str(r["step"])
        vals = [r["raw"]["dice"], r["raw"]["f1"]] + [r["post"][k] for k in keys]
        lines.append(f"| {r['name']} | {steps} | " + " | ".join(f"{v:.4f}" if i < 5 else f"{v:.2f}"
                                                              for i, v in enumerate(vals)) + " |")
    record = {"validation": rows, "history": hist, "notes": args.notes}
    out = args.results / args.name
    out.with_suffix(".json").write_text(json.dumps(record, indent=1))
    md = [f"# {args.name}: the bundled model trained further on the CPU (issue 8 item 5)", "",
          "Validation only (the 8 held-out training images), whole images, tiled inference (256 px, overlap 0.25),"
          " mean of the three branches; raw and post-processed with `src_model.postprocess.DEFAULT_INSTANCES` "
          f"({rows[0]['postprocess'] if rows else ''}).", "", *lines, "", args.notes, ""]
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("time", "train"):
        p = sub.add_parser(name)
        add_data_argument(p)
        p.add_argument("--init", type=Path, default=bundled_model_path())
        p.add_argument("--steps", type=int, required=True)
        p.add_argument("--batch", type=int, default=8)
        p.add_argument("--patch", type=int, default=256)
        p.add_argument("--lr", type=float, default=5e-4)
        p.add_argument("--seed", type=int, default=1)
        if name == "train":
            p.add_argument("--out", type=Path, required=True)
            p.add_argument("--save-every", type=int, default=0, help="default: 10 %% of the steps")
    p = sub.add_parser("eval")
    add_data_argument(p)
    p.add_argument("checkpoints", nargs="+", help="checkpoint paths, or 'bundled'")
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("report")
    add_data_argument(p)
    p.add_argument("--val", type=Path, required=True, help="eval's --out folder")
    p.add_argument("--run", type=Path, default=Path("runs/cpu_continue"), help="train's --out folder (history)")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--name", default="cpu_continue")
    p.add_argument("--notes", default="", help="a paragraph for the .md (the run, the load, the decision)")
    args = ap.parse_args(argv)
    require_glas(args.data, ap.prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    return {"time": cmd_time, "train": cmd_train, "eval": cmd_eval, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    raise SystemExit(main())
