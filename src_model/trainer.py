"""The CDMA trainer: a small class with named steps and a short loop that yields progress.

``CDMATrainer.configure_optimizer`` -> ``train_step(batch)`` -> ``save``; ``fit`` is the loop.
``train(...)`` is the convenience entry point used by the CLI and the plugin's worker.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence

import numpy as np
import torch

from .checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from .data import AugmentConfig, Labelled, TwoStreamPatches
from .distributed import DistInfo, DistSession, rank_seed
from .losses import cdma_loss, ramp_weight
from .model import MTNet
from .progress import EtaClock, Progress
from .runtime import resolve_device

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Schedule and optimisation of a training run.

    Attributes:
        steps: optimiser steps.
        batch_labelled / batch_unlabelled: patches per batch from each stream.
        patch: patch side in pixels.
        optimizer: ``"sgd"`` (release: Nesterov, momentum 0.9, per-group lr multipliers) or
            ``"adamw"`` (better from scratch on a CPU budget).
        lr: base learning rate (the backbone weights' rate for SGD).
        weight_decay: L2 / decoupled weight decay.
        lr_schedule: ``"step"`` (x0.1 at 25/50/75 % as released), ``"poly"`` or ``"constant"``.
        warmup_steps: steps before the unsupervised terms switch on (release: 10 % of training).
        ramp: ``"step"`` (release) or ``"sigmoid"`` ramp-up of the unsupervised weight.
        ramp_steps: length of the sigmoid ramp.
        unsupervised: False trains with the supervised loss only (the baseline).
        temperature: CDKD temperature T.
        cdkd_weight / ent_weight: weights of the CDKD and entropy terms (times the ramp w(t); 0 = off).
        boundary_weight: boundary-aware training (0 = off): CE weight 1 + this on the pixels near two
            different glands (:class:`~src_model.data.TwoStreamPatches`, :func:`~src_model.data.touching_border`).
        boundary_radius: their reach in pixels.
        seed: seeds torch and the data streams.
        device: ``"auto"`` (CUDA if present, else CPU), ``"cpu"`` or ``"cuda"``.
        checkpoint_every: steps between ``last.pt`` checkpoints (0 = only at the end).
        num_workers: DataLoader workers (0 = in the main process).
        threads: torch CPU threads (0 = leave torch's default).
    """

    steps: int = 1000
    batch_labelled: int = 8
    batch_unlabelled: int = 8
    patch: int = 256
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    lr_schedule: str = "poly"
    warmup_steps: int = 100
    ramp: str = "sigmoid"
    ramp_steps: int = 200
    unsupervised: bool = True
    temperature: float = 10.0
    cdkd_weight: float = 0.1
    ent_weight: float = 0.1
    boundary_weight: float = 0.0
    boundary_radius: int = 8
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 100
    num_workers: int = 0
    threads: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    @classmethod
    def release(cls, steps: int, **kw: Any) -> "TrainConfig":
        """The released schedule (for the ``paper`` preset): SGD, step decay, step warm-up at 10 %."""
        base = dict(optimizer="sgd", lr=1e-3, weight_decay=5e-4, lr_schedule="step",
                    warmup_steps=steps // 10, ramp="step")
        base.update(kw)
        return cls(steps=steps, **base)

    @classmethod
    def finetune(cls, steps: int, **kw: Any) -> "TrainConfig":
        """The ``finetune`` schedule: unsupervised losses on from step 0, short, gentle lr."""
        base = dict(batch_labelled=4, batch_unlabelled=4, lr=3e-4, lr_schedule="constant",
                    warmup_steps=0, ramp="step", checkpoint_every=max(10, steps // 4))
        base.update(kw)
        return cls(steps=steps, **base)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def lr_factor(schedule: str, steps: int) -> Callable[[int], float]:
    """The learning-rate multiplier of step ``s`` for a schedule of ``steps`` steps.

    ``"step"``: x0.1 at 25, 50 and 75 % (as released); ``"poly"``: (1 - s/steps)^0.9;
    ``"constant"``: 1.
    """
    total = max(1, steps)
    if schedule == "step":
        return lambda s: 0.1 ** sum(s >= total * f for f in (0.25, 0.5, 0.75))
    if schedule == "poly":
        return lambda s: max(0.0, 1 - s / total) ** 0.9
    if schedule == "constant":
        return lambda s: 1.0
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid: step, poly, constant")


@dataclass
class TrainResult:
    checkpoint: Path
    steps_done: int
    cancelled: bool
    history: List[Dict[str, float]]


def _is_backbone(name: str) -> bool:
    return name.startswith("encoder.")


class TrainHook:
    """Extends a training run without touching the loop (fine-tuning regularisers, mean teacher, ...).

    ``extra_loss`` returns named loss terms that are added to the CDMA loss of the step (each term is
    also reported in the step's metrics); ``after_step`` runs after the optimiser step (EMA updates).
    ``x`` holds the labelled patches first (``n_labelled`` of them), then the unlabelled ones.
    """

    def extra_loss(self, trainer: "CDMATrainer", x: torch.Tensor, logits: Sequence[torch.Tensor],
                   n_labelled: int) -> Dict[str, torch.Tensor]:
        return {}

    def after_step(self, trainer: "CDMATrainer") -> None:
        return None


class CDMATrainer:
    """Trains an :class:`MTNet` with the CDMA losses. No side effects in ``__init__``.

    With a distributed ``session`` (:mod:`src_model.distributed`), the forward pass runs through
    DistributedDataParallel (``self.net``), ranks stop together, metrics are averaged over ranks and
    only rank 0 writes checkpoints; ``self.model`` stays the plain model (saved, used by hooks).
    """

    def __init__(self, model: MTNet, config: TrainConfig, device: torch.device,
                 hooks: Sequence[TrainHook] = (), session: Optional[DistSession] = None) -> None:
        self.model = model
        self.net: torch.nn.Module = model
        self.config = config
        self.device = device
        self.hooks = list(hooks)
        self.session = session or DistSession(DistInfo(), device)
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.scheduler = None
        self.scaler = None
        self.step = 0

    # ------------------------------------------------------------------ named steps
    def configure_optimizer(self) -> None:
        cfg = self.config
        self.model.to(self.device)
        if cfg.optimizer == "sgd":
            groups: Dict[str, List[torch.nn.Parameter]] = {"bw": [], "bb": [], "nw": [], "nb": []}
            for name, p in self.model.named_parameters():
                if not p.requires_grad:
                    continue
                key = ("b" if _is_backbone(name) else "n") + ("b" if name.endswith("bias") else "w")
                groups[key].append(p)
            mult = {"bw": 1, "bb": 2, "nw": 10, "nb": 20}
            self.optimizer = torch.optim.SGD(
                [{"params": ps, "lr": cfg.lr * mult[k]} for k, ps in groups.items() if ps],
                lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"unknown optimizer {cfg.optimizer!r}; valid: sgd, adamw")
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor(cfg.lr_schedule, cfg.steps))
        if self.device.type == "cuda":
            self.scaler = torch.amp.GradScaler("cuda")
        self.net = self.session.wrap(self.model)

    def unsupervised_weight(self) -> float:
        cfg = self.config
        if not cfg.unsupervised:
            return 0.0
        return ramp_weight(self.step, cfg.warmup_steps, cfg.ramp, cfg.ramp_steps)

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, float]:
        """One optimiser step on a two-stream batch; returns the loss parts and the lr."""
        self.model.train()
        x = batch["image"].to(self.device, non_blocking=True)
        y = batch["target"].to(self.device, non_blocking=True)
        n_lab = int(batch["n_labelled"])
        w = self.unsupervised_weight()
        if not self.config.unsupervised:  # the supervised baseline never sees unlabelled pixels
            x, y = x[:n_lab], y[:n_lab]
        amp = self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=amp):
            logits = self.net(x)
        logits = [z.float() for z in logits]
        pw = batch.get("weight")
        pw = None if pw is None else pw[:n_lab].to(self.device, non_blocking=True)
        cfg = self.config
        losses = cdma_loss(logits, y, n_lab, w, cfg.temperature, cfg.cdkd_weight, cfg.ent_weight, pw)
        for hook in self.hooks:
            for name, term in hook.extra_loss(self, x, logits, n_lab).items():
                losses[name] = term
                losses["loss"] = losses["loss"] + term
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(losses["loss"]).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            losses["loss"].backward()
            self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        for hook in self.hooks:
            hook.after_step(self)
        out = {k: float(v.detach()) for k, v in losses.items()}
        out.update(lr=self.optimizer.param_groups[0]["lr"], w=w)
        if not math.isfinite(out["loss"]):
            raise FloatingPointError(f"loss became {out['loss']} at step {self.step}")
        return out

    def save(self, path: Path, provenance: Optional[Dict[str, Any]] = None) -> Path:
        """Write a checkpoint of the plain model (rank 0 only; other ranks return ``path`` unwritten)."""
        if not self.session.is_main:
            return Path(path)
        prov = {"trainer": "CDMATrainer", "train_config": self.config.to_dict()}
        if self.session.active:
            prov["world_size"] = self.session.info.world_size
        prov.update(provenance or {})
        return save_checkpoint(path, self.model, optimizer=self.optimizer, step=self.step, provenance=prov,
                               extra={"scheduler": self.scheduler.state_dict()})

    def resume(self, path: Path) -> None:
        """Restore weights, optimiser, scheduler and step from a checkpoint written by :meth:`save`."""
        data = read_checkpoint(path)
        if "optimizer" not in data:
            raise CheckpointError(f"{path}: has no optimiser state; cannot resume (use it with --init instead)")
        sd = data["state_dict"]
        shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        if not isinstance(sd, dict) or {k: tuple(getattr(v, "shape", ())) for k, v in sd.items()} != shapes:
            raise CheckpointError(f"{path}: written for a model of another structure; resume with the run's own "
                                  f"--preset / --init, or choose another --out")
        self.model.load_state_dict(sd)
        try:
            self.optimizer.load_state_dict(data["optimizer"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: its optimiser state does not fit this run ({str(exc)[:120]}); resume "
                                  f"with the run's own settings, or choose another --out") from exc
        if "scheduler" in data.get("extra", {}):
            self.scheduler.load_state_dict(data["extra"]["scheduler"])
        self.step = int(data["step"])

    # ------------------------------------------------------------------ the loop
    def fit(self, batches, out_dir: Path, cancel: Optional[Callable[[], bool]] = None,
            provenance: Optional[Dict[str, Any]] = None) -> Generator[Progress, None, TrainResult]:
        cfg = self.config
        out_dir = Path(out_dir)
        history: List[Dict[str, float]] = []
        clock = EtaClock(cfg.steps, self.step)
        cancelled = False
        it = iter(batches)
        while self.step < cfg.steps:
            if self.session.any_true(cancel is not None and cancel()):
                cancelled = True
                log.info("training cancelled at step %d", self.step)
                break
            metrics = self.session.mean_metrics(self.train_step(next(it)))
            history.append({"step": self.step, **metrics})
            if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.steps:
                self.save(out_dir / "last.pt", provenance)
            yield Progress("train", self.step, cfg.steps, metrics, clock.eta(self.step))
        final = self.save(out_dir / "final.pt", {**(provenance or {}), "cancelled": cancelled})
        if not cancelled:
            self.save(out_dir / "last.pt", provenance)
        return TrainResult(final, self.step, cancelled, history)


def train(model: MTNet, labelled: Sequence[Labelled], unlabelled: Sequence[np.ndarray], config: TrainConfig,
          out_dir: Path, cancel: Optional[Callable[[], bool]] = None, provenance: Optional[Dict[str, Any]] = None,
          resume: Optional[Path] = None, hooks: Sequence[TrainHook] = ()) -> Generator[Progress, None, TrainResult]:
    """Train ``model`` on labelled (image, mask) pairs and unlabelled images; yields progress.

    ``hooks`` (:class:`TrainHook`) add loss terms or per-step updates. Returns a :class:`TrainResult`
    whose ``checkpoint`` is ``out_dir / "final.pt"``. Under ``torchrun`` (``WORLD_SIZE`` > 1) every
    process calls it: they train data-parallel (:mod:`src_model.distributed`), each rank drawing its own
    patches, so the global batch is ``world_size`` times the configured one.
    """
    if config.threads:
        torch.set_num_threads(config.threads)
    session = DistSession.start(resolve_device(config.device))  # under torchrun: joins the process group
    torch.manual_seed(rank_seed(config.seed, session.info.rank))  # dropout masks differ between ranks
    try:
        result = yield from _train(session, model, labelled, unlabelled, config, out_dir, cancel, provenance,
                                   resume, hooks)
    finally:
        session.close()
    return result


def _train(session, model, labelled, unlabelled, config, out_dir, cancel, provenance, resume, hooks):
    """:func:`train` inside its (possibly distributed) session."""
    device = session.device
    trainer = CDMATrainer(model, config, device, hooks, session)
    trainer.configure_optimizer()
    if resume is not None:
        trainer.resume(Path(resume))
    data = TwoStreamPatches(labelled, unlabelled, config.batch_labelled,
                            config.batch_unlabelled if config.unsupervised else 0,
                            config.patch, rank_seed(config.seed + trainer.step, session.info.rank), config.augment,
                            config.boundary_weight, config.boundary_radius)
    if config.num_workers > 0:
        batches = torch.utils.data.DataLoader(data, batch_size=None, num_workers=config.num_workers,
                                              pin_memory=device.type == "cuda", persistent_workers=True)
    else:
        batches = data
    prov = {"n_labelled": len(labelled), "n_unlabelled": len(unlabelled)}
    prov.update(provenance or {})
    result = yield from trainer.fit(batches, out_dir, cancel, prov)
    model.eval()
    return result
