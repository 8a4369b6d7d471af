"""The workshop's trained models, shipped with the repository: ``python -m xcal_core.checkpoints``.

A cold model cache makes ``make run`` train every workshop model first. To keep a first run on a
laptop short, the repository ships the checkpoints that the workshop profile trains (seed 0), in
``checkpoints/`` with the same relative paths as in the cache (``models/<model>__<dataset>__<key>.pt``
and the stochastic families' files); :func:`xcal_core.models.cache.fetch_shipped` copies a verified one into a cold
cache instead of training. They are reproducible: ``make retrain`` switches them off, trains every
model again into a fresh cache through a full workshop run, and ships what that run trained.

``checkpoints/MANIFEST.json`` lists every file with its size and SHA-256 and what it is; a test checks
each shipped file against it and against its own embedded checksum.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Sequence

from .models.cache import CorruptCheckpointError, load_checkpoint
from .params import repo_root

__all__ = ["ship_checkpoints", "verify_shipped"]


def _checkpoint_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.pt") if p.is_file())


def _describe(path: Path) -> dict:
    payload = load_checkpoint(path)
    cfg = payload.get("config", {}) if isinstance(payload.get("config"), dict) else {}
    keep = ("model", "dataset", "epochs", "lr", "batch_size", "lr_schedule", "seed", "device_type", "torch", "family")
    return {k: cfg[k] for k in keep if k in cfg}


def ship_checkpoints(cache_dir: str | Path, dest: str | Path | None = None, max_mb: float = 40.0) -> list[Path]:
    """Copy the verified checkpoints of a model cache into ``dest`` (default ``<repo>/checkpoints``),
    replacing what was shipped before, and write ``MANIFEST.json``.

    Args:
        cache_dir: a model cache filled by a workshop run (``XCAL_CACHE_DIR`` of ``make retrain``).
        dest: the shipped folder.
        max_mb: refuse to ship more than this many megabytes (the repository must stay small).

    Returns:
        The shipped files.

    Raises:
        FileNotFoundError: the cache holds no checkpoint. ValueError: a checkpoint fails its checksum,
        or the total exceeds ``max_mb``.
    """
    cache_dir = Path(cache_dir)
    dest = Path(dest) if dest is not None else repo_root() / "checkpoints"
    files = _checkpoint_files(cache_dir)
    if not files:
        raise FileNotFoundError(f"`cache_dir`: no checkpoint (*.pt) under {cache_dir}")
    total = sum(p.stat().st_size for p in files) / 2**20
    if total > max_mb:
        raise ValueError(f"{len(files)} checkpoints take {total:.1f} MB, more than max_mb={max_mb}")
    entries = {}
    for p in files:
        try:
            info = _describe(p)
        except CorruptCheckpointError as e:
            raise ValueError(f"not shipping a damaged checkpoint: {e}") from None
        rel = p.relative_to(cache_dir).as_posix()
        entries[rel] = {"bytes": p.stat().st_size, "sha256": hashlib.sha256(p.read_bytes()).hexdigest(), **info}
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for rel in entries:
        (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cache_dir / rel, tmp / rel)
    (tmp / "MANIFEST.json").write_text(json.dumps({"files": entries, "total_mb": round(total, 2)}, indent=1) + "\n")
    if dest.exists():
        shutil.rmtree(dest)
    tmp.rename(dest)
    return [dest / rel for rel in entries]


def verify_shipped(dest: str | Path | None = None) -> list[str]:
    """Problems of the shipped folder (empty when every file matches ``MANIFEST.json`` and its own
    checksum, and no file is missing from or extra to the manifest)."""
    dest = Path(dest) if dest is not None else repo_root() / "checkpoints"
    man_path = dest / "MANIFEST.json"
    if not man_path.exists():
        return [f"{man_path} is missing"]
    entries = json.loads(man_path.read_text())["files"]
    problems = []
    present = {p.relative_to(dest).as_posix() for p in _checkpoint_files(dest)}
    for rel in sorted(present - set(entries)):
        problems.append(f"{rel} is not in MANIFEST.json")
    for rel, e in sorted(entries.items()):
        p = dest / rel
        if not p.is_file():
            problems.append(f"{rel} is listed but missing")
            continue
        if hashlib.sha256(p.read_bytes()).hexdigest() != e["sha256"]:
            problems.append(f"{rel} differs from its MANIFEST.json checksum")
            continue
        try:
            load_checkpoint(p)
        except CorruptCheckpointError as err:
            problems.append(str(err))
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m xcal_core.checkpoints", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ship-from", default=None, help="a model cache to ship (else: verify the shipped folder)")
    ap.add_argument("--dest", default=None, help="shipped folder (default: <repo>/checkpoints)")
    a = ap.parse_args(argv)
    if a.ship_from:
        try:
            files = ship_checkpoints(a.ship_from, a.dest)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"shipped {len(files)} checkpoints")
        return 0
    problems = verify_shipped(a.dest)
    for p in problems:
        print(p, file=sys.stderr)
    print("shipped checkpoints verified" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
