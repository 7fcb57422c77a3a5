"""Every use `nas` makes of Ray beyond its public API, in one place (tests/test_ray_compat.py fails loudly
when a Ray upgrade changes any of it). Ray (2.60) offers no public API for any of the three:
- resolving `address="auto"` without connecting (to refuse it with one line when no Ray runs here):
  `ray._private.services.canonicalize_bootstrap_address_or_die`;
- its single-machine mode (loopback stays loopback, every server listens on 127.0.0.1): the environment variable
  `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, read once into `ray._private.ray_constants.ENABLE_RAY_CLUSTER` when
  `ray` is imported, and read from that module attribute at call time (`services.get_node_ip_address`), so
  a process that imported Ray before setting the variable sets the constant too;
- the node IP of a local Ray that `ray.init` starts: its underscored keyword `_node_ip_address` (documented
  among ray.init's "don't use unless you know what you're doing" arguments; `ray start --node-ip-address` is
  the public form, for a Ray started outside the search).
"""

from __future__ import annotations

import os
from typing import Any

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's single-machine mode (loopback stays loopback)


def resolve_address(address: str) -> str:
    """Ray's own lookup of a bootstrap address ('auto': RAY_ADDRESS, else the cluster `ray start` registered on
    this machine, else a running gcs_server) as host:port; ConnectionError when none or several are found."""
    from ray._private.services import canonicalize_bootstrap_address_or_die

    return canonicalize_bootstrap_address_or_die(address)


def single_machine_mode() -> None:
    """Ray's single-machine mode in this process and those it starts, whether or not `ray` is imported yet."""
    os.environ[SINGLE_MACHINE_ENV] = "0"  # read at `import ray`: set the constant too, ray may be imported already
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def init_local(node_ip: str, num_cpus: int | None, num_gpus: int | None, **kwargs: Any) -> Any:
    """Start a local Ray (never a cluster `ray start` left registered on this machine) on node IP `node_ip`."""
    import ray

    return ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address=node_ip, **kwargs)
