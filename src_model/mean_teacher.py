"""Mean teacher (Tarvainen & Valpola, 2017) as a :class:`~src_model.trainer.TrainHook`: a simple, well-known
semi-supervised baseline trained with the same loop, data and schedule as CDMA.

The teacher is an exponential moving average (EMA) of the student's weights. On the unlabelled patches
of each batch it sees the student's input with extra Gaussian noise (the perturbation); each branch's
softmax is pulled towards the teacher's softmax of the same branch by a mean squared error,
weighted by ``weight`` times the trainer's ramp w(t) (warm-up and ramp of the :class:`TrainConfig`).
For a pure mean-teacher run, switch CDMA's own terms off (``cdkd_weight = ent_weight = 0``) and keep
``unsupervised=True`` so the unlabelled patches reach the model.

Usage::

    hook = MeanTeacher(model)
    trainer = CDMATrainer(model, config, device, hooks=[hook])
"""
from __future__ import annotations

import copy
from typing import Dict, List, Sequence

import torch

from .trainer import CDMATrainer, TrainHook


def ema_decay(step: int, decay: float) -> float:
    """EMA factor after optimiser step ``step`` (1-based): min(1 - 1 / (step + 1), decay), so the
    teacher follows the student closely while both are young (Tarvainen & Valpola)."""
    return min(1.0 - 1.0 / (step + 1), decay)


def consistency_loss(student: Sequence[torch.Tensor], teacher_probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over branches k of the mean squared difference between softmax(student[k]) and ``teacher_probs[k]``."""
    total = 0.0
    for z, t in zip(student, teacher_probs, strict=True):
        total = total + torch.mean((torch.softmax(z, dim=1) - t) ** 2)
    return total / len(student)


class MeanTeacher(TrainHook):
    """EMA teacher + consistency term on the unlabelled patches.

    Args:
        student: the model being trained (the teacher starts as its copy).
        weight: largest weight of the consistency term (reached when the ramp w(t) is 1).
        decay: EMA decay of the teacher's weights (see :func:`ema_decay`).
        noise_std: standard deviation of the Gaussian noise added to the teacher's input (in [0, 1] units).
    """

    def __init__(self, student: torch.nn.Module, weight: float = 1.0, decay: float = 0.99,
                 noise_std: float = 0.05) -> None:
        self.weight, self.decay, self.noise_std = float(weight), float(decay), float(noise_std)
        self.teacher = copy.deepcopy(student)
        self.teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def teacher_probs(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The teacher's softmax of each branch on ``x`` perturbed by Gaussian noise (clipped to [0, 1])."""
        self.teacher.to(x.device)
        if self.noise_std > 0:
            x = (x + torch.randn_like(x) * self.noise_std).clamp_(0, 1)
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=x.device.type == "cuda"):
            logits = self.teacher(x)
        return [torch.softmax(z.float(), dim=1) for z in logits]

    def extra_loss(self, trainer: CDMATrainer, x: torch.Tensor, logits: Sequence[torch.Tensor],
                   n_labelled: int) -> Dict[str, torch.Tensor]:
        ramp = trainer.unsupervised_weight()
        if ramp <= 0 or self.weight <= 0 or x.shape[0] <= n_labelled:
            return {"mt": torch.zeros((), device=x.device)}
        target = self.teacher_probs(x[n_labelled:])
        return {"mt": self.weight * ramp * consistency_loss([z[n_labelled:] for z in logits], target)}

    @torch.no_grad()
    def after_step(self, trainer: CDMATrainer) -> None:
        a = ema_decay(trainer.step, self.decay)
        student = trainer.model
        self.teacher.to(next(student.parameters()).device)
        # a * teacher + (1 - a) * student, as multi-tensor kernels (as torch.optim.swa_utils does)
        torch._foreach_lerp_(list(self.teacher.parameters()), list(student.parameters()), 1.0 - a)
        torch._foreach_copy_(list(self.teacher.buffers()), list(student.buffers()))  # norm statistics follow
