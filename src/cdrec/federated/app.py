"""The Flower apps of a cdrec deployment: ``flwr run`` loads ``server_app`` and every
``flower-supernode`` runs ``client_app`` (``cdrec/federated/flower_app/pyproject.toml`` names
them). The same ClientApp as in the simulation; the ServerApp fits one model of a cdrec config
over the grid, saves it and writes its test metrics beside it.

Run config (``flwr run ... --run-config``): ``config`` (a cdrec YAML), ``model`` (a label in it),
``seed``, ``num-devices`` (how many SuperNodes to wait for), ``output`` (the model file) and
``overrides``. A SuperNode's node config: ``partition-id`` and ``data-path`` (a device data file
from ``cdrec federated-devices``).

The ServerApp builds the config's split to size the model and to validate (the bases' held-out
ratings, the validation users): in this experiment the server knows the data; the devices' own
training ratings reach it only as gradients. A deployment without that knowledge would validate
in federated evaluation rounds (not built).
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from cdrec.federated.flower import make_client_app, serving

server_app = ServerApp()
client_app = make_client_app()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    from cdrec.config import load_config, load_data
    from cdrec.models import build_model
    from cdrec.train import FitContext, seed_everything

    run_config = context.run_config
    config = load_config(str(run_config["config"]),
                         shlex.split(str(run_config.get("overrides", ""))))
    label, seed = str(run_config["model"]), int(run_config["seed"])
    name, params = config.model_params(label)
    split = config.scenario.build().split(load_data(config.data), seed)
    seed_everything(seed)
    model = build_model(name, **{**params, "engine": "deployment"})
    with serving(grid, int(run_config["num-devices"])):
        model.fit(split.train, split.validation,
                  FitContext(seed=seed, progress=False, label=f"{label} seed {seed}"))
    output = Path(str(run_config["output"]))
    model.save(output)
    metrics = {k: float(v) for k, v in split.test.evaluate(model).items()}
    output.with_suffix(".json").write_text(json.dumps(
        {"model": label, "seed": seed, "metrics": metrics, "rounds": model.rounds_}, indent=1))
