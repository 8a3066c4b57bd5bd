"""The production configuration files (deploy/) checked without servers: what Dagster itself
will read is validated with Dagster's own config schemas, the Helm values' parts with the
chart's rules for them, and every setting they name must be one the code reads."""

from __future__ import annotations

import json
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


# --- deploy/compose.yaml and deploy/Dockerfile (no docker here: checked as files) ------------

OFFICIAL_IMAGES = {
    "postgres": "postgres:",
    "redis": "redis:",
    "opensearch-node1": "opensearchproject/opensearch:",
    "opensearch-node2": "opensearchproject/opensearch:",
    "minio": "minio/minio:",
}
PROJECT_PROCESSES = {  # README's process table → compose service
    "code server": "code-server",
    "daemon": "dagster-daemon",
    "webserver": "webserver",
    "Celery workers": "worker",
    "web services": "web",
}


def compose() -> dict:
    return load("compose.yaml")


def interpolated(value: str) -> str:
    """A compose value with `${NAME:-default}` as compose fills it when NAME is unset."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))


def compose_env(service: str) -> dict[str, str]:
    return {k: interpolated(v) for k, v in compose()["services"][service]["environment"].items()}


def readme_commands() -> dict[str, str]:
    """The process table of README: Production: process name → its command."""
    section = (REPO_ROOT / "README.md").read_text().split("## Production", 1)[1]
    rows = re.findall(r"^\| ([^|]+?) \| `([^`]+)` \|", section, re.M)
    return dict(rows)


def test_compose_has_the_production_topology_on_official_images():
    services = compose()["services"]
    for name, image in OFFICIAL_IMAGES.items():
        assert services[name]["image"].startswith(image), name
    build = services["migrate"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    for name in ("migrate", "code-server", "daemon", "webserver", "worker", "web"):
        assert services[name]["image"] == services["migrate"]["image"], name
    assert services["worker"]["deploy"]["replicas"] == 2
    # The Dagster instance's schema is created once, by `migrate`, before any process of the
    # instance starts (several creating it on a new database at once collide).
    assert "dagster instance migrate" in " ".join(services["migrate"]["command"])
    for name in ("code-server", "daemon", "webserver", "worker"):
        needs = services[name]["depends_on"]["migrate"]
        assert needs == {"condition": "service_completed_successfully"}, name
    # Two OpenSearch nodes that find each other, with the security plugin off (plain http).
    for node in ("opensearch-node1", "opensearch-node2"):
        env = services[node]["environment"]
        assert env["node.name"] == node
        assert set(env["discovery.seed_hosts"].split(",")) == {
            "opensearch-node1",
            "opensearch-node2",
        }
        assert env["DISABLE_SECURITY_PLUGIN"] == "true"


def test_compose_settings_are_production_env_with_the_compose_servers():
    services = compose()["services"]
    named = set(re.findall(r"^([A-Z][A-Z0-9_]+)=", (DEPLOY / "production.env").read_text(), re.M))
    env = compose_env("code-server")
    for name in ("migrate", "daemon", "webserver", "worker", "web"):
        assert compose_env(name) == env, name
    assert named <= set(env), named - set(env)
    assert set(env) - known_settings() == set()
    settings = Settings.from_env(env)
    assert settings.executor == "celery" and settings.stats_store == "opensearch"
    assert settings.opensearch_replicas == 1
    # Every server a setting names is a service of the file.
    hosts = {
        re.match(r"[a-z0-9+]+://(?:[^@/]+@)?([^:/]+)", url).group(1)
        for url in [
            *settings.opensearch_url.split(","),
            env["USAGE_STATS_CELERY_BROKER_URL"],
            env["USAGE_STATS_CELERY_BACKEND_URL"],
            env["USAGE_STATS_DAGSTER_POSTGRES_URL"],
            settings.admin_db_url,
            settings.s3_endpoint_url,
        ]
    } | {env["USAGE_STATS_CODE_SERVER_HOST"]}
    assert hosts <= set(services), hosts - set(services)
    # The bucket the one-shot creates is the lake's and the warehouse's.
    bucket = services["minio-bucket"]["entrypoint"][-1].rsplit("s3/", 1)[1]
    assert {settings.lake_url.split("/")[2], settings.warehouse_url.split("/")[2]} == {bucket}


def test_compose_and_dockerfile_commands_are_the_readme_table():
    services = compose()["services"]
    table = readme_commands()
    env = compose_env("code-server")
    for process, service in PROJECT_PROCESSES.items():
        service = "daemon" if service == "dagster-daemon" else service
        documented = table[process]
        for name, value in env.items():
            documented = documented.replace(f"${name}", value)
        # `<name>`, `<cores>`: whatever the deployment chooses
        pattern = re.escape(documented).replace(r"\ ", " ")
        pattern = re.sub(r"<[a-z]+>", r"\\S+", pattern.replace(r"\<", "<").replace(r"\>", ">"))
        assert re.fullmatch(pattern, " ".join(services[service]["command"])), process
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1))
    assert cmd == services["code-server"]["command"]
    # The image holds every package of pyproject and the code location's files.
    for package in ("usage_stats", "assets", "resources", "sensors"):
        assert re.search(rf"^COPY {package} {package}$", dockerfile, re.M), package
    assert "definitions.py" in dockerfile and "COPY deploy deploy" in dockerfile
    home = re.search(r"DAGSTER_HOME=(\S+)", dockerfile).group(1)
    assert home == env["DAGSTER_HOME"]
