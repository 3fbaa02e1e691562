"""``cdma retrain STORE``: retrain a project store's current model headless, as the plugin's Retrain does.

The store and its retraining worker belong to the plugin package (``napari_cdma.project``); the engine
never imports it. This command writes the worker's ``JOB.json`` and runs the same worker process the
dock runs (``python -m napari_cdma.project.retrain_worker``), so the recipe, the scoring and the
promotion rule are the dock's. The worker registers the new model in the store (``register``), promoted
by the rule (``--promote auto``), always (``yes``) or never (``no``).

Output: progress on stderr (or JSON lines on stdout with ``--progress json``), a per-image before/after
table on stderr (with a line of the edited and the unedited held-out regions' Dice apart when some were accepted
unedited), and one JSON line ``{"event": "done", ...}`` on stdout (``holdout_split``: those regions and both Dice,
:class:`napari_cdma.project.retrain_job.HoldoutSplit`). Exit status: 0 done,
2 bad input (no store, nothing to train on, unknown recipe), 1 the worker failed, 130 interrupted,
3 nothing new: the store's latest version was trained on the same accepted regions (none accepted, accepted again
or withdrawn since) with the same settings, so the run would give the same model; one line on stderr says which
version and when, one JSON line ``{"event": "nothing_new", ...}`` on stdout, and nothing is written. ``--force``
trains anyway.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

WORKER = "napari_cdma.project.retrain_worker"
PROMOTE = ("auto", "yes", "no")
#: Exit status when the store's latest version was trained on what this run would train on (``--force`` trains)
EXIT_NOTHING_NEW = 3
# Failures of the worker that are the input's fault (exit status 2, as the other sub-commands)
_INPUT_ERRORS = ("ValueError", "KeyError", "StoreError", "FileNotFoundError", "CheckpointError")


class RetrainError(Exception):
    """The worker failed; ``code`` is the exit status to return."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _fmt(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


def _table(done: Dict[str, Any]) -> str:
    rows = done.get("per_image") or []
    lines = [f"{'image':<32} {'held-out':>8} {'before':>7} {'after':>7} {'agreement':>9}"]
    for r in rows:
        lines.append(f"{str(r.get('image'))[:32]:<32} {r.get('n_holdout', 0):>8} {_fmt(r.get('old_dice')):>7} "
                     f"{_fmt(r.get('new_dice')):>7} {_fmt(r.get('agreement')):>9}")
    return "\n".join(lines)


def _unscored(store: Path, done: Dict[str, Any]) -> list:
    """The images trained on (named as the worker names them) that have no per-image row in ``done``."""
    try:
        from napari_cdma.project.retrain_worker import _image_name
        from napari_cdma.project.store import ProjectStore

        project = ProjectStore.open(store, create=False)
        records = project.regions()
        trained = dict.fromkeys(_image_name(records, r.image_hash) for r in project.training_regions())
    except Exception:  # the table stands without the line
        return []
    listed = {r.get("image") for r in done.get("per_image") or []}
    return [name for name in trained if name not in listed]


def _nothing_new(store: Path, args) -> Any:
    """The store's latest version (a ``retrain_job.NothingNew``) when it was trained on what this run would train on:
    the same live accepted regions and settings; else None (also with nothing to train on: the worker says so)."""
    from napari_cdma.project.retrain_job import nothing_new, store_basis
    from napari_cdma.project.store import ProjectStore

    project = ProjectStore.open(store, create=False)
    if not project.training_regions():
        return None
    return nothing_new(project, store_basis(project, recipe=args.recipe, steps=args.steps,
                                           semi_supervised=args.semi_supervised, seed=args.seed))


def run_worker(job: Dict[str, Any], out_dir: Path, on_event: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """Run the retraining worker on ``job`` and pass it each event (a dict); returns the ``done`` event.

    Raises:
        RetrainError: the worker reported an error or ended without a result.
        KeyboardInterrupt: after asking the worker to stop (it saves nothing to the store).
    """
    from .fileio import atomic_write_bytes

    job_path = out_dir / "JOB.json"
    text = json.dumps(job, indent=1)  # put in place whole: a full disk leaves no half-written job
    atomic_write_bytes(job_path, lambda f: f.write(text.encode("utf-8")))
    log_path = out_dir / "worker.log"
    with open(log_path, "ab") as err:
        proc = subprocess.Popen([sys.executable, "-m", WORKER, str(job_path)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=err, text=True, encoding="utf-8", errors="replace")
    final: Optional[Dict[str, Any]] = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            on_event(event)
            if event.get("event") in ("done", "cancelled", "error"):
                final = event
        code = proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)  # the worker stops between steps and registers nothing
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if final is None:
        tail = [ln for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
        raise RetrainError(f"the retraining worker exited with code {code} without a result"
                           f"{': ' + tail[-1] if tail else ''} (log: {log_path})", 1)
    if final["event"] == "error":
        message = str(final.get("message", "")).splitlines()[0] if final.get("message") else "unknown error"
        kind, _, rest = message.partition(": ")
        raise RetrainError(rest if kind in _INPUT_ERRORS and rest else message, 2 if kind in _INPUT_ERRORS else 1)
    if final["event"] == "cancelled":
        raise KeyboardInterrupt
    return final


def cmd_retrain(args, progress_printer, user_error) -> int:
    """``cdma retrain``; ``progress_printer`` and ``user_error`` come from :mod:`src_model.cli`."""
    from .progress import Progress

    store = Path(args.store)
    if not store.exists():
        raise user_error(f"{store}: no such project store")
    if not store.is_dir():
        raise user_error(f"{store}: not a project store (a folder made by the plugin)")
    if importlib.util.find_spec("napari_cdma") is None:
        raise user_error("cdma retrain needs the napari-cdma plugin package (its project store and retraining "
                         "worker); install napari-cdma")
    # the store is checked before anything is written into it (a run folder in any other folder was left behind)
    if not (store / "zarr.json").is_file():
        raise user_error(f"{store}: not a napari-cdma project store (no zarr.json); give the folder the dock's "
                         f"Project store panel made")
    from napari_cdma.project.store_io import StoreError, read_index

    try:
        read_index(store)
    except StoreError as exc:
        raise user_error(str(exc)) from exc
    if not args.force:  # before anything is written: a refused run leaves no run folder
        try:
            same = _nothing_new(store, args)
        except StoreError as exc:
            raise user_error(str(exc)) from exc
        if same is not None:
            from napari_cdma._time_text import full_when

            print(f"cdma retrain: {same.since(full_when(same.created))}: accept or withdraw a region first, or "
                  f"pass --force to train anyway", file=sys.stderr)
            print(json.dumps({"event": "nothing_new", "version": same.version, "created": same.created,
                              "n_train": same.n_train, "n_holdout": same.n_holdout}), flush=True)
            return EXIT_NOTHING_NEW
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    out_dir = Path(args.out) if args.out else store.resolve() / "runs" / f"{stamp}-cli-{os.getpid()}"
    if (out_dir / "final.pt").exists():
        raise user_error(f"{out_dir}/final.pt exists; choose another --out")
    out_dir.mkdir(parents=True, exist_ok=True)
    job = {"store": str(store.resolve()), "steps": args.steps, "out_dir": str(out_dir.resolve()), "seed": args.seed,
           "device": args.device, "recipe": args.recipe, "semi_supervised": args.semi_supervised,
           "register": args.promote}
    show = progress_printer(args.progress)

    def on_event(ev: Dict[str, Any]) -> None:
        kind = ev.get("event")
        if kind == "progress":
            show(Progress("train", int(ev["step"]), int(ev["total"]), ev.get("metrics") or {}, ev.get("eta_s")))
        elif kind == "started" and args.progress != "json":
            print(f"retraining {ev.get('model_version')} on {ev.get('n_labelled')} region(s) + "
                  f"{ev.get('n_unlabelled')} unlabelled image(s), {ev.get('n_holdout')} held out; "
                  f"{ev.get('config', {}).get('steps')} steps, recipe {ev.get('config', {}).get('recipe')}",
                  file=sys.stderr, flush=True)
        elif kind == "evaluating" and args.progress != "json":
            print("scoring the new model against the current one...", file=sys.stderr, flush=True)

    try:
        done = run_worker(job, out_dir, on_event)
    except RetrainError as exc:
        if exc.code == 2:
            raise user_error(str(exc)) from exc
        print(f"cdma retrain: error: {exc}", file=sys.stderr)
        return exc.code
    print(_table(done), file=sys.stderr)
    missing = _unscored(store, done)
    if missing:  # as the dock's line under its table: an image trained on without a row is not one left out
        print(f"not in the table: {', '.join(missing)} (trained on; no region of "
              f"{'it' if len(missing) == 1 else 'them'} held out, no uncorrected tissue compared)", file=sys.stderr)
    from napari_cdma.project.events import parse_event
    from napari_cdma.project.retrain_job import HoldoutSplit, held_out_text

    # held-out regions accepted unedited (walk 22): the edited and the unedited ones' Dice apart; the decision says
    # what they mean
    split = HoldoutSplit.from_json(done.get("holdout_split"))
    if split is not None and split.unedited.n:
        print(f"{held_out_text(parse_event(done), split)} ({split.unedited.n} of {done.get('n_holdout')} held-out "
              f"accepted unedited: {', '.join(split.regions)})", file=sys.stderr)
    print(f"{done.get('version')}: {'promoted' if done.get('promoted') else 'not promoted'}: {done.get('decision')}",
          file=sys.stderr)
    keys = ("checkpoint", "version", "promoted", "decision", "parent_model", "steps_done", "recipe", "n_holdout",
            "old_dice", "new_dice", "agreement", "min_agreement", "per_image")
    print(json.dumps({"event": "done", **{k: done.get(k) for k in keys},
                      "holdout_split": None if split is None else split.to_json()}), flush=True)
    return 0


def add_parser(sub, func, *, int_in, device, max_steps: int, recipes) -> None:
    """Register ``retrain`` on the ``cdma`` sub-command parser (types and ranges from :mod:`src_model.cli`)."""
    r = sub.add_parser("retrain", help="retrain a project store's current model on its accepted regions (headless)",
                       description="Retrain a project store's current model on its accepted regions, with the "
                                   "dock's recipe, scoring and promotion rule (it runs the plugin's retraining "
                                   "worker), and add the new model to the store.")
    r.add_argument("store", help="project store folder (made by the plugin)")
    r.add_argument("--steps", type=int_in(1, max_steps), default=None,
                   help=f"optimiser steps, 1..{max_steps} (default: the recipe's for the amount of corrected pixels)")
    r.add_argument("--recipe", choices=list(recipes), default="default",
                   help="fine-tuning recipe (default: the one chosen by benchmarks/forgetting.py; plain: no "
                        "regulariser, as before)")
    r.add_argument("--promote", choices=PROMOTE, default="auto",
                   help="auto: the dock's rule (better on enough held-out regions and agrees with the current "
                        "model on uncorrected tissue, src_model.agreement); yes / no: always / never make it "
                        "current")
    r.add_argument("--semi-supervised", action="store_true",
                   help="add CDMA's unsupervised terms (default off: supervised fine-tuning with the recipe's "
                        "distillation matched it in the simulated annotation sessions, in half the time)")
    r.add_argument("--force", action="store_true",
                   help="train even when the store's latest version was trained on the same accepted regions with "
                        "the same settings (without it, such a run is refused with exit status 3: it would give "
                        "the same model)")
    r.add_argument("--seed", type=int_in(0, 2**32 - 1), default=0)
    r.add_argument("--device", type=device, default="auto", help="auto (CUDA if available), cpu, cuda or cuda:N")
    r.add_argument("--out", help="run folder (default: STORE/runs/<time>-cli-<pid>)")
    r.add_argument("--progress", choices=("text", "json"), default="text")
    r.set_defaults(func=func)
