"""FedMetaEM on a Flower deployment on 127.0.0.1: the test starts a SuperLink and two
SuperNodes (one device each, their data written by ``cdrec federated-devices``), runs the app
with ``flwr run`` for a few rounds, and stops every process it started by its process id (each
in its own process group, so the SuperExec children go too)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cdrec import load
from cdrec.federated import LOOPBACK_ENVIRONMENT

pytest.importorskip("flwr")
if shutil.which("flower-superlink") is None:  # pragma: no cover - the extra is installed
    pytest.skip("flower-superlink is not on PATH", allow_module_level=True)

APP = Path(__file__).resolve().parents[1] / "src" / "cdrec" / "federated" / "flower_app"
CONFIG = """name: deployment
data: {format: douban, path: "sample:douban", domains: [book, music]}
scenario: {kind: coldstart, params: {source: book, target: music, test_fraction: 0.2,
           validation_fraction: 0.1}}
models:
  FedMetaEM: {epochs: 1, devices_per_round: 2,
              base_config: {epochs: 1, dim: 8, hidden: 16, holdout: 0.0}}
seeds: [0]
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s")


@pytest.fixture
def loopback(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path, list[subprocess.Popen]]]:
    env = {**os.environ, **LOOPBACK_ENVIRONMENT, "FLWR_HOME": str(tmp_path / "flwr_home")}
    processes: list[subprocess.Popen] = []
    try:
        yield env, tmp_path, processes
    finally:
        for proc in processes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in processes:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def test_two_supernodes_train_fedmetaem_for_a_few_rounds(loopback) -> None:
    env, tmp, processes = loopback
    config = tmp / "deployment.yaml"
    config.write_text(CONFIG)
    devices = tmp / "devices.pt"
    subprocess.run([sys.executable, "-m", "cdrec", "federated-devices", str(config),
                    "--model", "FedMetaEM", "--out", str(devices), "--max-devices", "2"],
                   check=True, env=env, cwd=tmp)

    def start(args: list[str], log: str) -> None:
        processes.append(subprocess.Popen(args, env=env, cwd=tmp, start_new_session=True,
                                          stdout=open(tmp / log, "w"),
                                          stderr=subprocess.STDOUT))

    link = free_port()
    start(["flower-superlink", "--insecure", "--disable-runtime-dependency-installation",
           "--host", "127.0.0.1", "--port", str(link)], "superlink.log")
    wait_for(link)
    for p in range(2):
        start(["flower-supernode", "--insecure", "--superlink", f"127.0.0.1:{link}",
               "--host", "127.0.0.1", "--port", str(free_port()),
               "--node-config", f"partition-id={p} data-path='{devices}'"], f"node{p}.log")
    home = Path(env["FLWR_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink.loopback]\naddress = "127.0.0.1:{link}"\ninsecure = true\n')
    output = tmp / "fedmetaem.pt"
    run_config = (f"config='{config}' model='FedMetaEM' seed=0 num-devices=2 "
                  f"output='{output}'")
    done = subprocess.run(["flwr", "run", str(APP), "loopback", "--stream",
                           "--run-config", run_config], env=env, cwd=tmp, timeout=600,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    for _ in range(120):  # the ServerApp writes its report last
        if output.with_suffix(".json").exists():
            break
        time.sleep(0.5)
    report = json.loads(output.with_suffix(".json").read_text())
    stages = {r["stage"] for r in report["rounds"]}
    assert stages == {"rounds_base_book", "rounds_base_music", "rounds_mapping"}
    assert all(r["sampled"] == 2 and r["failed"] == 0 for r in report["rounds"])
    assert all(r["bytes_down_per_device"] > 0 for r in report["rounds"])
    model = load(output)                       # the trained model, saved by the ServerApp
    assert type(model).__name__ == "FedMetaEM"
    assert all(v == v for v in report["metrics"].values())   # finite test metrics
