"""Checkpoint cache: content fingerprints, config hashes, atomic and verified checkpoint files.

A checkpoint file is ``MAGIC + sha256(payload) + "\\n" + payload`` where ``payload`` is a
``torch.save`` of a dict of tensors and plain Python values, so a truncated or overwritten file is
detected before anything is unpickled, and it is loaded with ``weights_only=True``. Files are
written to a temporary name in the same folder and renamed into place (atomic on POSIX and
Windows), so an interrupted run never leaves a half-written checkpoint under the final name.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "CorruptCheckpointError",
    "tensor_fingerprint",
    "dataset_fingerprint",
    "config_hash",
    "save_checkpoint",
    "load_checkpoint",
    "SHIPPED_DIR_ENV",
    "shipped_dir",
    "fetch_shipped",
]

SHIPPED_DIR_ENV = "XCAL_SHIPPED_CHECKPOINTS"
"""Environment variable: the folder of shipped checkpoints (default ``<repo>/checkpoints``), or ``off``
to ignore them (``make retrain`` does, to train every workshop model from scratch)."""

_MAGIC = b"XCALCKPT1\n"


class CorruptCheckpointError(ValueError):
    """A checkpoint file that is truncated, overwritten or not an xcal checkpoint."""


def _update(h: "hashlib._Hash", t: Any) -> None:
    if t is None:
        h.update(b"<none>")
        return
    if isinstance(t, torch.Tensor):
        a = t.detach().cpu().contiguous().numpy() if t.dtype != torch.bfloat16 else t.detach().float().cpu().numpy()
    else:
        a = np.ascontiguousarray(np.asarray(t))
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(np.ascontiguousarray(a)).cast("B"))


def tensor_fingerprint(*tensors: Any) -> str:
    """A hex digest of the dtype, shape and bytes of each tensor / array (``None`` allowed).

    Args:
        *tensors: torch tensors (any device) or numpy arrays.

    Returns:
        32 hex characters (BLAKE2b-128); equal iff the contents are equal (up to hash collisions).
    """
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        _update(h, t)
    return h.hexdigest()


def dataset_fingerprint(dataset: Any, splits: tuple[str, ...] = ("train", "cal")) -> str:
    """Content fingerprint of a dataset's splits (inputs and targets), used in cache keys.

    Args:
        dataset: an object with ``.info.name`` and split attributes holding ``.x`` and ``.y``
            (``xcal_core.data.Dataset``).
        splits: which splits to hash (training reads ``train`` and ``cal``).

    Returns:
        32 hex characters.
    """
    h = hashlib.blake2b(digest_size=16)
    h.update(str(getattr(getattr(dataset, "info", None), "name", "")).encode())
    for s in splits:
        split = getattr(dataset, s, None)
        h.update(s.encode())
        if split is None:
            h.update(b"<missing>")
            continue
        _update(h, split.x)
        _update(h, split.y)
    return h.hexdigest()


def _canonical(obj: Any) -> Any:
    """JSON-able canonical form (tuples -> lists, tensors/arrays -> lists or a fingerprint)."""
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        if obj.size <= 64:
            return {"array": obj.astype(np.float64).round(10).tolist() if obj.dtype.kind == "f" else obj.tolist()}
        return {"array_fingerprint": tensor_fingerprint(obj)}
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        return float(round(float(obj), 12))
    if isinstance(obj, torch.device):
        return str(obj)
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    return repr(obj)


def config_hash(config: dict) -> str:
    """SHA-256 hex digest of a configuration dict in canonical JSON form (key order ignored)."""
    blob = json.dumps(_canonical(config), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()


def save_checkpoint(path: str | os.PathLike, payload: dict) -> Path:
    """Write ``payload`` (tensors and plain values) to ``path`` atomically with a checksum.

    Args:
        path: destination file; parent folders are created.
        payload: a dict that ``torch.load(..., weights_only=True)`` can read back (tensors, numbers,
            strings, lists, dicts).

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest().encode()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_MAGIC + digest + b"\n" + data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, verifying its checksum.

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded (default CPU).

    Returns:
        The payload dict.

    Raises:
        FileNotFoundError: no such file.
        CorruptCheckpointError: wrong header, checksum mismatch (truncated or modified file), or a
            payload that cannot be unpickled safely.
    """
    path = Path(path)
    raw = path.read_bytes()
    head = len(_MAGIC) + 64 + 1
    if len(raw) < head or not raw.startswith(_MAGIC) or raw[head - 1:head] != b"\n":
        raise CorruptCheckpointError(f"{path} is not an xcal checkpoint (bad header, {len(raw)} bytes)")
    digest, data = raw[len(_MAGIC):head - 1], raw[head:]
    if hashlib.sha256(data).hexdigest().encode() != digest:
        raise CorruptCheckpointError(f"{path} failed its checksum (truncated or modified)")
    try:
        payload = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # pragma: no cover - the checksum catches nearly everything first
        raise CorruptCheckpointError(f"{path} could not be unpickled: {exc}") from exc
    if not isinstance(payload, dict):
        raise CorruptCheckpointError(f"{path} holds a {type(payload).__name__}, expected a dict")
    return payload


def shipped_dir() -> Path | None:
    """The folder of checkpoints shipped with the repository (``<repo>/checkpoints``, or
    ``$XCAL_SHIPPED_CHECKPOINTS``), or None when it is switched off or absent."""
    env = os.environ.get(SHIPPED_DIR_ENV, "")
    if env.strip().lower() in ("off", "0", "false", "no"):
        return None
    d = Path(env) if env.strip() else Path(__file__).resolve().parents[2] / "checkpoints"
    return d if d.is_dir() else None


def fetch_shipped(path: str | os.PathLike, cache_dir: str | os.PathLike) -> bool:
    """Put the shipped copy of a cache file in place, if the repository ships one.

    The workshop's trained models are committed under ``checkpoints/`` with the same relative path
    as in the model cache (``models/<model>__<dataset>__<key>.pt``, the key hashing the data, the
    recipe, the seed, the device type and the torch version), so a cold cache starts with them. A
    shipped file is verified (checksum) before it is copied; a bad one is ignored (the caller trains).

    Args:
        path: the cache file wanted (inside ``cache_dir``), which does not exist yet.
        cache_dir: the model cache folder.

    Returns:
        True when a verified shipped copy was put at ``path``.
    """
    src_root = shipped_dir()
    path = Path(path)
    if src_root is None or path.exists():
        return False
    try:
        rel = path.resolve().relative_to(Path(cache_dir).resolve())
    except ValueError:
        return False
    src = src_root / rel
    if not src.is_file():
        # callers that cache in a sub-folder of the run's cache (the stochastic families' twins) see a
        # shorter relative path; the file names hash their configuration, so the name alone identifies them
        same_name = [p for p in src_root.rglob(path.name) if p.is_file()]
        if len(same_name) != 1:
            return False
        src = same_name[0]
    try:
        load_checkpoint(src)
    except (CorruptCheckpointError, OSError):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(src.read_bytes())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True
