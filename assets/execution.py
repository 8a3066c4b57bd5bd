"""How a run executes its steps, chosen by the deployment (USAGE_STATS_EXECUTOR), never by code.

- unset (the embedded default, `make demo` / `make dev`): the usage jobs run in one process
  (their stages form a chain), the others with Dagster's default (a process per step); the
  launchpad can still choose `multiprocess` or `in_process` for a run.
- `in_process` / `multiprocess`: every job and asset backfill that way.
- `celery`: every step is a Celery task that a `dagster-celery` worker (on any machine with the
  same code, the same DAGSTER_HOME instance and access to the lake, warehouse and stores) picks
  up from the broker: USAGE_STATS_CELERY_BROKER_URL (e.g. redis://host:6379/0), results in
  USAGE_STATS_CELERY_BACKEND_URL (the same Redis will do). deploy/celery.yaml is the workers'
  side of the same settings. Both are read when a run starts, from the run worker's
  environment, so the UI shows the variables' names, never a password in a URL.
- `k8s`: every step is a Kubernetes Job (dagster-k8s's k8s_job_executor), with the image,
  namespace, config maps and secrets of the run launcher's run (deploy/helm/values.yaml).
"""

from __future__ import annotations

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from usage_stats.settings import Settings

# The Celery app's settings, the same for the executor and the workers (deploy/celery.yaml):
# a worker takes one task at a time (steps are long; prefetching would leave the other
# workers idle), and a task is acknowledged when a worker takes it, so a worker that dies
# mid-step fails that step (Celery's WorkerLostError) and with it the run, visibly, for the
# daemon's run retry to re-execute from the failure, rather than being silently run twice.
# (A whole machine lost mid-step is another matter: its task stays "started" and the run waits;
# terminate the run, and the retry takes over. README: Production.)
CELERY_APP_SETTINGS = {
    "worker_prefetch_multiplier": 1,
    "task_acks_late": False,
    # the result backend says which worker (host, pid) runs a step while it runs
    "task_track_started": True,
    "broker_connection_retry_on_startup": True,
    "result_expires": 86400,
}


def celery_executor_def() -> ExecutorDefinition:
    from dagster_celery import celery_executor  # only deployments that choose it need it

    return celery_executor.configured(
        {
            "broker": {"env": "USAGE_STATS_CELERY_BROKER_URL"},
            "backend": {"env": "USAGE_STATS_CELERY_BACKEND_URL"},
            "config_source": CELERY_APP_SETTINGS,
        },
        name="celery",
    )


def executor_for(settings: Settings) -> ExecutorDefinition | None:
    """The executor of every job and asset backfill; None: Dagster's default."""
    if settings.executor == "celery":
        return celery_executor_def()
    if settings.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    return {"": None, "in_process": in_process_executor, "multiprocess": multiprocess_executor}[
        settings.executor
    ]


def one_process_config(settings: Settings) -> dict | None:
    """Run config of the chain jobs: one process by default, else the deployment's executor."""
    if settings.executor:
        return None
    return {"execution": {"config": {"in_process": {}}}}
