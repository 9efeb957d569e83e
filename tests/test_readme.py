"""The README's Python code blocks run as written, and the API block reproduces ``cdrec run``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cdrec.config import load_config
from cdrec.runner import run

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[tuple[str, str]]:
    """(heading, code) of every ```python block of README.md."""
    text = (ROOT / "README.md").read_text()
    blocks = []
    for match in re.finditer(r"```python\n(.*?)```", text, re.DOTALL):
        heading = re.findall(r"^#+ (.*)$", text[:match.start()], re.MULTILINE)[-1]
        blocks.append((heading, match.group(1)))
    return blocks


def test_the_readme_has_its_python_api_block() -> None:
    assert any(h == "Python API" and "recommend_from_history" in code
               for h, code in python_blocks())


@pytest.mark.parametrize(("heading", "code"), python_blocks(),
                         ids=[h for h, _ in python_blocks()])
def test_readme_block_runs(heading: str, code: str, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # blocks may write files (model.save)
    namespace: dict[str, object] = {"__name__": "readme"}
    exec(compile(code, f"README.md ({heading})", "exec"), namespace)  # noqa: S102
    if heading != "Python API":
        return
    # The block's seed call makes it the quickstart's seed-0 run: identical numbers.
    cfg = load_config(ROOT / "configs" / "quickstart.yaml",
                      ["seeds=[0]", "models={EMCDR: {}}", "progress=false",
                       f"output_dir={tmp_path / 'runs'}", "save_models=false"])
    expected = run(cfg)["results"]["EMCDR"]
    split, model = namespace["split"], namespace["model"]
    metrics = split.test.evaluate(model)  # type: ignore[attr-defined]
    assert metrics["MAE"] == expected["MAE"]["per_seed"][0]
    assert metrics["RMSE"] == expected["RMSE"]["per_seed"][0]
