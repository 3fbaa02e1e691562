"""Choose and package the bundled default model (issue 3).

Candidates are checkpoints trained on GlaS training images; each is scored on the validation
subset carved out of the training images (``benchmarks/results/glas_ssl/split.json``, never the
test images), the best one is stripped to weights + config + provenance and written to
``src_model/bundled/cdma_lite_glas.pt`` with a model card. Its test metrics are then measured for
the card (after the choice, so they do not influence it).

Usage:
  python benchmarks/make_bundled.py runs/glas_ssl/bundled/final.pt runs/glas_ssl/full/final.pt
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src_model.checkpoint import bundled_model_path, load_model, read_checkpoint, save_checkpoint  # noqa: E402
from src_model.evaluate import evaluate_model  # noqa: E402
from src_model.progress import drain  # noqa: E402

log = logging.getLogger("make_bundled")
DATA = ROOT.parent / "shared" / "data" / "glas"
KEYS = ("dice", "iou", "f1", "object_dice", "object_hausdorff")


def fmt(agg: dict) -> str:
    return " | ".join(f"{agg[k]:.4f}" if k != "object_hausdorff" else f"{agg[k]:.2f}" for k in KEYS)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("candidates", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    split = json.loads((ROOT / "benchmarks/results/glas_ssl/split.json").read_text())
    scored = []
    for path in args.candidates:
        model = load_model(path)
        val = drain(evaluate_model(model, args.data, ids=split["val"]))["summary"]["all"]
        log.info("%s: val dice %.4f f1 %.4f", path, val["dice"], val["f1"])
        scored.append((val["dice"] + val["f1"], path, val))
    scored.sort(key=lambda s: -s[0])
    _, best, val = scored[0]
    data = read_checkpoint(best)
    model = load_model(best)
    test = drain(evaluate_model(model, args.data, split="test"))["summary"]
    prov = dict(data["provenance"])
    prov.pop("train_config", None)
    prov.update({"bundled_from": str(best.relative_to(ROOT)) if best.is_relative_to(ROOT) else str(best),
                 "selection": "best val (pixel Dice + object F1) among: " + ", ".join(str(c) for c in args.candidates),
                 "val_metrics": val, "test_metrics": {k: test[k] for k in test},
                 "train_config": data["provenance"].get("train_config"), "step": data["step"]})
    out = bundled_model_path()
    save_checkpoint(out, model, step=data["step"], provenance=prov)
    cfg = data["provenance"].get("train_config") or {}
    n_params = sum(p.numel() for p in model.parameters())
    card = f"""# Model card: cdma_lite_glas.pt (bundled default model)

- **Architecture**: MTNet (CDMA), `lite` preset: ResNet-style encoder (basic blocks, widths
  {model.config.widths}), ASPP {model.config.aspp_channels} ch, three attention decoders (CBAM, SA, CA),
  {n_params / 1e6:.2f} M parameters, {out.stat().st_size / 1e6:.1f} MB. Input: RGB / 255.
- **Training data**: GlaS (Warwick-QU) colon H&E training images ({prov.get('n_labelled')} labelled,
  {prov.get('n_unlabelled')} used by the unsupervised terms), official split; validation subset of 8
  training images held out for model selection: {', '.join(split['val'])}. No test image was used.
- **Training**: from scratch (no ImageNet weights), {data['step']} steps, batch
  {cfg.get('batch_labelled')} labelled + {cfg.get('batch_unlabelled')} unlabelled patches of {cfg.get('patch')} px,
  {cfg.get('optimizer')} lr {cfg.get('lr')} ({cfg.get('lr_schedule')}), unsupervised losses: {cfg.get('unsupervised')}
  (CDKD T={cfg.get('temperature')}, entropy, {cfg.get('ramp')} ramp), seed {cfg.get('seed')}, on a 2-core CPU.
- **Chosen from**: {', '.join(str(c) for c in args.candidates)} by validation pixel Dice + object F1.

## Metrics (whole images, tiled inference, mean of the three branches; means over images)

| set | pixel Dice | IoU | object F1 | object Dice | object Hausdorff |
|---|---|---|---|---|---|
| validation (8 train images) | {fmt(val)} |
""" + "\n".join(f"| {name} | {fmt(test[name])} |" for name in ("testA", "testB", "all")) + f"""

Targets of issue 3: pixel Dice >= 0.87 and object F1 >= 0.75 on test (testA+testB).
Reached: pixel Dice {test['all']['dice']:.4f}, object F1 {test['all']['f1']:.4f}.

## Data terms

GlaS is provided **for research purposes only; commercial uses are not allowed** (the organisers'
terms). This model is trained on it and inherits those terms. Cite: Sirinukunwattana et al., "Gland
Segmentation in Colon Histology Images: The GlaS Challenge Contest", Medical Image Analysis 2017
(arXiv:1603.00275); Sirinukunwattana, Snead, Rajpoot, "A Stochastic Polygons Model for Glandular
Structures in Colon Histology Images", IEEE TMI 2015.

## Limits

Trained on 775x522 fields of view of colon H&E at the GlaS magnification; other organs, stains or
scanners need fine-tuning (the plugin's Retrain). Uncertainty maps come from branch disagreement and
are not calibrated probabilities.

Reproduce: `python benchmarks/glas_ssl.py --rows bundled --steps {data['step']} --threads 1`, then
`python benchmarks/make_bundled.py {' '.join(str(c) for c in args.candidates)}`.
"""
    (out.parent / "MODEL_CARD.md").write_text(card)
    log.info("wrote %s (%.1f MB) and its model card", out, out.stat().st_size / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
