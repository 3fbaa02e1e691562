"""Retraining as a child process that the GUI polls: never blocks, never imports torch.

:meth:`RetrainJob.start` writes ``JOB.json`` and starts ``python -m napari_cdma.project.retrain_worker``
in its own session (a crash, an out-of-memory kill or a Ctrl-C in the terminal cannot reach
napari). A daemon thread reads the worker's JSON-lines events into a queue; the widget calls
:meth:`RetrainJob.poll` from a timer. :func:`finish` adds the result to the store.

Events are the dataclasses of :mod:`napari_cdma.project.events`. Besides the worker's own, this
module makes ``Failed("training process exited with code N: <log tail>")`` when the process ends
without a final event, and ``Cancelled(forced=True)`` when a cancel had to kill it.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from src_model.recipes import FINETUNE_SEMI_SUPERVISED  # torch-free
from src_model.runtime import torch_threads  # torch-free

from .events import FINAL_EVENTS, Cancelled, Done, Failed, RetrainEvent, parse_event
from .store import ModelRecord, ProjectStore, RegionRecord, _is_holdout  # the store's own held-out rule

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
CANCEL_GRACE_S = 10.0
_STDERR_TAIL_LINES = 15
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR", "MASTER_PORT",
                  "TORCHELASTIC_RUN_ID")
# The held-out Dice of one or two regions moves by a few hundredths with a single gland: too
# little evidence to swap the current model without the user's say (issue 9).
MIN_HOLDOUT_FOR_PROMOTION = 3
# A held-out Dice over less gland than one small gland (src_model.postprocess.DEFAULT_INSTANCES.min_size)
# says nothing: the worker does not score the models on it, and the dock says so in words. A number here,
# not an import (scipy would load with the dock); tests/test_postprocess.py checks it equals that min_size.
MIN_HOLDOUT_GLAND_PX = 1300


def plural(n: int, word: str) -> str:
    """``"1 region"``, ``"4 regions"``."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def holdout_shortfall(n_regions: int, gland_px: int) -> str:
    """Why held-out regions cannot score a new model, in words (the worker's ``Done.message`` starts with it)."""
    if n_regions <= 0:
        return "no held-out regions yet: the new model cannot be scored"
    if gland_px <= 0:
        return f"held-out regions hold no glands to score ({plural(n_regions, 'region')})"
    return (f"held-out score rests on {gland_px} px of gland in {plural(n_regions, 'region')}: too little to "
            f"compare the models (at least {MIN_HOLDOUT_GLAND_PX} px)")


def holdout_every(fraction: float) -> str:
    """How often an accepted region is held out, in words ("every 5th accepted region" for 0.2)."""
    if not fraction or fraction <= 0:
        return "no accepted region"
    n = int(round(1.0 / fraction))
    if abs(1.0 / n - fraction) > 1e-6:
        return f"{fraction:.0%} of the accepted regions"
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"every {n}{suffix} accepted region"


@dataclasses.dataclass(frozen=True)
class HoldoutOutlook:
    """Where a store stands on held-out regions: how many it holds out now, the index of the next region it will
    number, and its held-out share (the rule: :func:`napari_cdma.project.store._is_holdout`)."""

    held: int
    next_index: int
    fraction: float

    @classmethod
    def of(cls, store: ProjectStore) -> "HoldoutOutlook":
        """The store's numbers now: live held-out regions; withdrawn regions keep their numbers (never reused)."""
        numbers = [int(r.region_id[1:]) for r in store.regions(include_withdrawn=True) if r.region_id[1:].isdigit()]
        return cls(len(store.holdout_regions()), max(numbers, default=0), store.holdout_fraction)

    def accepts_for(self, more: int) -> Optional[int]:
        """How many more new regions must be accepted until ``more`` more of them are held out (None: the store
        holds none out)."""
        if more <= 0:
            return 0
        if self.fraction <= 0:
            return None
        n, found = self.next_index, 0
        while found < more:
            found += _is_holdout(n, self.fraction)
            n += 1
        return n - self.next_index


def promotion_outlook(n_holdout: int, scored: bool, outlook: Optional[HoldoutOutlook] = None) -> str:
    """How far automatic promotion is when a job had too little held out to decide on: what the rule needs, what
    the job had, and, from the store's numbers (``outlook``), about how many more accepted regions would hold out
    what is missing (walk 20: nothing said how far off it was)."""
    every = f" ({holdout_every(outlook.fraction)} is held out)" if outlook is not None else ""
    if n_holdout < MIN_HOLDOUT_FOR_PROMOTION:
        needs = (f"which needs {MIN_HOLDOUT_FOR_PROMOTION} held-out regions"
                 + ("" if scored else f" with at least {MIN_HOLDOUT_GLAND_PX} px of gland in all")
                 + f": {n_holdout or 'none'} so far")
        if outlook is None:
            return needs + "; the store holds out a share of the regions you accept"
        missing = MIN_HOLDOUT_FOR_PROMOTION - outlook.held
        if missing <= 0:
            return needs + f"; the store now holds out {outlook.held}: retrain to judge with them"
    else:  # enough regions, too little gland in them
        needs = f"which needs at least {MIN_HOLDOUT_GLAND_PX} px of gland in the held-out regions"
        if outlook is None:
            return needs + "; each held-out region with glands adds to it"
        missing = 1
    k = outlook.accepts_for(missing)
    if k is None:
        return needs + "; this store holds out no region"
    if n_holdout < MIN_HOLDOUT_FOR_PROMOTION:
        return needs + f"; about {plural(k, 'more accepted region')} would hold out {missing} more{every}"
    return needs + (f"; each held-out region with glands adds to it: the next one is about "
                    f"{plural(k, 'accepted region')} away{every}")


def held_out_text(ev: Done, split: Optional["HoldoutSplit"] = None) -> str:
    """The held-out part of a finished job's result, in words: the Dice before -> after, or why there is none. With
    the job's ``split`` (:class:`HoldoutSplit`) holding unedited regions: the edited and the unedited regions' Dice
    apart when both were scored, and "accepted unedited" when all of them were."""
    n = int(ev.n_holdout or 0)
    if ev.old_dice is not None and ev.new_dice is not None and split is not None and split.unedited.n \
            and split.matches(ev):
        e, u = split.edited, split.unedited
        if e.n and e.scored and u.scored:
            return (f"held-out Dice {e.dice()} on {plural(e.n, 'edited region')}, {u.dice()} on {u.n} accepted "
                    f"unedited")
        if not e.n:
            return f"held-out Dice {float(ev.old_dice):.3f} -> {float(ev.new_dice):.3f} on {plural(n, 'region')} " \
                   f"accepted unedited"
    if ev.old_dice is not None and ev.new_dice is not None:
        return f"held-out Dice {float(ev.old_dice):.3f} -> {float(ev.new_dice):.3f} on {plural(n, 'region')}"
    first = (ev.message or "").split("; ")[0]
    if n and first.startswith("held-out"):
        return first  # the worker's words, with the amount of gland it found
    return f"{plural(n, 'held-out region')} could not score the new model" if n else holdout_shortfall(0, 0)


def training_basis(train: Sequence[RegionRecord], holdout: Sequence[RegionRecord], *, recipe: Optional[str] = None,
                   steps: Optional[int] = None, semi_supervised: bool = FINETUNE_SEMI_SUPERVISED,
                   seed: int = 0) -> Dict[str, Any]:
    """What a retraining trains on, as a version keeps it (``metrics["trained_on"]``): the live accepted regions it
    reads, ``"<region id>@<version>"`` (a region accepted again is another version; a withdrawn one is not live),
    those it trains on and those it holds out, and the settings that make its model another one (recipe, the steps
    asked for (None: auto), CDMA's terms, seed). Two jobs with equal bases give the same model in effect."""
    return {"train": sorted(f"{r.region_id}@{r.version}" for r in train),
            "holdout": sorted(f"{r.region_id}@{r.version}" for r in holdout),
            "recipe": str(recipe or "default"), "steps": int(steps) if steps else None,
            "semi_supervised": bool(semi_supervised), "seed": int(seed)}


def store_basis(store: ProjectStore, **settings: Any) -> Dict[str, Any]:
    """:func:`training_basis` of a retraining of ``store`` started now with ``settings``."""
    return training_basis(store.training_regions(), store.holdout_regions(), **settings)


#: How far the new model's pooled Dice on held-out regions accepted unedited may fall below the current model's before
#: the rule keeps the current one. On such a region the truth is a model's own prediction: the Dice of the new model
#: there is its agreement with that prediction, and 1 - :data:`src_model.agreement.MIN_AGREEMENT` (0.05) is what the
#: rule lets the new model change of uncorrected tissue; confirmed tissue gets less: 0.02 (the walk's retraining moved
#: it by 0.003).
UNEDITED_TOLERANCE = 0.02


@dataclasses.dataclass(frozen=True)
class HeldPart:
    """The edited or the unedited held-out regions of a job: how many, their gland pixels, and the pooled Dice of the
    current and the new model on them (None: not scored, too little gland or the job scored nothing)."""

    n: int = 0
    gland_px: int = 0
    old_dice: Optional[float] = None
    new_dice: Optional[float] = None

    @property
    def scored(self) -> bool:
        return self.old_dice is not None and self.new_dice is not None

    def dice(self) -> str:
        """``"1.000 -> 0.997"``."""
        return f"{float(self.old_dice):.3f} -> {float(self.new_dice):.3f}" if self.scored else "n/a"


@dataclasses.dataclass(frozen=True)
class HoldoutSplit:
    """A job's held-out regions split by whether they were accepted unedited: the corrected mask's gland pixels equal
    those of the prediction it corrected (instance ids may differ; the Dice sees only gland pixels), so that the model
    that made that prediction scores 1.000 there by construction. ``unedited_from``: model version -> how many of the
    unedited regions were its prediction (:attr:`RegionRecord.model_version`); ``regions``: ``"<id>@<version>"`` of
    the unedited ones. Sent by the worker in its ``Done`` event (``Done.holdout_split``, as :meth:`to_json`), kept with
    the version as ``metrics["holdout_split"]``."""

    edited: HeldPart = HeldPart()
    unedited: HeldPart = HeldPart()
    unedited_from: Dict[str, int] = dataclasses.field(default_factory=dict)
    regions: Tuple[str, ...] = ()

    def to_json(self) -> Dict[str, Any]:
        return {"edited": dataclasses.asdict(self.edited), "unedited": dataclasses.asdict(self.unedited),
                "unedited_from": dict(self.unedited_from), "regions": list(self.regions)}

    @classmethod
    def from_json(cls, data: Any) -> Optional["HoldoutSplit"]:
        """The split of :meth:`to_json`; None for anything else (a version or event from before it was kept)."""
        if not isinstance(data, dict):
            return None
        try:
            parts = [HeldPart(**{k: v for k, v in dict(data.get(key) or {}).items()
                                 if k in ("n", "gland_px", "old_dice", "new_dice")}) for key in ("edited", "unedited")]
            return cls(parts[0], parts[1], {str(k): int(v) for k, v in dict(data.get("unedited_from") or {}).items()},
                       tuple(str(r) for r in data.get("regions") or ()))
        except (TypeError, ValueError):
            return None

    def matches(self, ev: Done) -> bool:
        """The split is of ``ev``'s held-out regions: as many, and scored as the event was (enough gland in all of them
        together, :data:`MIN_HOLDOUT_GLAND_PX`). A split that does not match (an event edited by hand or by a script
        after the run) is not used."""
        scored = ev.old_dice is not None and ev.new_dice is not None
        return (self.edited.n + self.unedited.n == int(ev.n_holdout or 0)
                and (self.edited.gland_px + self.unedited.gland_px >= MIN_HOLDOUT_GLAND_PX) == scored)

    def note(self, current: str) -> str:
        """The unedited held-out regions in words (empty without any): how many, from whose prediction, and what that
        means for the score."""
        k, n = self.unedited.n, self.unedited.n + self.edited.n
        if not k:
            return ""
        froms = sorted(self.unedited_from)
        if froms == [current]:
            source = f"{current}'s own prediction"
        elif len(froms) == 1:
            source = f"{froms[0]}'s prediction"
        else:
            source = "the predictions of " + ", ".join(f"{v} ({self.unedited_from[v]})" for v in froms)
        said = f"{k} of {n} held-out regions {'was' if k == 1 else 'were'} accepted unedited from {source}"
        if current in froms and self.unedited.scored and float(self.unedited.old_dice) >= 0.9995:
            said += f": {current} scores {float(self.unedited.old_dice):.3f} there by construction"
        elif froms:
            said += ": such a region favours the model that made it"
        return said + "; only edited held-out regions show whether a model fixes errors"


@dataclasses.dataclass(frozen=True)
class NothingNew:
    """The store's latest model version was trained on what a retraining would train on now (:func:`nothing_new`)."""

    version: str
    created: str  # ISO time the version was added
    n_train: int
    n_holdout: int

    def since(self, when: str) -> str:
        """``"nothing new since v0001 (trained at 06:40 on the same 5 regions, 2 held out, same settings)"``;
        ``when``: :attr:`created` as the caller shows times (``06:40`` reads "at 06:40")."""
        at = f"at {when}" if ":" in when else when
        held = f", {self.n_holdout} held out" if self.n_holdout else ""
        return (f"nothing new since {self.version} (trained {at} on the same {plural(self.n_train, 'region')}"
                f"{held}, same settings)")


def nothing_new(store: ProjectStore, basis: Dict[str, Any]) -> Optional[NothingNew]:
    """The store's latest model version when it was trained on ``basis`` (no region accepted, accepted again or
    withdrawn since, same settings): retraining now would give the same model in effect. None when anything
    changed, when the store has no version, or when its latest version does not say what it was trained on (a
    version added by hand, or trained before versions kept it)."""
    models = store.models()
    if not models:
        return None
    last = max(models, key=lambda m: int(m.version[1:]) if m.version[1:].isdigit() else -1)
    had = (last.metrics or {}).get("trained_on")
    if not isinstance(had, dict) or any(had.get(key) != value for key, value in basis.items()):
        return None
    return NothingNew(last.version, last.created, len(basis["train"]), len(basis["holdout"]))


class RetrainJob:
    """A running (or finished) retraining process. Create with :meth:`start`."""

    def __init__(self, proc: subprocess.Popen, out_dir: Path, stderr_path: Path,
                 cancel_grace_s: float = CANCEL_GRACE_S) -> None:
        self._proc = proc
        self.out_dir = out_dir
        self.stderr_path = stderr_path
        self.cancel_grace_s = cancel_grace_s
        self._events: "queue.Queue[RetrainEvent]" = queue.Queue()
        self._finished = threading.Event()
        self._cancel_requested = False
        self._kill_timer: Optional[threading.Timer] = None
        self._reader = threading.Thread(target=self._read, name=f"retrain-reader-{proc.pid}", daemon=True)
        self._reader.start()

    # ------------------------------------------------------------------ start
    @classmethod
    def start(cls, store_path: PathLike, steps: Optional[int], out_dir: Optional[PathLike] = None, seed: int = 0,
              python: str = sys.executable, *, device: str = "auto",
              cancel_grace_s: float = CANCEL_GRACE_S, **options: Any) -> "RetrainJob":
        """Start retraining the store's current model in a child process; returns at once.

        Args:
            store_path: the project store.
            steps: optimiser steps (None: the recipe's default for the amount of corrected pixels).
            out_dir: where the run writes (default ``<store>/runs/<UTC time>-<pid>``).
            seed: training seed.
            python: interpreter to run the worker with.
            device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
            cancel_grace_s: seconds between SIGTERM and kill on :meth:`cancel`.
            **options: extra JOB.json keys (``recipe``, ``semi_supervised``, ``patch``, ``batch_labelled``,
                ``batch_unlabelled``, ``config`` (dict of TrainConfig fields), ``eval_tile``,
                ``agreement_crops``, ``register``; see :mod:`~napari_cdma.project.retrain_worker`).
        """
        store_path = Path(store_path).resolve()
        if out_dir is None:  # a new folder per run, also for two runs started within one second
            stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
            (store_path / "runs").mkdir(parents=True, exist_ok=True)
            out_dir = tempfile.mkdtemp(prefix=f"{stamp}-{os.getpid()}-", dir=store_path / "runs")
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        job = {"store": str(store_path), "steps": None if steps is None else int(steps), "out_dir": str(out_dir),
               "seed": int(seed), "device": device, **options}
        job_path = out_dir / "JOB.json"
        job_path.write_text(json.dumps(job, indent=1), encoding="utf-8")

        # a viewer started under torchrun must not make its retraining job join that process group
        env = {k: v for k, v in os.environ.items() if k not in _TORCHRUN_VARS}
        threads = str(torch_threads("retrain"))
        for var in _THREAD_VARS:
            env[var] = threads
        env["PYTHONUNBUFFERED"] = "1"
        kwargs: Dict[str, Any] = {}
        if os.name == "posix":
            kwargs["start_new_session"] = True
        else:  # pragma: no cover - Windows
            kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        stderr_path = out_dir / "worker.log"
        with open(stderr_path, "ab") as err:  # the child keeps its own handle
            proc = subprocess.Popen([python, "-m", "napari_cdma.project.retrain_worker", str(job_path)],
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                    text=True, bufsize=1, encoding="utf-8", errors="replace",
                                    env=env, **kwargs)
        logger.info("retraining started: pid %d, %s steps, output in %s", proc.pid, steps or "default", out_dir)
        return cls(proc, out_dir, stderr_path, cancel_grace_s)

    # ------------------------------------------------------------------ reading
    def _read(self) -> None:
        final: Optional[RetrainEvent] = None
        assert self._proc.stdout is not None
        try:
            for line in self._proc.stdout:
                line = line.strip()
                if not line:
                    continue
                try:
                    data = json.loads(line)
                    event = parse_event(data if isinstance(data, dict) else {})
                except ValueError:
                    logger.debug("retrain worker said: %s", line)
                    continue
                if isinstance(event, FINAL_EVENTS):
                    final = event
                self._events.put(event)
        except (OSError, ValueError):  # pipe closed under us
            logger.debug("retrain worker pipe closed", exc_info=True)
        code = self._proc.wait()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        if final is None:
            if self._cancel_requested:
                self._events.put(Cancelled(forced=True, returncode=code))
            else:
                self._events.put(Failed(returncode=code,
                                        message=f"training process exited with code {code}: {self._stderr_tail()}"))
        logger.info("retraining process %d ended with code %s", self._proc.pid, code)
        self._finished.set()

    def _stderr_tail(self) -> str:
        try:
            lines = self.stderr_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return "(no log)"
        tail = [ln for ln in lines if ln.strip()][-_STDERR_TAIL_LINES:]
        return "\n".join(tail) if tail else "(no output; killed from outside?)"

    def poll(self) -> List[RetrainEvent]:
        """Events received since the last call, oldest first; never blocks."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    # ------------------------------------------------------------------ state
    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def running(self) -> bool:
        """True until the process has ended and its final event is queued."""
        return not self._finished.is_set()

    @property
    def returncode(self) -> Optional[int]:
        """Exit code of the worker (negative: killed by that signal), None while it runs."""
        return self._proc.returncode if self._finished.is_set() else None

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block until the job has ended (for the CLI and tests, not the GUI); True if it has."""
        return self._finished.wait(timeout)

    # ------------------------------------------------------------------ cancel
    def cancel(self) -> None:
        """Ask the worker to stop after its current step; kill it if it has not after the grace period.

        Returns at once. The queue then receives a ``Cancelled`` event.
        """
        if not self.running or self._cancel_requested:
            return
        self._cancel_requested = True
        try:
            if os.name == "posix":
                self._proc.send_signal(signal.SIGTERM)
            else:  # pragma: no cover - Windows: no graceful signal to a console-less child
                self._proc.terminate()
        except ProcessLookupError:
            return
        timer = threading.Timer(self.cancel_grace_s, self._force_kill)
        timer.daemon = True
        self._kill_timer = timer
        timer.start()
        logger.info("cancel requested for retraining process %d", self._proc.pid)

    def _force_kill(self) -> None:
        if self._proc.poll() is not None:
            return
        logger.warning("retraining process %d did not stop within %.0f s: killing it",
                       self._proc.pid, self.cancel_grace_s)
        try:
            if os.name == "posix":
                os.killpg(self._proc.pid, signal.SIGKILL)  # its own group: napari is not in it
            else:  # pragma: no cover
                self._proc.kill()
        except (ProcessLookupError, PermissionError):
            pass


class Why(str, enum.Enum):
    """Why the promotion rule decided as it did (:class:`Decision`), for a short verdict (:func:`verdict_short`)
    that does not read the reason's words."""

    BETTER = "better"  # better on enough held-out regions: promoted
    CHANGED_UNCORRECTED = "changed_uncorrected"  # it changed the prediction of uncorrected tissue
    FELL_UNEDITED = "fell_unedited"  # it fell on the held-out regions accepted unedited
    TOO_LITTLE = "too_little"  # too little held out to decide automatically
    NOT_BETTER = "not_better"  # not better on enough held-out regions


class Decision(NamedTuple):
    """:func:`rule_decision`'s answer: promote or not, the reason in words (completes "promoted: ..." /
    "not promoted: ..."), the reason as a code, and whether the decision is left to the user ("Keep new model
    anyway if you trust it": the job held out too little to decide)."""

    promote: bool
    reason: str
    why: Why
    keep_anyway: bool = False


def rule_decision(ev: Done, outlook: Optional[HoldoutOutlook] = None,
                  split: Optional[HoldoutSplit] = None) -> Decision:
    """What the promotion rule decides for a finished job, and the reason in words.

    A new model is promoted only when it scored better than the old one on at least
    ``MIN_HOLDOUT_FOR_PROMOTION`` held-out regions (all of them, pooled) and it agrees with the current
    model on uncorrected tissue at least ``ev.min_agreement`` (``src_model.agreement.MIN_AGREEMENT``):
    a model that changed what nobody corrected is not promoted however well it scores on the few
    held-out regions. With fewer held-out regions, or held-out regions that hold too little gland to be
    scored (``old_dice`` / ``new_dice`` None, :data:`MIN_HOLDOUT_GLAND_PX`), the decision is left to the
    user and the reason says it rests on too little, and how far automatic promotion is (:func:`promotion_outlook`;
    in numbers of accepted regions when ``outlook`` gives the store's).

    Held-out regions accepted unedited (``split``, :class:`HoldoutSplit`, when the job scored them): the truth there
    is a model's own prediction, so the model that made it scores 1.000 there by construction and a new model can
    only lose. They count as a no-regression check: the new model must not fall more than
    :data:`UNEDITED_TOLERANCE` below the current one on them; "better" is judged on the edited held-out regions
    alone, at least ``MIN_HOLDOUT_FOR_PROMOTION`` of them with enough gland (:func:`_split_decision`). Without a split
    (a job from before it was kept, or one that is not of ``ev``: :meth:`HoldoutSplit.matches`) or without unedited
    regions, the rule is as above.

    Returns:
        :class:`Decision`: ``(promote, reason, why, keep_anyway)``; ``reason`` completes "promoted: ..." /
        "not promoted: ...", ``why`` is its code (:class:`Why`).
    """
    from src_model.agreement import MIN_AGREEMENT  # torch-free

    n = int(ev.n_holdout or 0)
    scored = ev.old_dice is not None and ev.new_dice is not None
    limit = MIN_AGREEMENT if ev.min_agreement is None else float(ev.min_agreement)
    regressed = ev.agreement is not None and ev.agreement < limit
    changed = (f"it changed the prediction of uncorrected tissue: agreement with the current model "
               f"{ev.agreement:.3f} < {limit:.3f}") if regressed else ""
    unchecked = ("; not checked against the current model: no stored image has uncorrected tissue (outside the "
                 "accepted regions)"
                 if ev.agreement is None else "")
    if split is not None and split.unedited.n and scored and split.matches(ev):
        return _split_decision(ev, split, changed, unchecked)
    if n < MIN_HOLDOUT_FOR_PROMOTION or not scored:
        basis = (f"decided on {n} held-out region(s)" if scored
                 else held_out_text(ev).split(": ")[0] if n else "no held-out region to decide on")
        reasons = [f"{basis}: too little to promote automatically, {promotion_outlook(n, scored, outlook)}"] \
            + ([changed] if changed else [])
        return Decision(False, "; ".join(reasons) + f"; Keep new model anyway if you trust it{unchecked}",
                        Why.CHANGED_UNCORRECTED if changed else Why.TOO_LITTLE, keep_anyway=True)
    if regressed:
        return Decision(False, f"{changed}; the current model stays", Why.CHANGED_UNCORRECTED)
    if ev.better:
        return Decision(True, f"better on {n} held-out regions: it is now the current model{unchecked}", Why.BETTER)
    return Decision(False, f"not better on {n} held-out regions: the current model stays", Why.NOT_BETTER)


def _split_decision(ev: Done, split: HoldoutSplit, changed: str, unchecked: str) -> Decision:
    """:func:`rule_decision` for a scored job with held-out regions accepted unedited: "better" on the edited ones
    (at least ``MIN_HOLDOUT_FOR_PROMOTION`` with enough gland), no fall of more than :data:`UNEDITED_TOLERANCE` on
    the unedited ones; with too few edited ones the decision rests on confirmed regions only and is the user's."""
    e, u = split.edited, split.unedited
    note = split.note(ev.parent_model)
    if not u.scored:
        kept = (f"too little gland in the {plural(u.n, 'unedited held-out region')} to check the new model on "
                f"({u.gland_px} px)")
        fell = False
    else:
        fell = float(u.new_dice) < float(u.old_dice) - UNEDITED_TOLERANCE
        them = "the unedited one" if u.n == 1 else "the unedited ones"
        kept = (f"the new model fell on {them} by more than {UNEDITED_TOLERANCE:.2f} ({u.dice()})" if fell else
                f"the new model kept {them} (Dice {u.dice()}, within {UNEDITED_TOLERANCE:.2f})")
    if e.n < MIN_HOLDOUT_FOR_PROMOTION or not e.scored:
        if not e.n:
            basis = f"the decision rests on confirmed regions only: {kept}"
        elif e.scored:
            basis = f"decided on {plural(e.n, 'edited held-out region')} (Dice {e.dice()}); {kept}"
        else:
            basis = (f"the edited held-out regions hold too little gland to score ({e.gland_px} px in "
                     f"{plural(e.n, 'region')}); {kept}")
        needs = (f"too little to promote automatically, which needs {MIN_HOLDOUT_FOR_PROMOTION} edited held-out "
                 f"regions with at least {MIN_HOLDOUT_GLAND_PX} px of gland: {e.n or 'none'} so far (a region "
                 f"accepted without an edit does not count towards it)")
        why = Why.CHANGED_UNCORRECTED if changed else Why.FELL_UNEDITED if fell else Why.TOO_LITTLE
        return Decision(False, "; ".join([note, basis, needs] + ([changed] if changed else []))
                        + f"; Keep new model anyway if you trust it{unchecked}", why, keep_anyway=True)
    if changed:
        return Decision(False, f"{note}; {changed}; the current model stays", Why.CHANGED_UNCORRECTED)
    if fell:
        return Decision(False, f"{note}; {kept}: the current model stays", Why.FELL_UNEDITED)
    if float(e.new_dice) > float(e.old_dice):
        also = f" and {kept[len('the new model '):]}" if u.scored else f"; {kept}"
        return Decision(True, f"{note}; better on the {plural(e.n, 'edited held-out region')} (Dice {e.dice()}){also}: "
                              f"it is now the current model{unchecked}", Why.BETTER)
    return Decision(False, f"{note}; not better on the {plural(e.n, 'edited held-out region')} (Dice {e.dice()}): the "
                           f"current model stays", Why.NOT_BETTER)


#: :class:`Why` in a few words, as the short verdict says it (:func:`verdict_short`).
WHY_SHORT = {Why.BETTER: "better on held-out regions", Why.CHANGED_UNCORRECTED: "it changed uncorrected tissue",
             Why.FELL_UNEDITED: "worse on regions accepted unedited", Why.TOO_LITTLE: "too little held out to decide",
             Why.NOT_BETTER: "not better on held-out regions"}


class HeldOutTrend(NamedTuple):
    """Which way a job's held-out Dice went, current -> new model, on the held-out regions "better" is judged on: all
    of them, or the edited ones when some were accepted unedited (``edited``; ``unedited``: those regions' Dice in
    words, ``"1.000 -> 0.995 on 1 region accepted unedited"``, empty if not scored). Walk 26: a verdict "too little
    held out to decide" did not say that the new model had scored lower on the little there was."""

    old: float
    new: float
    n: int
    edited: bool = False
    unedited: str = ""

    @property
    def fell(self) -> bool:
        """Lower as the verdict prints it (three decimals): 0.9391 -> 0.9389 reads 0.939 -> 0.939, not "lower"."""
        return round(self.new, 3) < round(self.old, 3)

    @property
    def rose(self) -> bool:
        return round(self.new, 3) > round(self.old, 3)

    def regions(self) -> str:
        """``"your held-out region"``, ``"your 2 edited held-out regions"``."""
        kind = "edited held-out region" if self.edited else "held-out region"
        return f"your {kind}" if self.n == 1 else f"your {self.n} {kind}s"

    def dice(self) -> str:
        return f"Dice {self.old:.3f} -> {self.new:.3f}"

    @classmethod
    def of(cls, ev: Done, split: Optional[HoldoutSplit] = None) -> Optional["HeldOutTrend"]:
        """The trend of ``ev`` (with its ``split``, :class:`HoldoutSplit`); None when it scored nothing, or only
        regions accepted unedited (there the current model scores 1.000 by construction: no trend to read)."""
        if ev.old_dice is None or ev.new_dice is None:
            return None
        if split is not None and split.unedited.n and split.matches(ev):
            e, u = split.edited, split.unedited
            if not (e.n and e.scored):
                return None
            unedited = f"{u.dice()} on {plural(u.n, 'region')} accepted unedited" if u.scored else ""
            return cls(float(e.old_dice), float(e.new_dice), e.n, True, unedited)
        return cls(float(ev.old_dice), float(ev.new_dice), int(ev.n_holdout or 0))


#: What *Keep new model anyway* is offered with when the new model scored lower on the held-out regions.
KEEP_DESPITE_LOWER = "Keep new model anyway only if its glands look better to you despite the lower score"


def verdict_short(version: str, promoted: bool, why: Optional[Why], held_out: str, keep_anyway: bool = False,
                  trend: Optional[HeldOutTrend] = None) -> str:
    """A finished job's verdict in a few short lines for the 280 px dock (walk 23: some 19 lines, the held-out Dice
    said twice): the version, promoted or not and why in a few words (``why``: :class:`Decision`'s code; None, as for
    a choice of the user's, says none), the held-out Dice once (``held_out``, from :func:`held_out_text`), and what the
    user can do (``keep_anyway``: :class:`Decision`'s). The whole verdict goes in the tooltip.

    With the held-out ``trend`` (:class:`HeldOutTrend`) of a job left to the user for too little held out, the first
    line says which way the score went, with its Dice (walk 26: "not promoted: too little held out to decide" over a
    fall of 0.045): lower, and too little to decide anyway; or higher, but thin evidence. After a fall, *Keep new model
    anyway* is offered with the lower score in mind."""
    if promoted:
        why = Why.BETTER
    fell = bool(trend is not None and not promoted and keep_anyway and trend.fell)
    then = ("It is now the current model." if promoted else f"{KEEP_DESPITE_LOWER}." if fell else
            "Keep new model anyway if you trust it." if keep_anyway else "The current model stays.")
    if trend is not None and not promoted and keep_anyway and why is Why.TOO_LITTLE and (trend.fell or trend.rose):
        first = (f"{version} scored lower on {trend.regions()}: {trend.dice()}; too little held out to decide anyway."
                 if trend.fell else
                 f"{version} scored higher on {trend.regions()}: {trend.dice()}, but that is thin evidence: too "
                 f"little held out to decide.")
        second = f"Not promoted; {trend.unedited}." if trend.unedited else "Not promoted: the current model stays."
        return f"{first}\n{second}\n{then}"
    said = f": {WHY_SHORT[why]}" if why is not None else ""
    return f"{version}: {'promoted' if promoted else 'not promoted'}{said}.\n{held_out[0].upper()}{held_out[1:]}." \
           f"\n{then}"


def finish(store: ProjectStore, result_event: Done, promote: Optional[bool] = None,
           note: str = "", trained_on: Optional[Dict[str, Any]] = None,
           split: Optional[HoldoutSplit] = None) -> ModelRecord:
    """Add a finished job's model to the store; it becomes current if better (or if ``promote``).

    Args:
        store: the project store the job trained from.
        result_event: the job's ``Done`` event.
        promote: None = the rule (:func:`rule_decision`): promote when the new model scored better
            on at least ``MIN_HOLDOUT_FOR_PROMOTION`` held-out regions (never on fewer) and agrees with
            the current model on uncorrected tissue; True / False = the user's choice.
        note: free text kept with the model version.
        trained_on: what the job trained on (:func:`training_basis`), kept as ``metrics["trained_on"]`` so that
            :func:`nothing_new` can tell a retraining that would change nothing; default: the event's
            (``Done.trained_on``), none if it says none.
        split: the job's held-out regions split by whether they were accepted unedited (:class:`HoldoutSplit`), for
            the rule and kept as ``metrics["holdout_split"]``; default: the event's (``Done.holdout_split``), none if
            it says none (the rule then pools all held-out regions, as before).

    Returns:
        The new model version's record; ``metrics["decision"]`` says why it was (not) promoted, and, when the rule
        decided, ``metrics["decision_code"]`` is that as :class:`Why`'s value and ``metrics["keep_anyway"]`` whether
        the rule left it to the user.

    Raises:
        TypeError: ``result_event`` is not a ``Done`` event.
        StoreError: the store could not be written; nothing was changed.
    """
    if not isinstance(result_event, Done):
        raise TypeError(f"finish() needs the job's Done event, got {type(result_event).__name__}")
    ev = result_event
    if split is None:
        split = HoldoutSplit.from_json(ev.holdout_split)
    if split is not None and not split.matches(ev):
        logger.warning("the held-out split of %s is not of this result (%d held out, scored: %s): not used",
                       ev.checkpoint, int(ev.n_holdout or 0), ev.old_dice is not None)
        split = None
    code: Dict[str, Any] = {}
    if promote is None:
        promoted, decision, why, keep = rule_decision(ev, HoldoutOutlook.of(store), split)
        code = {"decision_code": why.value, "keep_anyway": keep}
    else:
        promoted, decision = bool(promote), "the user's choice"
    metrics = {"old_dice": ev.old_dice, "new_dice": ev.new_dice, "n_holdout": ev.n_holdout,
               "better": ev.better, "steps_done": ev.steps_done, "agreement": ev.agreement,
               "min_agreement": ev.min_agreement, "recipe": ev.recipe,
               "per_image": [dataclasses.asdict(r) for r in ev.per_image],
               "promoted_by": "rule" if promote is None else "user", "decision": decision, **code}
    if trained_on is None and isinstance(ev.trained_on, dict):
        trained_on = dict(ev.trained_on)
    if trained_on is not None:
        metrics["trained_on"] = trained_on
    if split is not None:
        metrics["holdout_split"] = split.to_json()
    parent = ev.parent_model or store.current_model_version
    record = store.add_model(ev.checkpoint, parent=parent, metrics=metrics, note=note or ev.message,
                             promoted=promoted)
    logger.info("model %s added (parent %s, promoted=%s: %s)", record.version, parent, promoted, decision)
    return record
