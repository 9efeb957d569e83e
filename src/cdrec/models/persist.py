"""Loading fitted models written by ``Recommender.save`` (the file format is described in
``cdrec.models.model_file``)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from cdrec.models import available_models
from cdrec.models.model_file import decode_attribute, ids_from_file, read_payload
from cdrec.models.recommender import Recommender
from cdrec.models.serving import TrainedOn


def load_model(path: str | Path, *, model: str | None = None,
               device: str | torch.device = "cpu") -> Recommender:
    """The fitted model saved at ``path``, on ``device``. With ``model`` (a registered name),
    the file must hold that model or one of its variants (``EMCDR`` accepts ``EMCDR_MF``)."""
    payload = read_payload(path)
    name = payload["model"]
    models = available_models()
    if name not in models:
        raise ValueError(f"{path} holds a model {name!r} that this cdrec does not register")
    cls = models[name]
    if model is not None:
        if model not in models:
            raise KeyError(f"unknown model {model!r}; available: {', '.join(models)}")
        if not issubclass(cls, models[model]):
            raise ValueError(f"{path} holds a {name} model, not a {model}")
    fitted = cls(**json.loads(payload["config"]))
    with torch.random.fork_rng(devices=[]):  # building draws initial weights: keep the
        fitted._build(json.loads(payload["architecture"]))  # caller's random state as it was
    for full, value in payload["derived"].items():
        owner, _, leaf = full.rpartition(".")
        fitted.get_submodule(owner).register_buffer(leaf, value, persistent=False)
    for full in payload["derived_none"]:
        owner, _, leaf = full.rpartition(".")
        fitted.get_submodule(owner).register_buffer(leaf, None, persistent=False)
    try:
        fitted.load_state_dict(payload["state"], strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path}: the saved {name} state does not fit the model this cdrec "
                         f"builds from the file's architecture: {err}") from None
    for key, value in json.loads(payload["attributes"]).items():
        setattr(fitted, key, decode_attribute(value))
    ids, protocol = payload["ids"], payload["protocol"]
    fitted.trained_on_ = TrainedOn(
        ids_from_file(ids["users"]), {d: ids_from_file(v) for d, v in ids["items"].items()},
        {d: (v["user"], v["item"]) for d, v in payload["seen"].items()},
        protocol["scenario"], protocol["source"], protocol["target"], protocol["implicit"])
    fitted.fitted_ = True
    fitted.to(torch.device(device))
    fitted.eval()
    return fitted
