"""Ray for one search: started (or joined) in a background thread while the driver prepares; local Ray on loopback.

Two facts about Ray (measured with 2.60) shape this module:
- Ray rewrites a node IP or address of `localhost` / `127.0.0.1` to the machine's outward IP, and its servers
  (gcs_server, raylet, workers, the driver's own core worker) then listen on every interface. Its single-machine
  mode (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the default on macOS and Windows) keeps loopback as loopback, and
  every Ray server then listens on 127.0.0.1 only. That mode is read when `ray` is imported, so `keep_loopback`
  sets it for this process as well as for the processes it starts (through nas.search.ray_compat, which holds
  every use of Ray's private API).
- On Linux, Ray's processes die with the *thread* that started them (PR_SET_PDEATHSIG): the thread that runs
  `ray.init` stays alive until `shutdown`.
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from nas.search import ray_compat
from nas.search.ray_compat import SINGLE_MACHINE_ENV  # noqa: F401  (where this module's readers look for it)

LOOPBACK = "127.0.0.1"
INIT_KWARGS: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": True,
                               "logging_level": "ERROR"}


PROBE_TIMEOUT_S = 5.0  # a Ray head that accepts no TCP connection within this is not there


def check_ray_address(address: str | None, key: str = "ray.address") -> None:
    """A one-line ValueError unless `address` is null, 'auto', 'local', or host:port (ray://host:port) where
    something accepts TCP connections: Ray itself retries an absent head for minutes before it gives up."""
    if address in (None, "local"):
        return
    if address == "auto":  # Ray's own lookup (RAY_ADDRESS, else the cluster `ray start` left on this machine)
        try:
            ray_compat.resolve_address(address)
        except ConnectionError as err:
            raise ValueError(f"{key}='auto': {err}") from None
        return
    valid = "expected host:port of a running Ray head, ray://host:port, 'auto' (one on this machine) or null (a " \
            "local Ray)"
    host, _, port = address.removeprefix("ray://").rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{key}={address!r} is invalid: {valid}")
    try:
        socket.create_connection((host, int(port)), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"{key}={address!r}: nothing accepts connections at {host}:{port} ({reason}); {valid}, "
                         "started with e.g. `ray start --head --node-ip-address=127.0.0.1 --port=6379`") from None


def keep_loopback() -> None:
    """Ray's single-machine mode in this process and those it starts: a loopback node IP or address stays loopback."""
    ray_compat.single_machine_mode()


class RayStart:
    """Starts a local Ray on loopback, or joins `address`, in a background thread; `wait` returns when it is up."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 num_gpus: int | None = None) -> None:
        self.address, self.num_cpus, self.num_gpus = address, num_cpus, num_gpus
        self.started = False  # this object started or joined Ray (not: Ray was already initialized in this process)
        self.error: BaseException | None = None
        self._ready, self._stop = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, name="nas-ray-start", daemon=True)

    def start(self) -> RayStart:
        """Begin starting (or joining) Ray in the background; returns at once."""
        self._thread.start()
        return self

    def wait(self) -> bool:
        """Block until Ray is up; True when this object started or joined it. Re-raises what ray.init raised."""
        self._ready.wait()
        if self.error is not None:
            raise self.error
        return self.started

    def shutdown(self) -> None:
        """Stop the local Ray this object started, or leave the cluster it joined (which keeps running)."""
        if self._thread.is_alive() or self._ready.is_set():
            self._ready.wait()
        if self.started:
            import ray

            ray.shutdown()
            self.started = False
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        import ray

        try:
            if not ray.is_initialized():
                keep_loopback()
                if self.address:
                    ray.init(address=self.address, **INIT_KWARGS)
                else:  # "local": never a cluster that `ray start` left registered on this machine
                    ray_compat.init_local(LOOPBACK, self.num_cpus or os.cpu_count(), self.num_gpus, **INIT_KWARGS)
                self.started = True
        except BaseException as err:  # surfaced by wait() in the driver's thread
            self.error = err
        finally:
            self._ready.set()
        if self.started:
            self._stop.wait()  # Ray's processes live as long as this thread
