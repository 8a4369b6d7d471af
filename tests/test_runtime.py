import numpy as np
import pytest
import torch

from xcal_core.runtime import env_line, env_summary, resolve_device, seed_everything


def test_resolve_device_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device(torch.device("cpu")).type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match=r"`device` 'cuda' requested but CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda:3")


def test_resolve_device_rejects_unknown():
    with pytest.raises(ValueError, match=r"unknown `device` 'tpu'"):
        resolve_device("tpu")
    with pytest.raises(TypeError, match="`device` must be a string"):
        resolve_device(3)


def test_streams_are_reproducible_and_independent():
    a = seed_everything(7)
    b = seed_everything(7)
    x1 = torch.rand(5, generator=a.torch("perturbation"))
    x2 = torch.rand(5, generator=b.torch("perturbation"))
    assert torch.equal(x1, x2)
    y = torch.rand(5, generator=a.torch("explainer"))
    assert not torch.equal(x1, y)
    # a fresh generator per call: consuming one stream never shifts another
    g = a.torch("training")
    torch.rand(100, generator=g)
    assert torch.equal(torch.rand(5, generator=a.torch("perturbation")), x1)
    n1 = a.numpy("split").integers(0, 1_000_000, 4)
    n2 = seed_everything(7).numpy("split").integers(0, 1_000_000, 4)
    assert np.array_equal(n1, n2)
    assert not np.array_equal(n1, seed_everything(8).numpy("split").integers(0, 1_000_000, 4))


def test_seed_everything_validates():
    with pytest.raises(ValueError, match="`seed` must be >= 0"):
        seed_everything(-1)
    with pytest.raises(TypeError, match="`seed` must be an int"):
        seed_everything(1.5)


def test_env_summary_fields():
    s = env_summary()
    for k in ("python", "torch", "cuda_available", "gpu", "git_sha", "xcal_core"):
        assert k in s
    assert s["torch"] == torch.__version__
    line = env_line(s)
    assert "torch " + torch.__version__ in line and "xcal_core" in line
