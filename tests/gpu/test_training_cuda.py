"""Training on a CUDA GPU: the same first step as on the CPU, and a CPU model back for export."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dicomnode.training.train import TrainConfig, train  # noqa: E402
from tests.support.training import tiny_pool  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU"),
]


def test_first_step_matches_the_cpu_and_the_model_comes_back_on_the_cpu(tmp_path: Path) -> None:
    torch.backends.cudnn.allow_tf32 = False  # compare FP32 with FP32
    config = TrainConfig(crop=32, base_channels=4, initial_studies=1, refresh_every=10_000, device="cuda")
    result = train(tmp_path / "cuda", steps=3, batch_size=4, seed=1, config=config, pool=tiny_pool(48),
                   progress=False)
    assert next(result.model.parameters()).device.type == "cpu"
    reference = train(tmp_path / "ref", steps=1, batch_size=4, seed=1, pool=tiny_pool(48), progress=False,
                      config=TrainConfig(crop=32, base_channels=4, initial_studies=1, refresh_every=10_000))
    assert result.losses[0] == pytest.approx(reference.losses[0], rel=1e-4)
    assert all(np.isfinite(result.losses))
    from dicomnode.training.export import _hardware

    assert _hardware(config) == f"one {torch.cuda.get_device_name(0)}"  # what the card says
