"""Shipped workshop checkpoints: shipping from a cache, the manifest, and the committed folder."""

import json
from pathlib import Path

import pytest
import torch

from xcal_core.checkpoints import ship_checkpoints, verify_shipped
from xcal_core.models.cache import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


def test_ship_and_verify(tmp_path):
    cache = tmp_path / "cache"
    save_checkpoint(cache / "models" / "a.pt", {"config": {"model": "small_cnn", "seed": 0}, "w": torch.ones(3)})
    save_checkpoint(cache / "models" / "sub" / "b.pt", {"w": torch.zeros(2)})
    dest = tmp_path / "checkpoints"
    files = ship_checkpoints(cache, dest)
    assert sorted(f.relative_to(dest).as_posix() for f in files) == ["models/a.pt", "models/sub/b.pt"]
    man = json.loads((dest / "MANIFEST.json").read_text())["files"]
    assert man["models/a.pt"]["model"] == "small_cnn" and len(man["models/a.pt"]["sha256"]) == 64
    assert verify_shipped(dest) == []
    (dest / "models" / "a.pt").write_bytes((dest / "models" / "a.pt").read_bytes()[:-5])
    (dest / "models" / "extra.pt").write_bytes(b"x")
    problems = verify_shipped(dest)
    assert any("a.pt differs" in p for p in problems) and any("extra.pt is not in MANIFEST" in p for p in problems)
    with pytest.raises(ValueError, match="more than max_mb"):
        ship_checkpoints(cache, dest, max_mb=1e-6)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        ship_checkpoints(tmp_path / "empty", dest)


@pytest.mark.skipif(not (ROOT / "checkpoints").is_dir(), reason="no checkpoints shipped yet")
def test_committed_checkpoints_match_their_manifest():
    assert verify_shipped(ROOT / "checkpoints") == []
