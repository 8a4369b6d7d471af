"""Runtime: device resolution, seeding into named random streams, environment summary."""

from __future__ import annotations

import os
import platform
import random
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = ["resolve_device", "seed_everything", "RandomStreams", "env_summary", "env_line", "git_info", "STREAM_NAMES"]

# The named streams every notebook uses; any other name also works (derived the same way).
STREAM_NAMES = ("split", "perturbation", "explainer", "training")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn a device string into a ``torch.device``.

    Args:
        spec: ``"auto"`` (CUDA if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The device. Only ``"auto"`` falls back to the CPU; asking for CUDA on a machine without it, or
        for a GPU index that does not exist, raises ``ValueError``.
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise TypeError(f"`device` must be a string like 'auto', 'cpu', 'cuda' or 'cuda:0', got {type(spec).__name__}")
    s = spec.strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or s.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"`device` {spec!r} requested but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use DEVICE='auto' to fall back to the CPU or DEVICE='cpu'"
            )
        if s == "cuda":
            return torch.device("cuda")
        idx = s.split(":", 1)[1]
        if not idx.isdigit():
            raise ValueError(f"`device` {spec!r} is malformed; expected 'cuda:N' with an integer N")
        n = torch.cuda.device_count()
        if int(idx) >= n:
            raise ValueError(f"`device` {spec!r} does not exist: this machine has {n} CUDA device(s) (cuda:0..cuda:{n - 1})")
        return torch.device(s)
    raise ValueError(f"unknown `device` {spec!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")


def _child_seed(seed: int, name: str) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy=seed, spawn_key=(zlib.crc32(name.encode()),))


@dataclass
class RandomStreams:
    """Independent random streams derived from one seed, one per purpose.

    ``torch(name)`` / ``numpy(name)`` return a *fresh* generator each call, seeded from
    ``(seed, name)``: the same name always starts the same stream, different names are independent,
    and adding a new consumer never shifts the numbers another one sees.
    """

    seed: int
    deterministic: bool = True
    _cache: dict = field(default_factory=dict, repr=False)

    def int_seed(self, name: str) -> int:
        """A 63-bit integer seed for ``name`` (for APIs that take an int)."""
        return int(_child_seed(self.seed, name).generate_state(2, dtype=np.uint32).astype(np.uint64).dot([1 << 31, 1]) % (1 << 63))

    def torch(self, name: str, device: str | torch.device = "cpu") -> torch.Generator:
        """A fresh ``torch.Generator`` on ``device`` for the stream ``name``."""
        g = torch.Generator(device=device)
        g.manual_seed(self.int_seed(name))
        return g

    def numpy(self, name: str) -> np.random.Generator:
        """A fresh ``numpy.random.Generator`` for the stream ``name``."""
        return np.random.default_rng(_child_seed(self.seed, name))

    @property
    def split(self) -> np.random.Generator:
        return self.numpy("split")

    @property
    def perturbation(self) -> torch.Generator:
        return self.torch("perturbation")

    @property
    def explainer(self) -> torch.Generator:
        return self.torch("explainer")

    @property
    def training(self) -> torch.Generator:
        return self.torch("training")


def seed_everything(seed: int, deterministic: bool = True) -> RandomStreams:
    """Seed Python, NumPy and torch (CPU and CUDA) and return named, independent streams.

    Args:
        seed: non-negative integer.
        deterministic: also ask torch for deterministic kernels (cuDNN deterministic, no benchmark;
            ``torch.use_deterministic_algorithms(True, warn_only=True)``). Bit-exactness is promised on the
            CPU for the same versions, not across devices or library versions.

    Returns:
        RandomStreams with ``.torch(name)`` and ``.numpy(name)``; library functions take these
        generators explicitly instead of relying on the global state seeded here.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"`seed` must be >= 0, got {seed}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    return RandomStreams(seed=seed, deterministic=deterministic)


def git_info(root: str | Path | None = None, exclude: tuple[str, ...] = ()) -> dict:
    """``{"sha": str | None, "dirty": bool | None}`` of the repository holding ``root``.

    ``exclude``: paths (relative to the repository root) whose changes do not make the tree dirty, e.g.
    the outputs that ``make run`` itself rewrites (``papermill_runs``, ``README.md``).
    """
    root = Path(root) if root else Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"sha": None, "dirty": None}
        spec = [":(top)"] + [f":(top,exclude){p}" for p in exclude] if exclude else []
        st = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *spec], cwd=root,
                            capture_output=True, text=True, timeout=10)
        return {"sha": sha.stdout.strip(), "dirty": bool(st.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def env_summary() -> dict:
    """Python, torch, CUDA, cuDNN, GPU name, thread count, git sha/dirty and the xcal_core version."""
    from . import __version__

    cuda = torch.cuda.is_available()
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "cuda_available": cuda,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "gpu_count": torch.cuda.device_count() if cuda else 0,
        "cpu_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "xcal_core": __version__,
        "executable": sys.executable,
    }
    for mod in ("captum", "quantus", "cvxpy"):
        m = sys.modules.get(mod)
        info[mod] = getattr(m, "__version__", None) if m else None
    g = git_info()
    info["git_sha"] = g["sha"]
    info["git_dirty"] = g["dirty"]
    return info


def env_line(summary: dict | None = None) -> str:
    """One line for the end of a notebook: the watermark."""
    s = summary or env_summary()
    dev = s["gpu"] or f"CPU ({s['cpu_threads']} threads)"
    sha = (s["git_sha"] or "no-git")[:10] + ("+dirty" if s["git_dirty"] else "")
    return f"python {s['python']} | torch {s['torch']} | cuda {s['cuda'] or '-'} | {dev} | xcal_core {s['xcal_core']} | git {sha}"
