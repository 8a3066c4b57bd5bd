"""The production configuration files (deploy/) checked without servers: what Dagster itself
will read is validated with Dagster's own config schemas, the Helm values' parts with the
chart's rules for them, and every setting they name must be one the code reads."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml
from dagster._config import process_config, validate_config
from dagster._core.instance.config import dagster_instance_config_schema
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.workspace.config_schema import WORKSPACE_CONFIG_SCHEMA
from dagster_k8s import k8s_job_executor

from assets.execution import executor_for
from usage_stats.run_queue import MATOMO_DB_TAG, UsageStatsRunCoordinator
from usage_stats.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY = REPO_ROOT / "deploy"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def known_settings() -> set[str]:
    """Every variable the code or deploy/dagster.yaml reads."""
    text = "\n".join(
        p.read_text()
        for p in [
            REPO_ROOT / "usage_stats" / "settings.py",
            REPO_ROOT / "assets" / "execution.py",
            DEPLOY / "dagster.yaml",
            DEPLOY / "workspace.yaml",
        ]
    )
    return set(re.findall(r"\b(USAGE_STATS_[A-Z0-9_]+)\b", text)) | {
        "DAGSTER_HOME",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_DEFAULT_REGION",
    }


def test_the_instance_config_is_valid_for_dagster():
    config = load("dagster.yaml")
    result = validate_config(dagster_instance_config_schema(), config)
    assert result.success, result.errors
    coordinator = config["run_coordinator"]
    assert coordinator["class"] == UsageStatsRunCoordinator.__name__
    env = {
        "USAGE_STATS_MAX_CONCURRENT_RUNS": "5",
        "USAGE_STATS_MATOMO_RUNS_PER_DATABASE": "2",
        "USAGE_STATS_DEQUEUE_INTERVAL_SECONDS": "3",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        processed = process_config(UsageStatsRunCoordinator.config_type(), coordinator["config"])
    assert processed.success, processed.errors
    queue = UsageStatsRunCoordinator.from_config_value(None, processed.value)
    assert queue.get_run_queue_config().max_concurrent_runs == 5
    assert queue.get_run_queue_config().tag_concurrency_limits == [
        {"key": MATOMO_DB_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 2}
    ]
    assert config["run_retries"] == {"enabled": True, "max_retries": 2}
    assert config["concurrency"]["pools"]["default_limit"] == 1


def test_the_workspace_loads_the_code_server_by_env():
    config = load("workspace.yaml")
    assert validate_config(WORKSPACE_CONFIG_SCHEMA, config).success
    server = config["load_from"][0]["grpc_server"]
    assert server["location_name"] == "usage-stats"


def test_every_setting_named_in_deploy_is_read_by_the_code():
    known = known_settings()
    env_file = (DEPLOY / "production.env").read_text()
    named = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", env_file, re.M))
    configmap = yaml.safe_load((DEPLOY / "k8s" / "settings.yaml").read_text())
    named |= set(configmap["data"])
    assert named - known == set()
    # ... and every variable deploy/dagster.yaml needs is in production.env
    instance = re.findall(r"env: (USAGE_STATS_[A-Z0-9_]+)", (DEPLOY / "dagster.yaml").read_text())
    assert set(instance) <= named


# The Helm chart's rules (dagster/dagster 1.13, values.schema.json) for the parts we set.
IMAGE = {
    "type": "object",
    "required": ["repository", "pullPolicy"],
    "properties": {
        "repository": {"type": "string"},
        "tag": {"type": ["string", "integer", "null"]},
        "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]},
    },
}
NAMED = {"type": "array", "items": {"type": "object", "required": ["name"]}}
CHART_PARTS = {
    "type": "object",
    "required": ["dagster-user-deployments", "runLauncher", "postgresql", "dagsterDaemon"],
    "properties": {
        "dagster-user-deployments": {
            "type": "object",
            "required": ["enabled", "deployments"],
            "properties": {
                "deployments": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["name", "image", "port"],
                        "properties": {
                            "image": IMAGE,
                            "dagsterApiGrpcArgs": {"type": "array", "items": {"type": "string"}},
                            "port": {"type": "integer"},
                            "envConfigMaps": NAMED,
                            "envSecrets": NAMED,
                        },
                    },
                }
            },
        },
        "runLauncher": {
            "type": "object",
            "required": ["type", "config"],
            "properties": {
                "type": {"enum": ["CeleryK8sRunLauncher", "K8sRunLauncher", "CustomRunLauncher"]}
            },
        },
        "postgresql": {
            "type": "object",
            "required": [
                "enabled",
                "postgresqlHost",
                "postgresqlUsername",
                "postgresqlDatabase",
                "service",
            ],
        },
        "dagsterDaemon": {
            "type": "object",
            "properties": {
                "runCoordinator": {
                    "type": "object",
                    "required": ["enabled", "type", "config"],
                    "properties": {
                        "type": {"enum": ["QueuedRunCoordinator", "CustomRunCoordinator"]}
                    },
                },
                "runRetries": {
                    "type": "object",
                    "properties": {
                        "enabled": {"type": "boolean"},
                        "maxRetries": {"type": "integer"},
                    },
                },
            },
        },
    },
}


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_the_helm_values_are_valid_for_the_chart_and_for_dagster():
    values = load("helm/values.yaml")
    jsonschema.validate(values, CHART_PARTS)

    # The code server runs this repository's definitions.
    [deployment] = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert (REPO_ROOT / args[args.index("--python-file") + 1]).is_file()

    # The queue as the chart writes it into dagster.yaml (camelCase → snake_case) is valid for
    # Dagster's QueuedRunCoordinator and limits Matomo runs per database.
    queue = values["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    config = {snake(k): v for k, v in queue.items()}
    assert validate_config(QueuedRunCoordinator.config_type(), config).success
    assert {"key": MATOMO_DB_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in (
        config["tag_concurrency_limits"]
    )
    retries = values["dagsterDaemon"]["runRetries"]
    assert retries == {"enabled": True, "maxRetries": 2}
    instance = values["additionalInstanceConfig"]
    assert validate_config(dagster_instance_config_schema(), instance).success

    # Runs and steps get the same settings as the code server.
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["envConfigMaps"] == deployment["envConfigMaps"]
    assert launcher["envSecrets"] == deployment["envSecrets"]


@pytest.mark.parametrize("executor", ["multiprocess", "k8s"])
def test_the_kubernetes_executors_need_no_code_change(executor: str):
    configmap = yaml.safe_load((DEPLOY / "k8s" / "settings.yaml").read_text())["data"]
    settings = Settings.from_env({**configmap, "USAGE_STATS_EXECUTOR": executor})
    chosen = executor_for(settings)
    assert chosen.name == executor
    if executor == "k8s":
        assert chosen is k8s_job_executor
        # with no config of its own it takes the run launcher's image, config maps, secrets
        assert validate_config(chosen.config_schema.config_type, {}).success
