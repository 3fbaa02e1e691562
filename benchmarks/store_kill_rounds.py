"""Kill -9 rounds against the project store: crash safety of accept, model add and withdraw.

Each round forks a writer that loops over store writes (accept a region, often on a fresh image;
accept a new version of a region; add a model version; withdraw a region) and logs each write
*after it returned*. The driver kills the writer with SIGKILL after a random short delay (every
other round: 0-10 ms after ``intent.json`` appears, i.e. inside the commit window), reopens
the store (which runs recovery) and checks:

- blocked: the store does not open, or a new accept after reopening fails;
- lost: a write that returned before the kill is missing or reads back different;
- half-visible: a region version, image or model that the index names but that does not read back
  (missing or damaged file), or a folder the index does not name left in place after recovery.

The issue's target is 0, 0, 0. Also counted: what recovery did (writes finished or undone, orphans
adopted or quarantined), i.e. how many kills landed inside a write.

Usage::

    python benchmarks/store_kill_rounds.py [--rounds 30] [--seed 0] [--max-delay 0.4]
                                           [--workdir DIR] [--checkpoint lite.pt] [--out benchmarks/results]

Writes ``<out>/store_kills.json`` and ``<out>/store_kills.md`` (``--out ''`` writes nothing, for
tests). Runs on the CPU in a few seconds; the images are the checked-in GlaS test images
(``tests/data/glas``). The writer processes are forked from this one after torch and zarr are
imported (so each round starts in milliseconds); this process runs no torch operation itself.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GLAS = ROOT / "tests" / "data" / "glas"
BOX = 48


def _images() -> List[tuple]:
    from src_model.io import read_image, read_mask

    return [(read_image(GLAS / "images" / f"{n}.png"), read_mask(GLAS / "masks" / f"{n}.png"))
            for n in ("testA_1", "testA_2")]


def _log(fd: int, **record: Any) -> None:
    os.write(fd, (json.dumps(record) + "\n").encode())


def _writer(store_dir: Path, log_path: Path, checkpoint: Path, seed: int, images: Sequence[tuple]) -> None:
    """The child: store writes in a loop until it is killed; each returned write is logged."""
    import torch

    from napari_cdma.project.store import BUNDLED, ProjectStore
    from napari_cdma.project.store_io import checksum

    def stored(labels):  # the store keeps labels as uint8, or uint32 above 255
        return labels.astype(np.uint8 if labels.max() <= 255 else np.uint32)

    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = ProjectStore.open(store_dir)
    for _ in range(1000):
        op = rng.choice(["accept_new_image", "accept", "accept_again", "model", "withdraw"],
                        p=[0.3, 0.25, 0.15, 0.15, 0.15])
        if op.startswith("accept"):
            image, mask = images[int(rng.integers(len(images)))]
            if op == "accept_new_image":  # a sub-image with its own hash: a new stored image too
                y, x = int(rng.integers(0, 200)), int(rng.integers(0, 300))
                image, mask = image[y:y + 200, x:x + 200], mask[y:y + 200, x:x + 200]
            live = [r for r in store.regions() if r.image_hash and r.bbox[2] <= image.shape[0]
                    and r.bbox[3] <= image.shape[1]]
            if op == "accept_again" and live:
                box = live[int(rng.integers(len(live)))].bbox
            else:
                y0 = int(rng.integers(0, image.shape[0] - BOX))
                x0 = int(rng.integers(0, image.shape[1] - BOX))
                box = (y0, x0, y0 + BOX, x0 + BOX)
            corrected = mask[box[0]:box[2], box[1]:box[3]].astype(np.uint32)
            corrected[: int(rng.integers(0, BOX))] = int(rng.integers(0, 300))  # every write different
            rec = store.accept_region(image, box, corrected, (corrected > 0).astype(np.uint8),
                                      model_version=BUNDLED, user="killtest")
            _log(fd, op="accept", rid=rec.region_id, version=rec.version, checksum=checksum(stored(corrected)))
        elif op == "model":
            rec = store.add_model(checkpoint, parent=BUNDLED, promoted=bool(rng.integers(2)))
            _log(fd, op="model", version=rec.version, promoted=rec.promoted)
        else:
            live = store.regions()
            if live:
                rid = live[int(rng.integers(len(live)))].region_id
                store.withdraw(rid)
                _log(fd, op="withdraw", rid=rid)


def _unnamed_on_disk(root: Path, index: Dict[str, Any]) -> List[str]:
    out = []
    for entry in (root / "regions").iterdir():
        if entry.name == "zarr.json":
            continue
        reg = index["regions"].get(entry.name)
        if reg is None:
            out.append(f"regions/{entry.name}")
            continue
        named = {f"v{i:04d}" for i in range(1, len(reg["versions"]) + 1)} | {"zarr.json"}
        out += [f"regions/{entry.name}/{v.name}" for v in entry.iterdir() if v.name not in named]
    out += [f"images/{e.name}" for e in (root / "images").iterdir()
            if e.name != "zarr.json" and e.name not in index["images"]]
    models = {m["version"] for m in index["models"]}
    out += [f"models/{e.name}" for e in (root / "models").iterdir() if e.stem not in models]
    if (root / "intent.json").exists():
        out.append("intent.json")
    return out


def _verify(store_dir: Path, expected: Dict[str, Any], seen: Dict[str, int], images: Sequence[tuple],
            round_no: int) -> Dict[str, Any]:
    """Reopen after a kill and count blocked / lost / half-visible; then accept once more."""
    from napari_cdma.project.store import BUNDLED, ProjectStore, StoreError
    from napari_cdma.project.store_io import checksum

    out: Dict[str, Any] = {"blocked": 0, "lost": 0, "half_visible": 0, "repairs": [], "problems": []}
    try:
        store = ProjectStore.open(store_dir, create=False)
    except Exception as exc:
        out["blocked"] = 1
        out["problems"].append(f"open: {type(exc).__name__}: {exc}")
        return out
    out["repairs"] = list(store.repairs)
    index = store._index
    # every write that returned before the kill
    for (rid, version), digest in expected["accepts"].items():
        reg = index["regions"].get(rid)
        if reg is None or len(reg["versions"]) < version \
                or reg["versions"][version - 1].get("checksums", {}).get("corrected") != digest:
            out["lost"] += 1
            out["problems"].append(f"lost accept {rid} v{version}")
    for version in expected["models"]:
        if not any(m["version"] == version for m in index["models"]):
            out["lost"] += 1
            out["problems"].append(f"lost model {version}")
    for rid in expected["withdrawn"]:
        if not index["regions"].get(rid, {}).get("withdrawn"):
            out["lost"] += 1
            out["problems"].append(f"lost withdrawal of {rid}")
    # everything the index names and is new since the last check reads back
    for rid, reg in sorted(index["regions"].items()):
        for v in range(seen.get(rid, 0) + 1, len(reg["versions"]) + 1):
            try:
                _, corrected, _ = store.load_region(rid, v)
            except (StoreError, KeyError) as exc:
                out["half_visible"] += 1
                out["problems"].append(f"half-visible {rid} v{v}: {exc}")
                continue
            if (rid, v) in expected["accepts"] and checksum(corrected) != expected["accepts"][(rid, v)]:
                out["lost"] += 1
                out["problems"].append(f"{rid} v{v} reads back different")
        seen[rid] = len(reg["versions"])
    try:
        store.unlabelled_images()
        for m in store.models():
            store.model_path(m.version)
    except StoreError as exc:
        out["half_visible"] += 1
        out["problems"].append(f"half-visible: {exc}")
    for rel in _unnamed_on_disk(store.root, index):
        out["half_visible"] += 1
        out["problems"].append(f"left on disk, not in the index: {rel}")
    # and the store still takes a new accept
    image, mask = images[0]
    y0, x0 = (round_no * 7) % (image.shape[0] - BOX), (round_no * 13) % (image.shape[1] - BOX)
    box = (y0, x0, y0 + BOX, x0 + BOX)
    corrected = mask[y0:y0 + BOX, x0:x0 + BOX].astype(np.uint32)
    corrected[0, 0] = 1000 + round_no
    try:
        rec = store.accept_region(image, box, corrected, corrected, model_version=BUNDLED, user="verifier")
        expected["accepts"][(rec.region_id, rec.version)] = checksum(corrected)  # max > 255: kept as uint32
        expected["withdrawn"].discard(rec.region_id)
    except Exception as exc:
        out["blocked"] = 1
        out["problems"].append(f"accept after reopen: {type(exc).__name__}: {exc}")
    return out


def _make_checkpoint(path: Path) -> None:
    """Save a random lite model in a forked child (this process stays free of torch operations)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            import torch

            import src_model
            from src_model.checkpoint import save_checkpoint

            torch.set_num_threads(1)
            torch.manual_seed(0)
            save_checkpoint(path, src_model.build_model("lite"), provenance={"torch": str(torch.__version__)})
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if status != 0 or not path.is_file():
        raise SystemExit("could not write the test checkpoint")


def run_rounds(rounds: int, seed: int, max_delay: float, workdir: Path,
               checkpoint: Optional[Path] = None, no_recovery: bool = False) -> Dict[str, Any]:
    """Run the kill rounds in ``workdir``; returns the totals and per-round details.

    ``no_recovery`` switches the store's recovery off (a check that this benchmark sees what
    recovery repairs; the counts are then expected to be non-zero).
    """
    import torch  # noqa: F401 - imported before forking so that each writer starts at once

    import src_model.checkpoint
    import src_model.model  # noqa: F401 - likewise: the model code is loaded once, before forking
    from napari_cdma.project.store import ProjectStore

    if no_recovery:
        ProjectStore._recover = lambda self, deep: None
    workdir.mkdir(parents=True, exist_ok=True)
    store_dir = workdir / "store"
    if checkpoint is None:
        checkpoint = workdir / "lite.pt"
        _make_checkpoint(checkpoint)
    images = _images()
    ProjectStore.open(store_dir)  # created before the first writer
    rng = np.random.default_rng(seed)
    expected: Dict[str, Any] = {"accepts": {}, "models": set(), "withdrawn": set()}
    seen: Dict[str, int] = {}
    totals = {"rounds": rounds, "blocked": 0, "lost": 0, "half_visible": 0, "writes_returned": 0,
              "kills_inside_a_write": 0, "finished_by_recovery": 0, "undone_by_recovery": 0,
              "withdrawals_recovered": 0, "adopted": 0, "quarantined": 0}
    details = []
    t0 = time.perf_counter()
    for r in range(rounds):
        log_path = workdir / f"round{r:03d}.jsonl"
        delay = float(rng.uniform(0.02, max_delay))
        pid = os.fork()
        if pid == 0:
            try:
                _writer(store_dir, log_path, checkpoint, seed * 1000 + r, images)
            finally:
                os._exit(0)
        aimed = r % 2 == 1
        if aimed:  # aim at the commit window: a few ms after intent.json appears (or at the delay)
            deadline = time.perf_counter() + max_delay
            while time.perf_counter() < deadline and not (store_dir / "intent.json").exists():
                time.sleep(0.0005)
            time.sleep(float(rng.uniform(0.0, 0.01)))
        else:
            time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        returned = [json.loads(line) for line in log_path.read_text().splitlines()] if log_path.exists() else []
        for rec in returned:
            if rec["op"] == "accept":
                expected["accepts"][(rec["rid"], rec["version"])] = rec["checksum"]
            elif rec["op"] == "model":
                expected["models"].add(rec["version"])
            else:
                expected["withdrawn"].add(rec["rid"])
        res = _verify(store_dir, expected, seen, images, r)
        for key in ("blocked", "lost", "half_visible"):
            totals[key] += res[key]
        totals["writes_returned"] += len(returned)
        rep = res["repairs"]
        totals["finished_by_recovery"] += sum("finished an interrupted write" in n for n in rep)
        totals["undone_by_recovery"] += sum("undid an interrupted write" in n for n in rep)
        totals["withdrawals_recovered"] += sum("withdrawn in its folder" in n for n in rep)
        totals["adopted"] += sum(n.startswith("adopted") for n in rep)
        totals["quarantined"] += sum(n.startswith("moved") for n in rep)
        totals["kills_inside_a_write"] += bool(rep)
        details.append({"round": r, "aimed_at_commit": aimed, "delay_s": None if aimed else round(delay, 3),
                        "killed_by_sigkill": killed,
                        "writes_returned": len(returned), "repairs": rep, "problems": res["problems"]})
    totals["seconds"] = round(time.perf_counter() - t0, 1)
    index = json.loads((store_dir / "index.json").read_text())
    totals["regions_in_store"] = len(index["regions"])
    totals["models_in_store"] = len(index["models"])
    return {"totals": totals, "rounds": details, "seed": seed, "max_delay_s": max_delay}


def _markdown(result: Dict[str, Any], command: str) -> str:
    t = result["totals"]
    lines = [
        "# Project store: kill -9 rounds",
        "",
        f"`{command}`",
        "",
        f"{t['rounds']} rounds; in each a writer process loops over accept (often on a new image), "
        "accept of a new version, model add and withdraw, and is killed with SIGKILL: in even rounds "
        f"after a random delay of 0.02-{result['max_delay_s']} s, in odd rounds 0-10 ms after "
        "`intent.json` appears (aimed at the window between placing the data and committing the index, "
        "where the issue's kills blocked the store). The store is then reopened and checked.",
        "",
        "| blocked stores | lost completed writes | half-visible data | target |",
        "|---|---|---|---|",
        f"| {t['blocked']} | {t['lost']} | {t['half_visible']} | 0, 0, 0 |",
        "",
        f"- writes that returned before a kill: {t['writes_returned']} (all checked after every reopen)",
        f"- kills that landed inside a write (recovery acted on reopen): {t['kills_inside_a_write']} "
        f"(writes finished: {t['finished_by_recovery']}, undone: {t['undone_by_recovery']}, "
        f"withdrawals completed from the region folder: {t['withdrawals_recovered']}, "
        f"folders adopted: {t['adopted']}, moved to quarantine: {t['quarantined']})",
        f"- store at the end: {t['regions_in_store']} regions, {t['models_in_store']} model versions; "
        f"{t['seconds']} s",
    ]
    problems = [p for r in result["rounds"] for p in r["problems"]]
    if problems:
        lines += ["", "Problems:", ""] + [f"- {p}" for p in problems[:50]]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=0.4, help="longest delay before the kill, s")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: a random lite model")
    parser.add_argument("--no-recovery", action="store_true",
                        help="switch the store's recovery off, to check that the counts see what it repairs")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"),
                        help="results folder ('' = print the totals only)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="store_kills_") as tmp:
        workdir = args.workdir or Path(tmp)
        result = run_rounds(args.rounds, args.seed, args.max_delay, workdir, args.checkpoint, args.no_recovery)
    print(json.dumps(result["totals"]))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        command = f"python benchmarks/store_kill_rounds.py --rounds {args.rounds} --seed {args.seed} " \
                  f"--max-delay {args.max_delay}"
        (out / "store_kills.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
        (out / "store_kills.md").write_text(_markdown(result, command) + "\n", encoding="utf-8")
    t = result["totals"]
    return 0 if t["blocked"] == t["lost"] == t["half_visible"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
