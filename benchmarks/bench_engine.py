"""Engine benchmark on this CPU: training step time, loss overhead, tiled inference, peak memory.

Usage::

    python benchmarks/bench_engine.py [--quick] [--presets lite paper] [--data GLAS]

``--data``: the GlaS folder (images/, masks/, split.csv); default ``$CDMA_GLAS``, else
``../shared/data/glas`` next to the repository. Without it the benchmark stops at once (exit code 2).

Each preset runs in its own subprocess (so peak memory is per preset). Results go to
``benchmarks/results/engine.json`` and ``benchmarks/results/engine.md``.

Measured per preset:
(a) a training step: 8 labelled + 8 unlabelled 256x256 GlaS patches, forward, ``cdma_loss``
    (weight 1: all three losses), backward, SGD (Nesterov) step; median after a warm-up;
(b) the same step with ``benchmarks/reference_losses.py`` (checked equal to 1e-5 first), and the
    loss alone (forward + backward from fixed logits), both as ratio ours / reference;
(c) whole-image tiled inference (``predict``: default tiling 320/0.2, also 256/0.25 and bf16; all three branches) on a
    real GlaS image, Mpx/s = image pixels / wall time, plus CPU time and the plain (unfolded) model;
(d) peak resident memory (ru_maxrss) after inference and after training.
Wall times on a shared machine depend on its load, so the 1-minute load average is recorded.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import add_data_argument, glas_ids, machine_info, require_glas, write_results

LOG = logging.getLogger("bench_engine")


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _batch(data: Path, n_lab: int, n_unlab: int, size: int, seed: int):
    """16 random 256x256 crops of GlaS training images; masks binarised (gland > 0)."""
    import numpy as np
    import torch

    from src_model.io import read_image, read_mask

    rng = np.random.default_rng(seed)
    names = [f"{i}.png" for i in glas_ids(data)[:n_lab + n_unlab]]
    xs, ys = [], []
    for name in names:
        img, mask = read_image(data / "images" / name), read_mask(data / "masks" / name)
        y0 = rng.integers(0, img.shape[0] - size + 1)
        x0 = rng.integers(0, img.shape[1] - size + 1)
        xs.append(img[y0:y0 + size, x0:x0 + size])
        ys.append(mask[y0:y0 + size, x0:x0 + size] > 0)
    x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(np.stack(ys)).long()
    return x, y


def _check_reference(logits, target, n_lab) -> float:
    """Largest difference between our losses and the reference, in values and logit gradients."""
    from reference_losses import reference_cdma_loss

    from src_model.losses import cdma_loss

    worst = 0.0
    grads = []
    for fn in (cdma_loss, reference_cdma_loss):
        zs = [z.detach().clone().requires_grad_(True) for z in logits]
        out = fn(zs, target, n_lab, 1.0)
        out["loss"].backward()
        grads.append((out, [z.grad for z in zs]))
    (ours, g_ours), (ref, g_ref) = grads
    for key in ("loss", "sup", "cdkd", "ent"):
        worst = max(worst, abs(float(ours[key].detach()) - float(ref[key].detach())))
    for a, b in zip(g_ours, g_ref, strict=True):
        worst = max(worst, float((a - b).abs().max()) * a[:, 0].numel())  # gradients of pixel means, per pixel
    if worst > 1e-5:
        raise AssertionError(f"reference losses differ from src_model.losses by {worst:.3g} (> 1e-5)")
    return worst


def _timeit(fn, reps: int) -> list:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def worker(preset: str, quick: bool, data: Path, threads: int = 0) -> dict:
    """Run all measurements for one preset in this process; return a JSON-able dict."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from reference_losses import reference_cdma_loss

    from src_model import build_model
    from src_model.inference import predict
    from src_model.io import read_image
    from src_model.losses import cdma_loss

    torch.manual_seed(0)
    paper = preset == "paper"
    res: dict = {"preset": preset, "threads": torch.get_num_threads(), "load_start": os.getloadavg()[0]}
    model = build_model(preset)
    res["parameters_M"] = sum(p.numel() for p in model.parameters()) / 1e6

    # (c) inference first, so that the first memory reading is the inference peak
    image = read_image(data / "images" / "testA_1.png")
    npx = image.shape[0] * image.shape[1]
    model.eval()
    n_inf = 1 if paper else (2 if quick else 4)
    if not paper:  # a paper-preset call takes many seconds: one-time costs do not matter there
        predict(model, image)  # warm-up
    variants = [("mean", {}), ("mean_256", {"tile": 256, "overlap": 0.25}), ("mean_bf16", {"precision": "bf16"}),
                ("branch1", {"branch": 1}), ("mean_plain_model", {"fast": False})]
    for key, kw in variants[:1] if paper else variants:  # paper: one slow call is enough
        walls, cpus = [], []
        for _ in range(n_inf if key == "mean" else max(1, n_inf // 2)):
            c, t = time.process_time(), time.perf_counter()
            predict(model, image, **kw)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
        res[f"infer_{key}"] = {"wall_s_median": statistics.median(walls), "wall_s_min": min(walls),
                               "mpx_per_s": npx / statistics.median(walls) / 1e6,
                               "mpx_per_s_best": npx / min(walls) / 1e6,
                               "cpu_s_median": statistics.median(cpus), "reps": len(walls)}
        LOG.info("%s infer %s: %.2f Mpx/s", preset, key, res[f"infer_{key}"]["mpx_per_s"])
    res["infer_image"] = {"name": "testA_1.png", "height": image.shape[0], "width": image.shape[1]}
    res["peak_rss_mb_after_inference"] = _maxrss_mb()

    # (a, b) training steps
    model.train()
    x, y = _batch(data, 8, 8, 256, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    with torch.no_grad():
        logits = model(x)
    res["max_abs_diff_ours_vs_reference"] = _check_reference(logits, y, 8)

    def step(loss_fn):
        opt.zero_grad(set_to_none=True)
        out = loss_fn(model(x), y, 8, 1.0)
        out["loss"].backward()
        opt.step()

    reps = (1 if quick else 2) if paper else (2 if quick else 5)
    step(cdma_loss)
    step(reference_cdma_loss)  # warm-up both
    ours, ref = [], []
    for _ in range(reps):  # interleaved, so that load changes hit both alike
        ours += _timeit(lambda: step(cdma_loss), 1)
        ref += _timeit(lambda: step(reference_cdma_loss), 1)
    res["train_step_s"] = {"ours_median": statistics.median(ours), "reference_median": statistics.median(ref),
                           "ours": ours, "reference": ref,
                           "ratio_ours_over_reference": statistics.median(ours) / statistics.median(ref)}
    LOG.info("%s train step: ours %.2fs, reference %.2fs", preset, res["train_step_s"]["ours_median"],
             res["train_step_s"]["reference_median"])

    # the loss alone (forward + backward from fixed logits): where the two implementations differ
    fixed = [z.detach() for z in logits]

    def loss_only(loss_fn):
        zs = [z.clone().requires_grad_(True) for z in fixed]
        loss_fn(zs, y, 8, 1.0)["loss"].backward()

    loss_only(cdma_loss)
    loss_only(reference_cdma_loss)
    lo, lr_ = [], []
    for _ in range(3 if quick else 7):
        lo += _timeit(lambda: loss_only(cdma_loss), 1)
        lr_ += _timeit(lambda: loss_only(reference_cdma_loss), 1)
    res["loss_only_s"] = {"ours_median": statistics.median(lo), "reference_median": statistics.median(lr_),
                          "ratio_ours_over_reference": statistics.median(lo) / statistics.median(lr_)}
    res["peak_rss_mb_after_training"] = _maxrss_mb()
    res["load_end"] = os.getloadavg()[0]
    return res


def to_markdown(info: dict, results: dict, quick: bool) -> str:
    lines = [f"# Engine benchmark{' (quick)' if quick else ''}", "",
             f"CPU: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
             f"Python {info['python']}, {info['date']}; load average at start {info['load_avg_1_5_15'][0]:.2f} "
             f"(shared machine: wall times grow with load).", "",
             "| preset | params (M) | train step ours (s) | train step reference (s) | ratio | loss only ratio "
             "| infer mean (Mpx/s) | infer mean, 256/0.25 tiles | infer mean, bf16 | infer branch 1 "
             "| infer plain model | peak RSS infer / train (MB) | load start / end |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for preset, r in results.items():
        if "error" in r:
            lines.append(f"| {preset} | error: {r['error']} |" + " |" * 11)
            continue
        t = r["train_step_s"]
        mpx = {k: (f"{r[k]['mpx_per_s']:.2f}" if k in r else "-")
               for k in ("infer_mean", "infer_mean_256", "infer_mean_bf16", "infer_branch1", "infer_mean_plain_model")}
        lines.append(
            f"| {preset} | {r['parameters_M']:.2f} | {t['ours_median']:.2f} | {t['reference_median']:.2f} "
            f"| {t['ratio_ours_over_reference']:.2f} | {r['loss_only_s']['ratio_ours_over_reference']:.2f} "
            f"| {mpx['infer_mean']} | {mpx['infer_mean_256']} | {mpx['infer_mean_bf16']} | {mpx['infer_branch1']} "
            f"| {mpx['infer_mean_plain_model']} "
            f"| {r['peak_rss_mb_after_inference']:.0f} / {r['peak_rss_mb_after_training']:.0f} "
            f"| {r['load_start']:.2f} / {r['load_end']:.2f} |")
    lines += ["", "Training step: 8 labelled + 8 unlabelled 256x256 GlaS patches, all three losses (weight 1), "
              "backward, SGD step; median of interleaved repetitions after one warm-up. Inference: "
              "`predict()` on testA_1.png (775 x 522), all three branches, default tiling (320-px tiles, overlap "
              "0.2), also with the released evaluation tiling (256, 0.25) and with bf16 autocast; Mpx/s = image "
              "pixels / wall time (median); the lite model is randomly initialised (speed does not depend on "
              "the weights). Reference losses agree with src_model.losses to 1e-5 (checked before timing).", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--presets", nargs="+", default=["lite", "paper"])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    add_data_argument(parser)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    data = require_glas(args.data, parser.prog).resolve()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.worker:
        json.dump(worker(args.worker, args.quick, data, args.threads), sys.stdout)
        return 0
    results = {}
    for preset in args.presets:
        cmd = [sys.executable, __file__, "--worker", preset, "--threads", str(args.threads), "--data", str(data)]
        cmd += ["--quick"] if args.quick else []
        LOG.info("running %s", " ".join(cmd))
        proc = subprocess.run(cmd, capture_output=True, text=True)
        sys.stderr.write(proc.stderr)
        if proc.returncode:
            results[preset] = {"error": f"exit {proc.returncode}"}
            continue
        results[preset] = json.loads(proc.stdout)
    info = machine_info()
    if args.threads:
        info["torch_threads"] = args.threads
    paths = write_results("engine", {"machine": info, "quick": args.quick, "data": str(data), "results": results},
                          to_markdown(info, results, args.quick))
    LOG.info("wrote %s and %s", *paths)
    return 0


if __name__ == "__main__":
    sys.exit(main())
