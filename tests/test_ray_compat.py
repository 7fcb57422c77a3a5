"""nas.search.ray_compat: the private parts of Ray that `nas` relies on, checked against Ray itself, so that an
upgrade that moves or changes one fails here, by name (tests/test_ray.py checks the sockets end to end)."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest

from nas.search import ray_compat


def test_auto_address_is_resolved_by_rays_own_lookup(monkeypatch, tmp_path) -> None:
    from ray._private import services

    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path))
    monkeypatch.setattr(services, "find_gcs_addresses", list)  # another test's Ray may be running
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConnectionError, match="Could not find any running Ray instance"):
        ray_compat.resolve_address("auto")
    monkeypatch.setenv("RAY_ADDRESS", "10.1.2.3:6380")
    assert ray_compat.resolve_address("auto") == "10.1.2.3:6380"


SINGLE_MACHINE = """
import json, os, sys
import ray
from ray._private import ray_constants, services
before = ray_constants.ENABLE_RAY_CLUSTER
from nas.search import ray_compat
if sys.argv[1] == "call":
    ray_compat.single_machine_mode()
print(json.dumps([before, ray_constants.ENABLE_RAY_CLUSTER, services.get_node_ip_address(),
                  os.environ.get(ray_compat.SINGLE_MACHINE_ENV)]))
"""


def _single_machine(how: str, env_value: str | None) -> list:
    env = {k: v for k, v in os.environ.items() if k != ray_compat.SINGLE_MACHINE_ENV}
    if env_value is not None:
        env[ray_compat.SINGLE_MACHINE_ENV] = env_value
    done = subprocess.run([sys.executable, "-c", SINGLE_MACHINE, how], env=env, capture_output=True, text=True,
                          timeout=120, check=True)
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def test_single_machine_mode_is_the_environment_variable_ray_reads_at_import() -> None:
    """RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before `import ray` turns ENABLE_RAY_CLUSTER off (a bool); without it,
    on Linux, it is on; and Ray's node-IP lookup reads the module attribute at call time, so setting it after the
    import (single_machine_mode) keeps a local node on loopback."""
    assert _single_machine("none", "0")[:2] == [False, False]
    before, after, node_ip, env = _single_machine("call", None)
    assert before is True and after is False and env == "0"
    assert node_ip == "127.0.0.1"


def test_ray_init_still_takes_a_node_ip_address() -> None:
    import ray
    from ray._private import services

    assert "_node_ip_address" in inspect.getsource(ray.init)  # popped from ray.init's **kwargs
    assert "ray_constants.ENABLE_RAY_CLUSTER" in inspect.getsource(services.get_node_ip_address)
    assert isinstance(ray_compat.SINGLE_MACHINE_ENV, str)
    from ray._private import ray_constants

    assert ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR == ray_compat.SINGLE_MACHINE_ENV
