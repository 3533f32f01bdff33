"""The notebook session: a ready client (and the embedded instance) for the kernel's life.

One ``connect()`` replaces the same set-up cells in every notebook: quiet console logging,
the embedded instance started once (and stopped at interpreter exit), credentials from the
environment for a real instance. Re-running the cell returns the open session instead of
starting a second instance.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from snowkit import paths

if TYPE_CHECKING:
    from snowkit.cmdb.job import Connection
    from snowkit.cmdb.report import RunReport
    from snowkit.ops.health import HealthCheck
    from snowkit.ops.metrics import MetricsCollector
    from snowkit.unifi import Inventory, LabConfig

EMBEDDED = "embedded"


_sessions: dict[tuple[str, bool], Session] = {}


_sessions_lock = threading.Lock()


def quiet_logging(level: str = "INFO") -> Path:
    """Send snowkit's structured log to ``<state>/logs/snowkit.jsonl`` only, not to the cell.

    Log lines in cell output make reports unreadable and can trip papermill's IOPub limits
    (papermill #477). Returns the log file path.
    """
    from snowkit.ops.logging import configure_logging

    log_file = paths.logs_dir() / "snowkit.jsonl"
    configure_logging(level=level, file_path=log_file, console=False)
    return log_file


def progress_bars() -> bool:
    """Whether a load in this kernel draws progress bars (``snowkit.cmdb.progress`` decides:
    the widget bar in JupyterLab with ipywidgets, none under ``snowkit run``, papermill or
    nbmake without ipywidgets)."""
    from snowkit.cmdb.progress import progress_enabled

    return progress_enabled(None)


@dataclass(repr=False)
class Session:
    """A ready ServiceNow client, plus the embedded instance when ``instance="embedded"``.

    Use :func:`connect` to get one. ``client`` is a ``ServiceNowAPIClient`` with its metrics
    in ``metrics``; ``sandbox`` is the running ``snowkit.sandbox.Sandbox`` or None.
    """

    instance: str
    connection: Connection
    credentials: Any
    metrics: MetricsCollector
    persist: bool = False
    closed: bool = field(default=False, init=False)

    @property
    def client(self) -> Any:
        return self.connection.client

    @property
    def sandbox(self) -> Any:
        return self.connection.sandbox

    @property
    def embedded(self) -> bool:
        return self.sandbox is not None

    @property
    def url(self) -> str:
        """The instance URL in use (the embedded instance's loopback URL when embedded)."""
        return str(self.sandbox.url if self.embedded else self.client.instance_url)

    def set_faults(self, profile: Mapping[str, Any] | None) -> None:
        """Replace the embedded instance's fault profile (None heals it); docs/sandbox.md."""
        if not self.embedded:
            raise ValueError(
                f"faults can only be injected into the embedded instance, not {self.url}; "
                "run this notebook with instance='embedded'"
            )
        self.sandbox.set_faults(dict(profile) if profile else None)

    def collect(self, source: str = "lab", lab: LabConfig | None = None) -> Inventory:
        """The UniFi inventory from ``source``: "lab" generates the lab from ``lab`` and serves
        it at ``/unifi`` on the embedded instance (a later call replaces the earlier lab) or on
        a loopback port of its own; the others read ``UNIFI_*`` from the environment."""
        from snowkit.cmdb.job import Connection, collect_inventory

        if source != "lab" or self.embedded:
            return collect_inventory(source, lab=lab, connection=self.connection)
        # No embedded instance to mount it on: serve the lab only for this call, so repeated
        # calls do not leave loopback servers behind.
        scratch = Connection(self.client)
        try:
            return collect_inventory(source, lab=lab, connection=scratch)
        finally:
            if scratch.lab_server is not None:
                scratch.lab_server.shutdown()

    def load(self, inventory: Inventory | None = None, **options: Any) -> RunReport:
        """One load through ``snowkit.cmdb.job.run_load`` (same steps and files as
        ``snowkit load``); ``options`` are run_load's keyword arguments."""
        from snowkit.cmdb.job import run_load

        if self.embedded:
            options.setdefault("sandbox", self.sandbox)
        else:
            options.setdefault("instance", self.instance)
            options.setdefault("credentials", self.credentials)
        try:
            return run_load(inventory=inventory, **options)
        finally:
            quiet_logging()  # run_load points the log back at the file, keep the cell quiet

    def health(self, timeout_seconds: float = 15.0) -> dict[str, HealthCheck]:
        """Run the HealthMonitor checks (connectivity, credentials, breaker, this machine)."""
        from snowkit.ops.health import HealthMonitor

        monitor = HealthMonitor(
            client=self.client, credentials=self.credentials, metrics=self.metrics
        )
        return monitor.run_all_checks_sync(timeout_seconds=timeout_seconds)

    def close(self) -> None:
        """Close the client and stop the embedded instance (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.connection.close()
        if self.sandbox is not None:
            with contextlib.suppress(Exception):
                self.sandbox.stop()
        with _sessions_lock:
            for key, session in list(_sessions.items()):
                if session is self:
                    del _sessions[key]

    def __repr__(self) -> str:  # never the credentials, whatever their own repr does
        state = "closed" if self.closed else "open"
        return f"Session(instance={self.instance!r}, url={self.url!r}, {state})"

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def connect(
    instance: str = EMBEDDED,
    *,
    persist: bool = False,
    faults: Mapping[str, Any] | None = None,
    reuse: bool = True,
    client_options: Mapping[str, Any] | None = None,
) -> Session:
    """A :class:`Session` for ``instance`` that lives as long as the kernel.

    ``instance`` is ``"embedded"`` (start the embedded instance on a free loopback port) or an
    instance URL / name (credentials come from the environment or 1Password, never from a
    parameter). ``persist`` keeps the embedded instance's data in ``<state>/sandbox/`` so
    reruns see earlier loads (only one process should use it at a time); otherwise it lives in
    memory. ``faults`` is an initial fault profile (embedded only). With ``reuse`` a second
    call in the same kernel (re-running a cell) returns the open session instead of starting
    another instance. The session is closed at interpreter exit.
    """
    from snowkit.cmdb.job import connect as job_connect
    from snowkit.credentials import CredentialManager
    from snowkit.ops.metrics import MetricsCollector

    quiet_logging()
    key = (instance, persist)
    with _sessions_lock:
        existing = _sessions.get(key)
    if reuse and existing is not None and not existing.closed:
        if faults is not None:
            existing.set_faults(faults)
        return existing

    metrics = MetricsCollector()
    if instance == EMBEDDED:
        from snowkit.sandbox import Sandbox

        db: Path | str = ":memory:"
        if persist:
            from snowkit.cmdb.job import embedded_db_path

            db = embedded_db_path()
            paths.ensure_dir(db.parent)
        sandbox = Sandbox.start(db=db, faults=dict(faults) if faults else None)
        try:
            credentials = CredentialManager.static(
                basic=("admin", sandbox.users["admin"]), instance_url=sandbox.url
            )
            connection = job_connect(
                sandbox=sandbox,
                credentials=credentials,
                metrics=metrics,
                client_options=dict(client_options or {}),
            )
        except Exception:
            sandbox.stop()
            raise
    else:
        if faults:
            raise ValueError(
                "faults can only be injected into the embedded instance; use instance='embedded'"
            )
        credentials = CredentialManager()
        connection = job_connect(
            instance,
            credentials=credentials,
            metrics=metrics,
            client_options=dict(client_options or {}),
        )
    session = Session(instance, connection, credentials, metrics, persist)
    with _sessions_lock:
        _sessions[key] = session
    return session


def close_all() -> None:
    """Close every open session (registered with ``atexit``)."""
    with _sessions_lock:
        sessions = list(_sessions.values())
    for session in sessions:
        with contextlib.suppress(Exception):
            session.close()


atexit.register(close_all)
