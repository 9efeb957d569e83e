"""The model file: one file per fitted model, read back with ``torch.load(weights_only=True)``.

A model file is a ``torch.save``d dict of plain data and tensors only (no pickled objects):

- ``format``, ``format_version``, ``cdrec_version``, ``torch_version``;
- ``model``: the registered name; ``config``: its full hyper-parameters (JSON);
- ``architecture``: what ``Recommender._build`` needs to make the untrained modules (JSON);
- ``state``: the ``state_dict``; ``derived``: the non-persistent buffers (computed from the
  training data in ``fit`` and kept out of checkpoints, e.g. ``has_target_``, PTUPCDR's
  histories), restored as non-persistent buffers; ``derived_none``: those that are ``None``;
- ``attributes``: the other learned attributes (``name_`` in the instance dict: the domains, a
  chosen shrinkage, ...) as JSON, tuples marked;
- ``ids``: the original user ids and each domain's item ids; ``seen``: each domain's training
  (user, item) index pairs (optional), what ``recommend`` leaves out; ``protocol``: scenario,
  source, target, implicit.

Loading (``cdrec.models.persist.load_model``, ``cdrec.load``) builds the registered model from
its config, has it build its modules from the architecture, and loads the state strictly: a file
of another model, another format version or a state that does not fit is refused with a message
saying which. This module writes and checks files; it imports no model, so ``Recommender.save``
can use it.
"""

from __future__ import annotations

import json
import os
import pickle
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from cdrec.models.recommender import Recommender

FORMAT = "cdrec.model"
FORMAT_VERSION = 1
# Instance attributes that end in "_" but are not learned state, or are saved apart.
_NOT_ATTRIBUTES = frozenset({"fitted_", "trained_on_"})


def cdrec_version() -> str:
    try:
        return version("cdrec")
    except PackageNotFoundError:  # a source tree that was not installed
        return "unknown"


def _encode(value: Any, where: str) -> Any:
    """JSON form of a learned attribute; tuples are marked so they come back as tuples."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, where) for v in value]}
    if isinstance(value, list):
        return [_encode(v, where) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _encode(v, where) for k, v in value.items()}
    raise TypeError(f"cannot save learned attribute {where} of type {type(value).__name__}: a "
                    "saved model holds plain data and tensors only; make it a buffer, or list "
                    "it in the class's transient_attributes if predictions do not need it")


def decode_attribute(value: Any) -> Any:
    if isinstance(value, list):
        return [decode_attribute(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(decode_attribute(v) for v in value["__tuple__"])
        return {k: decode_attribute(v) for k, v in value.items()}
    return value


def learned_attributes(model: Recommender) -> dict[str, Any]:
    """The model's learned plain attributes (``name_``, not modules, parameters or buffers)."""
    return {name: _encode(value, f"{type(model).__name__}.{name}")
            for name, value in vars(model).items()
            if name.endswith("_") and not name.startswith("_") and name not in _NOT_ATTRIBUTES
            and name not in model.transient_attributes}


def derived_buffers(model: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Non-persistent buffers by dotted name: ``(tensors, names of those set to None)``."""
    tensors: dict[str, torch.Tensor] = {}
    empty: list[str] = []
    for prefix, module in model.named_modules():
        for name in module._non_persistent_buffers_set:
            full = f"{prefix}.{name}" if prefix else name
            value = module._buffers.get(name)
            if value is None:
                empty.append(full)
            else:
                tensors[full] = value.detach().cpu()
    return tensors, empty


def ids_for_file(values: np.ndarray) -> dict[str, Any]:
    if np.issubdtype(values.dtype, np.integer):
        return {"kind": "int", "values": torch.from_numpy(values.astype(np.int64))}
    return {"kind": "str", "values": [str(v) for v in values]}


def ids_from_file(saved: dict[str, Any]) -> np.ndarray:
    if saved["kind"] == "int":
        return saved["values"].numpy()
    return np.asarray(saved["values"], dtype=object)


def save_model(model: Recommender, path: str | Path, *, include_seen: bool = True) -> Path:
    """Write ``model`` (fitted) to ``path`` (see the module docstring); returns the path."""
    if not model.fitted_:
        raise RuntimeError(f"{type(model).__name__} is not fitted: nothing to save")
    if not model.registered_name:
        raise ValueError(f"{type(model).__name__} is not a registered model, so a file of it "
                         "could not be loaded by name")
    trained_on = model._trained_on()
    tensors, empty = derived_buffers(model)
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "cdrec_version": cdrec_version(),
        "torch_version": str(torch.__version__), "model": model.registered_name,
        "config": json.dumps(model.config.model_dump(mode="json")),
        "architecture": json.dumps(model.architecture()),
        "attributes": json.dumps(learned_attributes(model)),
        "state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "derived": tensors, "derived_none": empty,
        "ids": {"users": ids_for_file(trained_on.user_ids),
                "items": {d: ids_for_file(v) for d, v in trained_on.item_ids.items()}},
        "seen": ({d: {"user": u.cpu(), "item": i.cpu()} for d, (u, i) in trained_on.seen.items()}
                 if include_seen else {}),
        "protocol": {"scenario": trained_on.scenario, "source": trained_on.source,
                     "target": trained_on.target, "implicit": trained_on.implicit},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)  # a reader never sees half a file
    return path


def read_payload(path: str | Path) -> dict[str, Any]:
    """The checked contents of a model file (format and version), tensors on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no model file {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        reason = next((line for line in lines if "WeightsUnpickler" in line), lines[0] if lines
                      else type(err).__name__)
        raise ValueError(f"{path} is not a cdrec model file (torch.load with weights_only "
                         f"failed: {reason})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a cdrec model file (no {FORMAT!r} format tag)")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path} was written by cdrec {payload.get('cdrec_version')} in model-file format "
            f"{payload.get('format_version')}; this cdrec ({cdrec_version()}) reads format "
            f"{FORMAT_VERSION}. Load it with that version or refit the model")
    return payload


