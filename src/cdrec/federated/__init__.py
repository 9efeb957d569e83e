"""Federated training (MetaEM's, and the federated MF baseline's): the device/server split of
each round (``protocol``, no transport), the devices' data (``devices``), and Flower's
ClientApp, server transport and simulation engine over them (``flower``; needs the
``cdrec[federated]`` extra)."""

from __future__ import annotations

import os
import sys
import warnings

# What keeps Flower and Ray on this machine: no telemetry, no update check, Ray bound to
# 127.0.0.1 (read by Ray at import, so set before anything imports it).
LOOPBACK_ENVIRONMENT = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
}


def loopback_environment() -> None:
    """Set :data:`LOOPBACK_ENVIRONMENT` in this process (and the ones it starts)."""
    late = ("ray" in sys.modules
            and os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER") != "0")
    os.environ.update(LOOPBACK_ENVIRONMENT)
    if late:
        warnings.warn("ray was imported before cdrec.federated: its binding address was read "
                      "before RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 was set; import "
                      "cdrec.federated first to keep Ray on 127.0.0.1", stacklevel=2)


loopback_environment()
