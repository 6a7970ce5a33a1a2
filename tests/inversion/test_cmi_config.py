"""dfq.inversion.cmi_config: ``CMIConfig`` refuses bad values and accepts JSON lists."""

from __future__ import annotations

import pytest

from dfq.inversion.cmi_config import CMIConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize(
    "bad",
    [
        {"num_images": 0},
        {"iterations": 0},
        {"lr_g": 0.0},
        {"cr_T": 0.0},
        {"betas": (0.5, 1.0)},
        {"local_scale": (0.0, 1.0)},
        {"local_scale": (0.8, 0.5)},
        {"adv": -1.0},
        {"bank_size": 0},
    ],
)
def test_config_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        CMIConfig(**bad)


def test_config_accepts_json_lists() -> None:
    cfg = CMIConfig(betas=[0.5, 0.99], local_scale=[0.5, 1])
    assert cfg.betas == (0.5, 0.99) and cfg.local_scale == (0.5, 1.0)
