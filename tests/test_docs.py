"""The newcomer's docs stay true: the worked example in docs/adding_a_method.md runs as a real
method, and every module docs/architecture.md names exists."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from cdrec.data.catalog import load_sample
from cdrec.models import available_models, build_model
from cdrec.models import registry as model_registry
from cdrec.models.persist import load_model
from cdrec.scenarios import build_scenario
from cdrec.train import FitContext, seed_everything

DOCS = Path(__file__).resolve().parents[1] / "docs"
SRC = Path(__file__).resolve().parents[1] / "src" / "cdrec"


def worked_example() -> str:
    text = (DOCS / "adding_a_method.md").read_text()
    section = text.split("## A worked example", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture
def example_method():
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(worked_example(), "docs/adding_a_method.md", "exec"), namespace)  # noqa: S102
    yield namespace["AffineShiftCDR"]
    del model_registry._REGISTRY["AffineShiftCDR"]  # other tests see the package's models only


def test_the_worked_example_is_a_working_transfer_method(example_method, tmp_path):
    assert available_models()["AffineShiftCDR"] is example_method
    with pytest.raises(ValueError, match="not_a_param"):
        build_model("AffineShiftCDR", not_a_param=1)
    model = build_model("AffineShiftCDR")
    assert (model.config.epochs, model.config.lr, model.config.scale) == (200, 0.01, True)

    split = build_scenario("coldstart", {"source": "book", "target": "music"}).split(
        load_sample("douban"), 0)
    seed_everything(0)
    model = build_model("AffineShiftCDR", epochs=5, base_config={"epochs": 3})
    context = FitContext(seed=0, progress=False)
    assert model.fit(split.train, split.validation, context) is model
    assert [s.stage for s in context.stages] == ["base_book", "base_music", "mapping"]
    metrics = split.test.evaluate(model)
    assert math.isfinite(metrics["RMSE"]) and metrics["RMSE"] < 1.5
    # The map was fitted: it moved away from the identity it starts at.
    assert not torch.equal(model.transfer_.b.detach(), torch.zeros_like(model.transfer_.b))
    # Saved and loaded through _new_transfer, it scores as fitted.
    loaded = load_model(model.save(tmp_path / "affine.pt"))
    assert split.test.evaluate(loaded) == metrics


def test_every_module_the_architecture_page_names_exists():
    text = (DOCS / "architecture.md").read_text()
    named = re.findall(r"^\| `([\w/.]+)`", text, re.MULTILINE)
    assert len(named) > 10
    for name in named:
        path = SRC / name
        assert path.exists() or path.with_suffix(".py").exists(), name
