"""The shared training settings: declared once, each method's paper defaults, bounds kept."""

from __future__ import annotations

from typing import ClassVar

import pytest
from pydantic import ValidationError

from cdrec.models import available_models, build_model
from cdrec.models.training import TrainingConfig


def test_each_method_keeps_its_paper_defaults_and_overrides_win():
    expected = {"EMCDR": (500, 256, 0.005, 20), "TMCDR": (200, 16, 0.005, 10),
                "PTUPCDR": (100, 256, 0.01, 10), "SSCDR": (100, 1024, 0.005, 10),
                "DCDCSR": (500, 256, 0.005, 20), "CMF": (100, 4096, 0.02, 5),
                "MF": (100, 4096, 0.02, 5)}
    for name, (epochs, batch_size, lr, patience) in expected.items():
        cfg = build_model(name).config
        assert (cfg.epochs, cfg.batch_size, cfg.lr, cfg.patience) == (epochs, batch_size, lr,
                                                                       patience), name
        assert cfg.weight_decay == 0.0
    assert build_model("EMCDR", epochs=7).config.epochs == 7
    assert build_model("EMCDR").config.base_config["batch_size"] == 4096  # the base's own


def test_bounds_apply_to_every_method_that_trains():
    trained = [n for n, cls in available_models().items()
               if issubclass(cls.Config, TrainingConfig)]
    assert {"EMCDR", "TMCDR", "PTUPCDR", "SSCDR", "DCDCSR", "CMF", "MF", "BPR"} <= set(trained)
    for name in trained:
        for bad in ({"epochs": 0}, {"lr": 0.0}, {"batch_size": 0}, {"weight_decay": -1.0}):
            with pytest.raises(ValidationError, match=next(iter(bad))):
                build_model(name, **bad)


def test_defaults_must_name_training_settings():
    with pytest.raises(TypeError, match="epoch"):
        class Typo(TrainingConfig):
            training_defaults: ClassVar = {"epoch": 3}
