"""Fine-tuning a trained model on a few corrections without forgetting what it knew.

One recipe serves the plugin's Retrain (``napari_cdma.project.retrain_worker``), ``cdma retrain STORE``
and ``cdma train --init``. A recipe is a named :class:`Recipe`: the ``finetune`` schedule of
:class:`~src_model.trainer.TrainConfig` plus small regularisers, each a :class:`~src_model.trainer.TrainHook`:

- :class:`DistillHook`: KL divergence of every branch to the previous (frozen) model's softened mean
  prediction on the unlabelled patches (tissue nobody corrected), so the model keeps its old answers
  where it was not told otherwise. With ``semi_supervised=False`` the batch holds no unlabelled patches
  and the hook draws its own from the unlabelled images (a replay set whose soft labels are the previous
  model's predictions, made on the fly instead of stored).
  With a recipe's ``replay_pack``, it also distils on reference crops shipped with the package
  (:mod:`src_model.replay_pack`): tissue outside the project.
- :class:`RehearsalHook`: the supervised loss on patches of the replay pack's crops with their expert masks
  (rehearsal with true labels), so the corrections of one project cannot move the gland boundary on tissue where
  the previous model itself was unsure (there distillation's soft targets pull nowhere).
- :class:`L2SPHook`: ``alpha / 2 * ||w - w0||^2``, an anchor to the previous weights.
- :class:`EncoderLrHook`: scales each optimiser update of the encoder (a lower encoder learning rate).
- :class:`EMAHook`: an exponential moving average of the weights, which becomes the result.
- ``freeze_bn``: the encoder's batch-norm layers use (and keep) their running statistics, so a few
  small fine-tuning batches cannot shift the statistics every image is normalised with.

The recipes (:mod:`src_model.recipes`, torch-free) and the choice of ``"default"`` are measured by
``benchmarks/forgetting.py`` (``benchmarks/results/forgetting.md``).
"""
from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Generator, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from .agreement import distill_part
from .checkpoint import BUNDLED_NAME, load_model, save_checkpoint
from .data import AugmentConfig, Labelled, augment, random_crop
from .losses import supervised_loss
from .progress import Progress
from .recipes import FINETUNE_SEMI_SUPERVISED, RECIPES, Recipe, default_steps, get_recipe
from .replay_pack import load_pack
from .tissue import tissue_mask
from .trainer import CDMATrainer, TrainConfig, TrainHook, TrainResult, train

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

# ---------------------------------------------------------------------------------------------- hooks

def softened_mean(logits: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """Mean over branches of ``softmax(z / T)``.

    Args:
        logits: K tensors (B, C, H, W).

    Returns:
        (B, C, H, W) probabilities.
    """
    return torch.stack([torch.softmax(z / temperature, dim=1) for z in logits]).mean(0)


def distill_loss(student: Sequence[torch.Tensor], teacher_mean: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher_mean || softmax(z_k / T))`` averaged over pixels and branches k.

    Args:
        student: K logits (B, C, H, W).
        teacher_mean: (B, C, H, W) the teacher's softened mean probabilities (no gradient).
    """
    log_t = torch.log(teacher_mean.clamp_min(1e-8))
    total = 0.0
    for z in student:
        log_s = F.log_softmax(z / temperature, dim=1)
        total = total + (teacher_mean * (log_t - log_s)).sum(dim=1).mean()
    return temperature ** 2 * total / len(student)


class PatchSampler:
    """Augmented random tissue patches of unlabelled images, as the training stream draws them."""

    def __init__(self, images: Sequence[np.ndarray], patch: int, seed: int,
                 augment_cfg: Optional[AugmentConfig] = None) -> None:
        if not images:
            raise ValueError("PatchSampler needs at least one image")
        self.images = list(images)
        self.tissue = [tissue_mask(img) for img in self.images]
        self.patch, self.augment_cfg = patch, augment_cfg or AugmentConfig()
        self.rng = np.random.default_rng([seed, 7])

    def sample(self, n: int) -> torch.Tensor:
        """(n, 3, P, P) float32 patches in [0, 1]."""
        out = []
        for _ in range(n):
            i = int(self.rng.integers(len(self.images)))
            img, _ = random_crop(self.rng, self.images[i], None, self.patch, self.tissue[i])
            x, _ = augment(self.rng, img, None, self.augment_cfg)
            out.append(x)
        return torch.from_numpy(np.stack(out))


class LabelledPatchSampler:
    """Augmented random patches of labelled images with their masks (0 / 1), as the training stream draws them."""

    def __init__(self, pairs: Sequence[Labelled], patch: int, seed: int,
                 augment_cfg: Optional[AugmentConfig] = None) -> None:
        if not pairs:
            raise ValueError("LabelledPatchSampler needs at least one image")
        self.pairs = [(np.asarray(img), (np.asarray(m) > 0).astype(np.int64)) for img, m in pairs]
        self.tissue = [tissue_mask(img) for img, _ in self.pairs]
        self.patch, self.augment_cfg = patch, augment_cfg or AugmentConfig()
        self.rng = np.random.default_rng([seed, 11])

    def sample(self, n: int):
        """(n, 3, P, P) float32 patches in [0, 1] and (n, P, P) int64 masks."""
        xs, ys = [], []
        for _ in range(n):
            i = int(self.rng.integers(len(self.pairs)))
            img, m = random_crop(self.rng, *self.pairs[i], self.patch, self.tissue[i])
            x, m = augment(self.rng, img, m, self.augment_cfg)
            xs.append(x)
            ys.append(m)
        return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys))


class RehearsalHook(TrainHook):
    """The supervised loss, times ``weight``, on ``n`` labelled patches of reference tissue every step (the replay
    pack's crops with their expert masks, :func:`src_model.replay_pack.load_pack_masks`): rehearsal with true
    labels, which holds the gland boundary where the previous model was unsure."""

    def __init__(self, sampler: LabelledPatchSampler, n: int, weight: float = 1.0) -> None:
        if n < 1:
            raise ValueError(f"rehearsal needs n >= 1 patches a step, got {n}")
        self.sampler, self.n, self.weight = sampler, n, weight

    def extra_loss(self, trainer, x, logits, n_labelled):
        xs, ys = self.sampler.sample(self.n)
        xs, ys = xs.to(trainer.device), ys.to(trainer.device)
        return {"rehearse": self.weight * supervised_loss([z.float() for z in trainer.model(xs)], ys)}


class DistillHook(TrainHook):
    """Distillation from the previous, frozen model on the patches nobody corrected.

    Uses the batch's unlabelled patches; when the batch has none (supervised-only fine-tuning) it
    draws ``n_replay`` patches from ``replay`` and runs the student on them too. With a ``pack`` (the
    reference crops of :mod:`src_model.replay_pack`) it also draws ``n_pack`` patches from it every step:
    they join the distilled patches (the loss is the mean over all of them), so the model keeps its answers on
    tissue the project does not hold.
    """

    def __init__(self, teacher: torch.nn.Module, weight: float, temperature: float,
                 replay: Optional[PatchSampler] = None, n_replay: int = 4, pack: Optional[PatchSampler] = None,
                 n_pack: int = 0) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.weight, self.temperature = weight, temperature
        self.replay, self.n_replay = replay, n_replay
        self.pack, self.n_pack = (pack, n_pack) if pack is not None and n_pack > 0 else (None, 0)

    def _part(self, trainer: CDMATrainer, xs: torch.Tensor, student: Sequence[torch.Tensor]) -> torch.Tensor:
        self.teacher.to(trainer.device)
        with torch.no_grad():
            target = softened_mean([z.float() for z in self.teacher(xs)], self.temperature)
        return distill_loss(student, target, self.temperature)

    def extra_loss(self, trainer: CDMATrainer, x: torch.Tensor, logits: Sequence[torch.Tensor],
                   n_labelled: int) -> Dict[str, torch.Tensor]:
        parts = []  # (loss, patches)
        if x.shape[0] > n_labelled:
            parts.append((self._part(trainer, x[n_labelled:], [z[n_labelled:] for z in logits]),
                          x.shape[0] - n_labelled))
        elif self.replay is not None:
            xs = self.replay.sample(self.n_replay).to(trainer.device)
            parts.append((self._part(trainer, xs, [z.float() for z in trainer.model(xs)]), self.n_replay))
        if self.pack is not None:
            xp = self.pack.sample(self.n_pack).to(trainer.device)
            parts.append((self._part(trainer, xp, [z.float() for z in trainer.model(xp)]), self.n_pack))
        if not parts:
            return {}
        total = sum(loss * n for loss, n in parts) / sum(n for _, n in parts)
        return {"distill": self.weight * total}


class L2SPHook(TrainHook):
    """``alpha / 2 * sum ||w - w0||^2`` over the trainable weights (L2-SP, Li et al. 2018)."""

    def __init__(self, model: torch.nn.Module, alpha: float) -> None:
        self.alpha = alpha
        self.anchor = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def extra_loss(self, trainer, x, logits, n_labelled):
        total = 0.0
        for name, p in trainer.model.named_parameters():
            if name in self.anchor:
                total = total + ((p - self.anchor[name].to(p.device)) ** 2).sum()
        return {"l2sp": 0.5 * self.alpha * total}


def _is_encoder(name: str) -> bool:
    return name.startswith("encoder.")


class EncoderLrHook(TrainHook):
    """Scales every optimiser update of the encoder's weights by ``factor`` (a lower encoder
    learning rate, whatever the optimiser): the weights before the step are kept in ``extra_loss``
    and the step is shrunk in ``after_step``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        self._before: Dict[str, torch.Tensor] = {}

    def extra_loss(self, trainer, x, logits, n_labelled):
        self._before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if _is_encoder(n)}
        return {}

    def after_step(self, trainer) -> None:
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if name in self._before:
                    p.copy_(self._before[name] + self.factor * (p - self._before[name]))
        self._before = {}


class EMAHook(TrainHook):
    """Exponential moving average of the weights and buffers; :meth:`apply` puts it into the model."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def after_step(self, trainer) -> None:
        with torch.no_grad():
            for k, v in trainer.model.state_dict().items():
                s = self.shadow[k]
                if s.device != v.device:
                    s = self.shadow[k] = s.to(v.device)
                if v.dtype.is_floating_point:
                    s.mul_(self.decay).add_(v.detach(), alpha=1 - self.decay)
                else:
                    s.copy_(v)

    def apply(self, model: torch.nn.Module) -> None:
        model.load_state_dict(self.shadow)


def interpolate(previous: torch.nn.Module, tuned: torch.nn.Module, keep: float) -> None:
    """Move ``tuned``'s floating-point weights and buffers back towards ``previous``: ``previous + keep * (tuned -
    previous)`` (weight-space interpolation; integer buffers such as batch counts stay ``tuned``'s)."""
    if not 0.0 <= keep <= 1.0:
        raise ValueError(f"keep must lie in [0, 1], got {keep}")
    before = previous.state_dict()
    with torch.no_grad():
        for name, value in tuned.state_dict().items():
            if value.dtype.is_floating_point:
                value.copy_(torch.lerp(before[name].to(value.device, value.dtype), value, keep))


def freeze_batchnorm(model: torch.nn.Module) -> List[torch.nn.Module]:
    """Make every batch-norm layer of ``model`` normalise with its running statistics and never update
    them, even in training mode; returns those layers."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    def keep_eval(module, args):
        for m in layers:
            m.eval()

    if layers:
        model.register_forward_pre_hook(keep_eval)
    return layers


# ---------------------------------------------------------------------------------------------- entry

def _load_init(init: Union[PathLike, torch.nn.Module]):
    if isinstance(init, torch.nn.Module):
        return copy.deepcopy(init)
    return load_model(None if str(init) == BUNDLED_NAME else init)


def finetune(init: Union[PathLike, torch.nn.Module], labelled: Sequence[Labelled], unlabelled: Sequence[np.ndarray],
             out_dir: PathLike, *, recipe: Union[str, Recipe] = "default", steps: Optional[int] = None,
             semi_supervised: bool = FINETUNE_SEMI_SUPERVISED, seed: int = 0, device: str = "cpu", threads: int = 0,
             cancel: Optional[Callable[[], bool]] = None, overrides: Optional[Mapping[str, Any]] = None,
             provenance: Optional[Mapping[str, Any]] = None, resume: Optional[PathLike] = None,
             reserve_check: bool = False) -> Generator[Progress, None, TrainResult]:
    """Fine-tune the model of ``init`` on corrected ``labelled`` pairs with ``recipe``; yields progress.

    Args:
        init: a checkpoint path, ``"bundled"``, or a model (copied, never changed).
        labelled: ``(RGB uint8 (H, W, 3), mask (H, W), > 0 = gland)`` pairs: the corrections.
        unlabelled: RGB uint8 images of the same lab (tissue nobody corrected); the labelled images
            are used when empty.
        out_dir: where ``final.pt`` (and ``last.pt``) go.
        recipe: a name in :data:`RECIPES` or a :class:`Recipe`.
        steps: optimiser steps; None: :func:`default_steps` for the amount of corrected pixels.
        semi_supervised: True adds CDMA's unsupervised terms on the unlabelled patches; False (the default,
            :data:`~src_model.recipes.FINETUNE_SEMI_SUPERVISED`) fine-tunes with the supervised loss only, the
            recipe's regularisers (distillation on uncorrected tissue included) unchanged.
        seed, device, threads: as :class:`~src_model.trainer.TrainConfig` (threads 0: torch's default).
        cancel: checked between steps; when it returns True, training stops and saves what it has.
        overrides: other :class:`~src_model.trainer.TrainConfig` fields (``patch``, ``batch_labelled``, ...).
        provenance: extra keys recorded in the checkpoint.
        resume: continue the run from this ``last.pt`` (the previous model is still ``init``).
        reserve_check: leave each unlabelled image's check strip (:func:`src_model.agreement.check_box`)
            out of training, so that :func:`src_model.agreement.agreement` with ``reserved=True`` compares
            the models on tissue the distillation never pulled back to the old answers. Off by default: in
            the calibration sessions (``benchmarks/results/annotation_session.md``) the strip check did not
            tell forgetting models apart better than the check on all uncorrected tissue, and it was noisier.

    Returns:
        the :class:`~src_model.trainer.TrainResult`; ``checkpoint`` is ``out_dir / "final.pt"``
        (with EMA: the averaged weights).
    """
    r = get_recipe(recipe)
    if reserve_check:
        unlabelled = [distill_part(np.asarray(img)) for img in unlabelled]
    n_steps = default_steps(r, labelled) if steps is None else int(steps)
    if n_steps < 1:
        raise ValueError(f"steps must be >= 1, got {n_steps}")
    cfg_kw: Dict[str, Any] = {"lr": r.lr, "seed": seed, "device": device, "threads": threads,
                              "unsupervised": semi_supervised}
    cfg_kw.update(overrides or {})
    config = TrainConfig.finetune(n_steps, **cfg_kw)
    if threads:
        torch.set_num_threads(threads)
    model = _load_init(init)
    hooks: List[TrainHook] = []
    ema: Optional[EMAHook] = None
    if r.freeze_bn:
        freeze_batchnorm(model)
    # the previous model, frozen: the distillation's teacher and the end of a weight interpolation
    previous = _load_init(init) if r.distill > 0 or r.keep != 1.0 or r.check_drop >= 0 else None
    if r.distill > 0:
        teacher = previous
        replay = None if semi_supervised else PatchSampler(list(unlabelled) or [img for img, _ in labelled],
                                                           config.patch, seed, config.augment)
        pack = PatchSampler(load_pack(), config.patch, seed + 1, config.augment) if r.replay_pack else None
        hooks.append(DistillHook(teacher, r.distill, r.distill_temperature, replay,
                                 n_replay=max(1, config.batch_unlabelled), pack=pack, n_pack=r.replay_pack))
    if r.rehearse > 0:
        from .reference_check import pack_reference

        crops, masks = pack_reference()
        sampler = LabelledPatchSampler(list(zip(crops, masks, strict=True)), config.patch, seed + 2, config.augment)
        hooks.append(RehearsalHook(sampler, r.rehearse))
    if r.l2sp > 0:
        hooks.append(L2SPHook(model, r.l2sp))
    if r.encoder_lr != 1.0:
        hooks.append(EncoderLrHook(r.encoder_lr))
    if r.ema > 0:
        ema = EMAHook(model, r.ema)
        hooks.append(ema)
    prov = {"recipe": r.to_dict(), "semi_supervised": semi_supervised, "reserve_check": reserve_check,
            "init": str(getattr(init, "checkpoint_path", init))}
    prov.update(provenance or {})
    log.info("fine-tuning with recipe %r: %d steps, %d labelled, %d unlabelled", r.name, n_steps,
             len(labelled), len(unlabelled))
    result = yield from train(model, labelled, unlabelled, config, Path(out_dir), cancel=cancel,
                              provenance=prov, resume=None if resume is None else Path(resume), hooks=hooks)
    check = r.check_drop >= 0 and not result.cancelled and not (cancel is not None and cancel())
    if ema is not None or r.keep != 1.0 or check:
        weights, extra = [], {}
        if ema is not None:
            ema.apply(model)
            weights.append("ema")
        if check:
            from .reference_check import KEEPS, guarded_keep, pack_reference

            crops, masks = pack_reference()
            outcome = guarded_keep(previous, model, crops, masks, r.check_drop, device=device, cancel=cancel,
                                   keeps=[k for k in KEEPS if k <= r.keep] or [0.0])
            extra["reference_check"] = outcome.to_dict()
            weights.append(f"reference check, keep {outcome.keep:g}")
        elif r.keep != 1.0:
            interpolate(previous, model, r.keep)
            weights.append(f"interpolated, keep {r.keep:g}")
        save_checkpoint(result.checkpoint, model, step=result.steps_done,
                        provenance={"trainer": "CDMATrainer", "train_config": config.to_dict(), **prov, **extra,
                                    "weights": ", ".join(weights), "cancelled": result.cancelled})
    return result


__all__ = ["Recipe", "RECIPES", "get_recipe", "default_steps", "finetune", "DistillHook", "L2SPHook",
           "EncoderLrHook", "EMAHook", "PatchSampler",
           "LabelledPatchSampler", "RehearsalHook", "freeze_batchnorm", "interpolate", "distill_loss",
           "softened_mean"]
