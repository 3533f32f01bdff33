"""Example Airflow DAG: the hourly health check on many instances, one mapped task each.

Documentation, not part of the snowkit package: copy it into your Airflow ``dags/`` folder on
workers that have snowkit installed. Each task calls the same runner as ``snowkit run``, so
every instance gets its own report folder under ``$SNOWKIT_REPORTS``. Credentials reach the
notebook kernel through the worker's environment (a secrets backend exporting them, or an
EnvironmentFile), never through ``params``, which Airflow displays and stores.

Airflow >= 2.4 (``airflow.decorators``) and 3.x (``airflow.sdk``) are both supported.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

try:  # Airflow 3
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task

SNOWKIT_HOME = Path("/opt/snowkit")
NOTEBOOK = SNOWKIT_HOME / "notebooks" / "health_check.ipynb"
REPORTS = Path("/var/lib/snowkit/reports")
INSTANCES = ["prod", "test", "dev"]  # aliases resolved by snowkit's credentials configuration


@dag(
    dag_id="snowkit_health_check",
    schedule="@hourly",
    start_date=datetime(2026, 1, 1, tzinfo=UTC),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(minutes=20),  # wall clock for the whole notebook
    },
    tags=["snowkit", "servicenow"],
)
def snowkit_health_check() -> None:
    @task(max_active_tis_per_dag=4)
    def run_health_check(instance: str) -> dict[str, object]:
        """Run the notebook for one instance; fail the task (so Airflow retries) on failure."""
        from snowkit.reports import run

        result = run(
            NOTEBOOK,
            {"instance": instance},
            kernel="python3",
            timeout=300,  # per cell
            reports_dir=REPORTS,
        )
        if not result.ok:
            error = result.error
            what = f"{error.ename}: {error.evalue}" if error else "unknown error"
            raise RuntimeError(f"health check for {instance} failed: {what} (see {result.html})")
        return {"instance": instance, "run_id": result.run_id, "html": str(result.html)}

    @task
    def summarize(results: list[dict[str, object]]) -> None:
        for item in results:
            print(f"{item['instance']}: {item['html']}")

    summarize(run_health_check.expand(instance=INSTANCES))


snowkit_health_check()
