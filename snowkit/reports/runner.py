"""Run a notebook with papermill and leave a self-contained report folder behind.

``run()`` is what ``snowkit run``, cron, CI and an Airflow ``@task`` call. It adds what plain
papermill does not do (notebook-kit notes §1.6, §2.1): it creates the dated run folder first,
runs the kernel in the notebook's directory with a per-cell timeout, refuses secret-looking
parameters (they would be written into the executed notebook twice), sets ``SNOWKIT_RUN_DIR``
for the kernel only (so ``emit()``/``save_figure()`` write next to the report) and hands it the
caller's resolved ``SNOWKIT_HOME`` and ``SNOWKIT_REPORTS`` (the kernel's working directory is
the notebook's folder, where the defaults would point somewhere else), renders a
code-free HTML even when a cell failed, extracts the PNG charts, and records ``run.json``.

Layout: ``<reports_dir>/<notebook stem>/<YYYY-MM-DD>/<run_id>/`` holding ``<stem>.ipynb``,
``report.html``, ``figures/*.png``, ``data/*`` (from ``emit``) and ``run.json``.
"""

from __future__ import annotations

import math
import os
import platform
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from html import escape as html_escape
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import nbformat
import orjson
from nbformat import NotebookNode

from snowkit import paths
from snowkit.files import write_atomic
from snowkit.ops.logging import new_run_id
from snowkit.ops.redaction import is_secret_key, redact
from snowkit.reports.emit import RUN_DIR_ENV
from snowkit.reports.figures import extract_figures

EXIT_OK = 0
#: Seconds a kernel may take to start: a scheduled run on a busy machine should not fail
#: because the kernel was slow to answer (papermill's default is 60).
KERNEL_START_TIMEOUT_S = 180
EXIT_FAILED = 1
EXIT_USAGE = 2

#: Moves the reports folder (read by ``snowkit.paths.reports_dir()``).
REPORTS_ENV = "SNOWKIT_REPORTS"

#: Parameter names that look like they carry a secret (matched anywhere in the name).
SECRET_PARAMETER = re.compile(
    r"passw|passwd|passphrase|(^|_)pass($|_)|(^|_)pwd($|_)|secret|token|api_?key|credential"
    r"|private_?key|authorization|cookie",
    re.IGNORECASE,
)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_JSON_SCALARS = (str, int, float, bool, type(None))

Status = Literal["ok", "failed"]


class RunUsageError(ValueError):
    """The run could not start: the message says what to change. CLI exit code 2."""


@dataclass(frozen=True)
class RunError:
    """Why a notebook run failed.

    ``cell_index`` is the failed cell's 0-based position in the source notebook (papermill's
    injected-parameters cell not counted); None when no cell is to blame.
    """

    ename: str
    evalue: str
    cell_index: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ename": self.ename, "evalue": self.evalue, "cell_index": self.cell_index}


@dataclass(frozen=True)
class RunResult:
    """What ``run()`` produced; ``exit_code`` is what a scheduler should see."""

    status: Status
    run_id: str
    run_dir: Path
    executed_notebook: Path
    html: Path
    run_json: Path
    figures: list[Path] = field(default_factory=list)
    error: RunError | None = None
    duration_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.status == "ok" else EXIT_FAILED

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def resolve_parameter(value: str) -> Any:
    """Type a ``-p`` value the way papermill's CLI does: True/False/None, int, float, else str."""
    if value in ("True", "False"):
        return value == "True"
    if value == "None":
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            continue
    return value


def check_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate run parameters; raise :class:`RunUsageError` for names, types or secrets."""
    checked: dict[str, Any] = {}
    for name, value in (parameters or {}).items():
        if not isinstance(name, str) or not _IDENTIFIER.match(name):
            raise RunUsageError(
                f"parameter name {name!r} is not a Python identifier; use letters, digits and _"
            )
        if SECRET_PARAMETER.search(name) or is_secret_key(name):
            raise RunUsageError(
                f"parameter {name!r} looks like a secret, and parameters are written into the "
                "executed notebook. Configure credentials instead (environment variables or a "
                "1Password reference, see `snowkit config`) and pass only a reference such as "
                "the instance name."
            )
        if not _json_like(value):
            raise RunUsageError(
                f"parameter {name!r} has type {type(value).__name__}; use str, int, float, bool, "
                "None or lists/dicts of those (pass dates as ISO 8601 strings)"
            )
        if redact(value) != value or _carries_credentials(value):
            raise RunUsageError(
                f"parameter {name!r} holds a secret-named key, a known secret value or a URL "
                "with a user name or password; configure credentials instead of passing them "
                "as parameters (they would be written into the executed notebook and run.json)"
            )
        checked[name] = value
    return checked


#: ``scheme://user[:password]@``: credentials inside a URL.
_URL_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/@\s]+@")
#: the names of a URL's query (or fragment) parameters
_URL_PARAMETER = re.compile(r"[?&#;]([^=&#;\s]+)=")
#: Variables whose values are secrets: a parameter holding one would be written out in clear
#: (this process never loaded them, so the secret registry does not know them).
SECRET_VARIABLES = (
    "SERVICENOW_PASSWORD", "SERVICENOW_API_KEY", "SERVICENOW_OAUTH_TOKEN",
    "SERVICENOW_CLIENT_SECRET", "UNIFI_PASSWORD", "UNIFI_API_KEY", "SNOWKIT_AUDIT_KEY",
)  # fmt: skip


def _carries_credentials(value: Any) -> bool:
    """A string in ``value`` that is, or holds, a URL with user info or a secret-named query
    parameter, or a secret from the environment (a registered secret is caught by
    ``redact``)."""
    if isinstance(value, str):
        if _URL_USERINFO.search(value):
            return True
        if "://" in value and any(map(is_secret_key, _URL_PARAMETER.findall(value))):
            return True  # e.g. ?x-sn-apikey=... (it had reached run.json and the notebook)
        secrets = (os.environ.get(n, "") for n in SECRET_VARIABLES)
        return any(len(secret) >= 4 and secret in value for secret in secrets)
    if isinstance(value, list):
        return any(_carries_credentials(v) for v in value)
    if isinstance(value, dict):
        return any(_carries_credentials(v) for v in value.values())
    return False


#: A declared parameter's type (papermill's inferred name) and the values it takes.
_TYPES: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "bool": (bool,),
                                       "str": (str,)}  # fmt: skip


def _check_declared(params: Mapping[str, Any], source: Path) -> None:
    """Every parameter must be one the notebook's ``parameters`` cell declares, of its type:
    papermill only warns of an unknown name (a typo then runs with the default, exit 0), and
    a value of the wrong type failed several cells in (``'<' not supported ...``)."""
    if not params:
        return
    import papermill

    try:
        declared = papermill.inspect_notebook(str(source))
    except Exception:  # no parameters cell papermill can read: nothing to check against
        return
    if not declared:
        return
    for name, value in params.items():
        if name not in declared:
            known = ", ".join(sorted(declared))
            raise RunUsageError(
                f"{source.name} has no parameter {name!r}; its parameters are: {known} "
                f"(`papermill --help-notebook {source.name}` explains each)"
            )
        wanted = _TYPES.get(str(declared[name].get("inferred_type_name")))
        if wanted is None or (value is None and declared[name].get("default") == "None"):
            continue
        if (
            value is None
            or (isinstance(value, bool) and bool not in wanted)
            or not isinstance(value, wanted)
        ):
            kind = declared[name]["inferred_type_name"]
            raise RunUsageError(
                f"parameter {name!r} of {source.name} takes {kind} "
                f"(default {declared[name].get('default')}); got {type(value).__name__}"
            )


def _json_like(value: Any) -> bool:
    if isinstance(value, _JSON_SCALARS):
        return True
    if isinstance(value, list):
        return all(_json_like(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_like(v) for k, v in value.items())
    return False


def _read_notebook(path: Path) -> NotebookNode:
    if not path.is_file():
        raise RunUsageError(f"notebook not found: {path}; give the path to an .ipynb file")
    if path.suffix != ".ipynb":
        raise RunUsageError(f"{path} is not a notebook; give the path to an .ipynb file")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several unrelated types for a broken file
        raise RunUsageError(f"cannot read notebook {path}: {exc}") from None


def _check_kernel(name: str | None, nb: NotebookNode) -> str:
    """The kernel to use (argument, else the notebook's kernelspec), which must be installed."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    chosen = name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    try:
        KernelSpecManager().get_kernel_spec(chosen)
    except NoSuchKernel:
        raise RunUsageError(
            f"no Jupyter kernel named {chosen!r}; list kernels with `jupyter kernelspec list`, "
            f"register one with `python -m ipykernel install --sys-prefix --name {chosen}`, "
            "or pass --kernel python3"
        ) from None
    return chosen


def _kernel_manager_class(extra_env: Mapping[str, str]) -> type:
    """An AsyncKernelManager that adds ``extra_env`` to the kernel's environment only, and
    encrypts the kernel's channels where the kernel supports it.

    Setting ``os.environ`` instead would leak into the calling process and race between
    concurrent runs (an Airflow worker's threads). The channels are loopback TCP sockets:
    unencrypted, any local user could read the code and outputs (the kernel warns so on every
    run). ``transport_encryption="auto"`` (jupyter_client versions that have it) uses CurveZMQ
    when the kernelspec declares support (recent ipykernel writes that into the kernelspecs
    ``make`` installs) and plain TCP otherwise.
    """
    import zmq
    from jupyter_client.manager import AsyncKernelManager

    env_overrides = dict(extra_env)
    # "auto" is refused outright by a pyzmq built without CurveZMQ (no libsodium)
    encrypt = "transport_encryption" in AsyncKernelManager.class_trait_names() and zmq.has("curve")

    class RunKernelManager(AsyncKernelManager):
        def __init__(self, **kw: Any) -> None:
            if encrypt and not _configured(kw.get("config"), "transport_encryption"):
                kw.setdefault("transport_encryption", "auto")
            super().__init__(**kw)

        async def start_kernel(self, **kw: Any) -> None:
            env = dict(kw.pop("env", None) or os.environ)
            env.update(env_overrides)
            await super().start_kernel(env=env, **kw)

    return RunKernelManager


def _configured(config: Any, name: str) -> bool:
    """Whether a traitlets ``config`` sets kernel managers' ``name`` (the user's choice, which
    a keyword argument would override)."""
    sections = ("KernelManager", "AsyncKernelManager", "RunKernelManager")
    return bool(config) and any(name in (config.get(section) or {}) for section in sections)


def kernel_environment(run_dir: Path, reports_dir: Path) -> dict[str, str]:
    """What the kernel's environment gets on top of ours, all absolute paths.

    The kernel runs in the notebook's folder, so a relative or defaulted ``SNOWKIT_HOME``
    (``./.snowkit``) would otherwise mean ``notebooks/.snowkit`` there while ``snowkit load``
    uses the caller's: hand it the state folder *resolved here* (the caller's own setting
    when there is one, made absolute), and this run's reports folder likewise.
    """
    return {
        RUN_DIR_ENV: str(run_dir),
        paths.HOME_ENV: str(paths.state_dir()),
        REPORTS_ENV: str(reports_dir),
    }


def _versions(kernel: str, nb: NotebookNode | None) -> dict[str, str | None]:
    def pkg(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    language = (nb.metadata.get("language_info", {}) if nb is not None else {}) or {}
    return {
        "python": platform.python_version(),
        "snowkit": pkg("snowkit"),
        "papermill": pkg("papermill"),
        "nbconvert": pkg("nbconvert"),
        "kernel": kernel,
        "kernel_language_version": language.get("version"),
    }


def _execute(
    source: Path,
    output: Path,
    parameters: dict[str, Any],
    kernel: str,
    timeout: float | None,
    kernel_env: Mapping[str, str],
) -> RunError | None:
    """Execute with papermill; return the error, or None when every cell ran."""
    import papermill as pm
    from nbclient.exceptions import DeadKernelError
    from papermill.exceptions import PapermillExecutionError

    def braces(p: Path) -> str:  # papermill str.format()s both paths with the parameters
        return str(p).replace("{", "{{").replace("}", "}}")

    try:
        pm.execute_notebook(
            braces(source),
            braces(output),
            parameters=parameters,
            kernel_name=kernel,
            cwd=str(source.parent),
            progress_bar=sys.stderr.isatty(),
            log_output=False,
            execution_timeout=math.ceil(timeout) if timeout is not None else None,  # an int
            start_timeout=KERNEL_START_TIMEOUT_S,
            kernel_manager_class=_kernel_manager_class(kernel_env),
        )
    except PapermillExecutionError as exc:
        return RunError(str(exc.ename), redact(str(exc.evalue)), exc.cell_index)
    except DeadKernelError as exc:
        return RunError(
            "DeadKernelError",
            "the kernel died while running the notebook (often killed for lack of memory); "
            f"check memory limits and rerun: {redact(str(exc))}",
            None,
        )
    except Exception as exc:  # kernel start-up failures and the like: still leave a report
        return RunError(type(exc).__name__, redact(str(exc)) or repr(type(exc)), None)
    return None


def _last_started_cell(executed: NotebookNode) -> int | None:
    """The cell a timeout stopped: the last one papermill started (it names none itself)."""
    started = [
        n
        for n, cell in enumerate(executed.cells)
        if (cell.get("metadata", {}).get("papermill") or {}).get("start_time")
    ]
    return started[-1] if started else None


def _source_cell_index(executed: NotebookNode, index: int) -> int:
    """The failed cell's position in the notebook the user wrote.

    papermill counts cells of the executed copy, which holds its injected-parameters cell; a
    run with parameters would otherwise send the user to the cell after the one that failed.
    """
    injected = sum(
        1
        for cell in executed.cells[:index]
        if "injected-parameters" in cell.get("metadata", {}).get("tags", [])
    )
    return index - injected


def _load_executed(output: Path, fallback: NotebookNode) -> NotebookNode:
    if output.is_file():
        try:
            return nbformat.read(output, as_version=4)
        except Exception:  # a torn write: report on what we have
            pass
    nbformat.write(fallback, output)
    return fallback


def _fallback_html(stem: str, rid: str, error: RunError | None, exc: Exception) -> str:
    status = f"failed: {error.ename}: {error.evalue}" if error else "ok"
    return (
        f"<!doctype html><title>{html_escape(stem)} · {html_escape(rid)}</title>"
        f"<h1>{html_escape(stem)}</h1><p>Run {html_escape(rid)} {html_escape(status)}.</p>"
        f"<p>The HTML report could not be rendered ({html_escape(type(exc).__name__)}: "
        f"{html_escape(redact(str(exc)))}); open the executed notebook in this folder.</p>"
    )


def _write_json(path: Path, doc: Mapping[str, Any]) -> None:
    payload = orjson.dumps(redact(dict(doc)), default=str, option=orjson.OPT_INDENT_2)
    write_atomic(path, payload + b"\n")


def run(
    notebook: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    kernel: str | None = None,
    timeout: float | None = None,
    reports_dir: str | Path | None = None,
    run_id: str | None = None,
) -> RunResult:
    """Execute ``notebook`` and write its report folder; see the module docstring.

    ``timeout`` is per cell in seconds (None: no limit). Raises :class:`RunUsageError` before
    anything is written when the notebook, a parameter, the kernel or the run id is unusable;
    a failing notebook is not an exception: the result has ``status="failed"``.
    """
    source = Path(notebook).resolve()
    nb = _read_notebook(source)
    params = check_parameters(parameters)
    _check_declared(params, source)
    kernel_name = _check_kernel(kernel, nb)
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        raise RunUsageError("--timeout must be a positive number of seconds per cell")
    if run_id is not None and not _RUN_ID.match(run_id):
        raise RunUsageError(f"run id {run_id!r} may hold only letters, digits, '.', '_' and '-'")

    started = datetime.now(UTC)
    rid = run_id or new_run_id(started)
    base = Path(reports_dir).resolve() if reports_dir else paths.reports_dir()
    run_dir = base / source.stem / f"{started:%Y-%m-%d}" / rid
    try:
        run_dir.mkdir(parents=True, exist_ok=False)
    except FileExistsError:
        raise RunUsageError(f"run folder {run_dir} already exists; choose another run id") from None
    except OSError as exc:  # a file where a folder must be, no rights: nothing has run
        raise RunUsageError(
            f"cannot create the run folder {run_dir} ({exc.strerror}); choose a writable "
            "--reports-dir (or SNOWKIT_REPORTS)"
        ) from None
    output = run_dir / source.name
    clock = time.perf_counter()

    from snowkit.reports.html import write_html  # nbconvert is slow to import; kernels skip it

    kernel_env = kernel_environment(run_dir, base)
    error = _execute(source, output, params, kernel_name, timeout, kernel_env)
    executed = _load_executed(output, nb)
    if error is not None and error.cell_index is None and error.ename == "CellTimeoutError":
        error = replace(error, cell_index=_last_started_cell(executed))
    if error is not None and error.cell_index is not None:
        error = replace(error, cell_index=_source_cell_index(executed, error.cell_index))
    notice = None
    if error is not None and error.cell_index is None:
        notice = f"**This run failed: {error.ename}.** {error.evalue}"
    html = run_dir / "report.html"
    try:
        write_html(executed, html, title=f"{source.stem} · {rid}", notice=notice)
    except Exception as exc:  # a report that cannot render must not lose run.json
        html.write_text(_fallback_html(source.stem, rid, error, exc), encoding="utf-8")
    extract_figures(executed, run_dir)
    figures = sorted((run_dir / "figures").glob("*.png"))  # extracted + save_figure()'s

    duration = round(time.perf_counter() - clock, 3)
    status: Status = "ok" if error is None else "failed"
    run_json = run_dir / "run.json"
    _write_json(
        run_json,
        {
            "notebook": source.stem,
            "notebook_path": str(source),
            "run_id": rid,
            "parameters": params,  # checked: no secret names; redacted again on write
            "versions": _versions(kernel_name, executed),
            "status": status,
            "started_at": started.isoformat(),
            "finished_at": datetime.now(UTC).isoformat(),
            "duration_s": duration,
            "timeout_per_cell_s": timeout,
            "error": error.to_dict() if error else None,
            "artifacts": {
                "notebook": output.name,
                "html": html.name,
                "figures": [str(p.relative_to(run_dir)) for p in figures],
            },
        },
    )
    return RunResult(
        status=status,
        run_id=rid,
        run_dir=run_dir,
        executed_notebook=output,
        html=html,
        run_json=run_json,
        figures=figures,
        error=error,
        duration_s=duration,
    )


__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "RunError",
    "RunResult",
    "RunUsageError",
    "check_parameters",
    "kernel_environment",
    "new_run_id",
    "resolve_parameter",
    "run",
]
