"""The retraining protocol: typed events the worker process sends and the dock receives.

The worker writes one JSON object per line on its stdout (``{"event": <kind>, ...fields}``);
:class:`~napari_cdma.project.retrain_job.RetrainJob` parses each line with :func:`parse_event`
into one of the dataclasses below, so the GUI never reads bare dicts or tuples.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, Optional, Tuple, Type, Union


@dataclass(frozen=True)
class Started:
    """Training began: what it trains on."""

    kind: ClassVar[str] = "started"
    model_version: str
    n_labelled: int
    n_unlabelled: int
    n_holdout: int
    pid: int = 0
    config: Dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """One optimiser step done; ``metrics`` holds the loss terms."""

    kind: ClassVar[str] = "progress"
    step: int
    total: int
    eta_s: Optional[float] = None
    metrics: Dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Evaluating:
    """Training ended; old and new model are being scored on the held-out regions."""

    kind: ClassVar[str] = "evaluating"
    n_holdout: int


@dataclass(frozen=True)
class ImageScore:
    """Before / after of one project image in a :class:`Done` event.

    Attributes:
        image: the image's name (its file name when known, else the start of its hash).
        n_holdout: held-out regions of this image.
        old_dice / new_dice: pooled Dice of the current / new model on them (None without any).
        agreement: Dice of the new model's labels with the current model's on this image's uncorrected
            tissue (None when no crop of it was compared).
        image_hash: the image's store hash (empty from a worker from before it was sent), by which the dock names the
            image as its other panels do.
    """

    image: str
    n_holdout: int = 0
    old_dice: Optional[float] = None
    new_dice: Optional[float] = None
    agreement: Optional[float] = None
    image_hash: str = ""


@dataclass(frozen=True)
class Done:
    """A new checkpoint exists and was scored. ``better`` is None when nothing was held out.

    ``agreement`` is the pooled agreement with the current model on uncorrected tissue (None when no
    tissue could be compared) and ``min_agreement`` the threshold the promotion rule applies;
    ``per_image`` the before / after of each image. ``holdout_split``: the held-out regions accepted unedited and the
    Dice of the edited and the unedited ones apart (``retrain_job.HoldoutSplit.to_json``; None: not said, a worker
    from before it was sent); ``trained_on``: what the job trained on (``retrain_job.training_basis``; None: not
    said). ``version`` / ``promoted`` / ``decision`` are set when the worker itself registered the model in the store
    (``cdma retrain``).
    """

    kind: ClassVar[str] = "done"
    checkpoint: str
    parent_model: str
    steps_done: int
    n_holdout: int
    old_dice: Optional[float] = None
    new_dice: Optional[float] = None
    better: Optional[bool] = None
    message: str = ""
    agreement: Optional[float] = None
    min_agreement: Optional[float] = None
    agreement_crops: int = 0
    recipe: str = ""
    per_image: Tuple[ImageScore, ...] = ()
    holdout_split: Optional[Dict[str, Any]] = None
    trained_on: Optional[Dict[str, Any]] = None
    version: Optional[str] = None
    promoted: Optional[bool] = None
    decision: str = ""

    def __post_init__(self) -> None:
        # from a protocol line the rows arrive as dicts
        rows = tuple(r if isinstance(r, ImageScore) else ImageScore(**{k: v for k, v in dict(r).items()
                                                                        if k in _IMAGE_SCORE_FIELDS})
                     for r in (self.per_image or ()))
        object.__setattr__(self, "per_image", rows)


@dataclass(frozen=True)
class Cancelled:
    """The job stopped on request; ``forced`` when it had to be killed."""

    kind: ClassVar[str] = "cancelled"
    steps_done: int = 0
    forced: bool = False
    returncode: Optional[int] = None


@dataclass(frozen=True)
class Failed:
    """The job failed; ``message`` says why in one line (plus the worker log's tail)."""

    kind: ClassVar[str] = "error"
    message: str
    returncode: Optional[int] = None


_IMAGE_SCORE_FIELDS = {f.name for f in dataclasses.fields(ImageScore)}
RetrainEvent = Union[Started, Progress, Evaluating, Done, Cancelled, Failed]
FINAL_EVENTS = (Done, Cancelled, Failed)
_BY_KIND: Dict[str, Type[Any]] = {c.kind: c for c in (Started, Progress, Evaluating, Done, Cancelled, Failed)}


def to_json(event: RetrainEvent) -> str:
    """One protocol line (without the newline)."""
    return json.dumps({"event": event.kind, **dataclasses.asdict(event)}, default=str)


def parse_event(data: Dict[str, Any]) -> RetrainEvent:
    """The typed event of a decoded protocol line.

    Unknown fields are ignored, so an older dock can read a newer worker's events.

    Raises:
        ValueError: ``data`` names no known event kind or lacks a required field.
    """
    cls = _BY_KIND.get(str(data.get("event")))
    if cls is None:
        raise ValueError(f"unknown retrain event {data.get('event')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ValueError(f"malformed {cls.kind!r} event: {exc}") from None
