"""Static checks of the deployment files: docker-compose.yml, deploy/ (Dockerfile, Kubernetes,
Prometheus, Grafana). Nothing here runs Docker or a cluster; every check compares the files
with the code they configure (Config.from_env, the CLI parser, METRIC_NAMES, the worker's
web views) so that a rename on either side fails here rather than in production.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.cli import build_parser
from pipeline.config import Config, WorkerConfig
from pipeline.kinds import KINDS
from pipeline.metrics import METRIC_NAMES
from tests.conftest import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s" / "base"
COMPOSE = REPO / "docker-compose.yml"
RUNBOOK = REPO / "docs" / "operations.md"
PIPELINE_IMAGE = "event-pipeline"
# Metrics that come from elsewhere: Prometheus itself and kube-state-metrics.
EXTERNAL_METRICS = {"up", "kube_pod_container_status_restarts_total"}
REQUIRED_ALERTS = {
    "PipelineConsumerLagGrowing", "PipelineDeadLettersHigh", "PipelineFlushStalled",
    "PipelinePartitionsNotAhead", "PipelineMaintenanceStale", "PipelineWorkerRestarting",
    "PipelineDatabaseUnavailable", "PipelineOffsetGap", "PipelinePartitionStopped",
}  # fmt: skip


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose() -> dict[str, Any]:
    data: dict[str, Any] = load_yaml(COMPOSE)
    return data


def k8s_documents() -> list[dict[str, Any]]:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / resource).read_text()) if d)
    return docs


def k8s(kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in k8s_documents() if d["kind"] == kind]
    found = [d for d in found if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pipeline_services() -> dict[str, dict[str, Any]]:
    """Compose services that run the pipeline image (built from deploy/Dockerfile)."""
    services = compose()["services"]
    return {
        name: svc
        for name, svc in services.items()
        if str(svc.get("image", "")).startswith(PIPELINE_IMAGE)
        or (isinstance(svc.get("build"), dict) and svc["build"].get("dockerfile"))
    }


def pod_containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in k8s_documents():
        if doc["kind"] in ("Deployment", "Job"):
            for container in doc["spec"]["template"]["spec"]["containers"]:
                yield doc["metadata"]["name"], container


def interpolate(value: str) -> str:
    """Compose's ${VAR:-default} / ${VAR} with the variables unset."""
    return re.sub(r"\$\{\w+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)


class _RecordingEnv(Mapping[str, str]):
    """An environment that remembers every name looked up in it."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values
        self.seen: set[str] = set()

    def __getitem__(self, key: str) -> str:
        self.seen.add(key)
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


def config_variables() -> set[str]:
    """Every environment variable Config.from_env reads (database via URL and via PG*)."""
    names: set[str] = set()
    for env in (
        {"DATABASE_URL": "postgresql://u@h/d", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"},
        {"PGHOST": "h", "PGDATABASE": "d", "KAFKA_BOOTSTRAP_SERVERS": "k:9092"},
    ):
        recorder = _RecordingEnv(env)
        Config.from_env(recorder)
        names |= recorder.seen
    return names


def configmap_env() -> dict[str, str]:
    return {k: str(v) for k, v in k8s("ConfigMap", "pipeline-config")["data"].items()}


def service_env(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in (compose()["services"][name].get("environment") or {}).items()}


def test_config_variable_recorder_sees_everything() -> None:
    names = config_variables()
    assert {"DATABASE_URL", "PGPASSWORD", "KAFKA_SASL_PASSWORD", "PIPELINE_WEB_PORT"} <= names
    assert "PIPELINE_SHUTDOWN_TIMEOUT_S" in names and "DATABASE_POOL_MAX_SIZE" in names


def test_every_yaml_file_parses() -> None:
    files = [COMPOSE, *DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")]
    assert len(files) >= 10
    for path in files:
        assert list(yaml.safe_load_all(path.read_text())), path
    json.loads((DEPLOY / "grafana" / "dashboards" / "pipeline.json").read_text())


def test_referenced_files_exist() -> None:
    for name, svc in compose()["services"].items():
        build = svc.get("build")
        if isinstance(build, dict):
            assert (REPO / build["context"] / build["dockerfile"]).is_file(), name
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).exists(), f"{name}: {source}"
    for resource in load_yaml(K8S / "kustomization.yaml")["resources"]:
        assert (K8S / resource).is_file(), resource


def mounts(service: str) -> dict[str, Path]:
    """Container path -> host path of a compose service's bind mounts."""
    result = {}
    for volume in compose()["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            result[target] = REPO / source
    return result


def test_prometheus_and_grafana_files_are_mounted_where_configured() -> None:
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")
    prom_mounts = mounts("prometheus")
    for rule_file in prometheus["rule_files"]:
        assert prom_mounts[rule_file].is_file(), rule_file
    grafana = mounts("grafana")
    provisioning = grafana["/etc/grafana/provisioning"]
    provider = load_yaml(provisioning / "dashboards" / "pipeline.yml")["providers"][0]
    assert (grafana[provider["options"]["path"]] / "pipeline.json").is_file()
    datasource = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"][0]
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "pipeline.json").read_text())
    uids = {p["datasource"]["uid"] for p in dashboard["panels"] if "datasource" in p}
    assert uids == {datasource["uid"]}
    assert datasource["url"].split("//")[1].split(":")[0] in compose()["services"]


def test_every_environment_variable_is_one_the_pipeline_reads() -> None:
    known = config_variables()
    sources: dict[str, set[str]] = {"ConfigMap": set(configmap_env())}
    for name in pipeline_services():
        sources[f"compose {name}"] = set(service_env(name))
    for owner, container in pod_containers():
        sources[f"{owner}/{container['name']}"] = {e["name"] for e in container.get("env", [])}
    for where, names in sources.items():
        assert names, where
        assert names <= known, f"{where} sets variables nothing reads: {sorted(names - known)}"


def test_settings_are_valid_configurations() -> None:
    secret = {"DATABASE_URL": "postgresql://u:p@db/events"}
    config = Config.from_env({**configmap_env(), **secret})
    assert config.kafka is not None and config.database is not None
    for name in pipeline_services():
        Config.from_env(service_env(name))  # raises ConfigError for a bad value


def _subcommand(argv: list[str]) -> str:
    """The first positional argument, skipping the global ``--log-level LEVEL``."""
    skip = False
    for arg in argv:
        if skip or arg.startswith("-"):
            skip = arg == "--log-level"
            continue
        return arg
    raise AssertionError(f"no subcommand in {argv}")


def parse_command(argv: list[str]) -> argparse.Namespace:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    command = _subcommand(argv)
    if command not in commands and (REPO / "pipeline" / "cli" / f"{command}.py").exists():
        pytest.xfail(f"`pipeline {command}` is being written and not registered yet")
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"`pipeline {' '.join(argv)}` is not a valid command") from exc


def commands_used() -> list[tuple[str, list[str]]]:
    used = []
    for name, svc in pipeline_services().items():
        assert "entrypoint" not in svc, f"{name} must keep the image's `pipeline` entry point"
        used.append((f"compose {name}", [interpolate(str(a)) for a in svc["command"]]))
    for owner, container in pod_containers():
        assert "command" not in container, f"{owner} must keep the image's entry point"
        used.append((owner, [str(a) for a in container["args"]]))
    return used


@pytest.mark.parametrize(("where", "argv"), commands_used())
def test_every_pipeline_command_exists(where: str, argv: list[str]) -> None:
    args = parse_command(argv)
    assert callable(args.handler), where


def test_worker_and_migrate_commands_are_the_expected_ones() -> None:
    used = dict(commands_used())
    assert parse_command(used["pipeline-worker"]).command == "worker"
    assert parse_command(used["pipeline-migrate"]).migrate_command == "up"
    assert parse_command(used["compose worker"]).command == "worker"
    assert _subcommand(used["compose producer"]) == "produce"


_GROUPING = r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)"
_KEYWORDS = {"and", "or", "unless", "by", "without", "offset", "bool", "on", "ignoring"}


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (not functions, labels, keywords or durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(_GROUPING, " ", text)
    text = re.sub(r"\b\d+(?:\.\d+)?(?:ms|[smhdwy]|e\d+)?\b", " ", text)  # numbers, durations
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[match.end() :].lstrip().startswith("(") or match.group(0) in _KEYWORDS:
            continue
        names.add(match.group(0))
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'sum by (le) (rate(a_bucket{x="y", z=~"$t"}[$__rate_interval])) > 1 '
        "and on (instance) max by (instance) (b) unless time() - c_total > 3 * 3600 "
        "or d unless d offset 15m"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c_total", "d"}


def known_metric(name: str) -> bool:
    if name in METRIC_NAMES or name in EXTERNAL_METRICS:
        return True
    base = re.sub(r"_(bucket|count|sum)$", "", name)
    return base in METRIC_NAMES


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(DEPLOY / "prometheus" / "alerts.yml")["groups"]
    return [rule for group in groups for rule in group["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "pipeline.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"]]
    return exprs


def test_alerts_and_dashboard_use_only_defined_metrics() -> None:
    exprs = [rule["expr"] for rule in alert_rules()] + dashboard_exprs()
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(re.sub(r"label_values\((\w+),.*\)", r"\1", expr))
        assert names, f"no metric in {expr!r}"
        used |= names
    unknown = sorted(name for name in used if not known_metric(name))
    assert not unknown, f"not in pipeline.metrics.METRIC_NAMES: {unknown}"


def github_anchors(markdown: str) -> set[str]:
    anchors = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_every_alert_is_documented_in_the_runbook() -> None:
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= REQUIRED_ALERTS
    anchors = github_anchors(RUNBOOK.read_text())
    for rule in rules:
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], rule["alert"]
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page.endswith("docs/operations.md") and anchor in anchors, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_scaling_matches_the_partition_count() -> None:
    init = service_env("kafka-init")
    scaled = k8s("ScaledObject")
    assert scaled["spec"]["maxReplicaCount"] == int(init["TOPIC_PARTITIONS"])
    assert (
        scaled["spec"]["scaleTargetRef"]["name"]
        == k8s("Deployment", "pipeline-worker")["metadata"]["name"]
    )
    assert "replicas" not in k8s("Deployment", "pipeline-worker")["spec"], (
        "KEDA owns the replica count"
    )
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "kafka"
    cm = configmap_env()
    assert trigger["metadata"]["bootstrapServers"] == cm["KAFKA_BOOTSTRAP_SERVERS"]
    assert trigger["metadata"]["consumerGroup"] == cm["PIPELINE_GROUP_ID"]
    assert int(trigger["metadata"]["lagThreshold"]) > 0
    script = "\n".join(compose()["services"]["kafka-init"]["command"])
    settings = [spec.topic_setting for spec in KINDS] + ["PIPELINE_TOPIC_DEAD_LETTERS"]
    for variable in settings:
        assert f"$${variable}" in script
        assert init[variable] == cm[variable]


def served_paths() -> set[str]:
    source = (REPO / "pipeline" / "worker" / "app.py").read_text()
    return set(re.findall(r"""app\.page\(["'](/[\w/]*)["']\)""", source))


def test_probes_and_scrapes_point_at_the_worker_web_views() -> None:
    paths = served_paths()
    assert {"/metrics", "/healthz", "/readyz"} <= paths
    config = Config.from_env(configmap_env())
    container = k8s("Deployment", "pipeline-worker")["spec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["web"] == config.worker.web_port
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in (ports["web"], "web"), probe
    service = k8s("Service", "pipeline-worker-metrics")
    assert service["spec"]["ports"][0]["targetPort"] in (ports["web"], "web")
    assert service["spec"]["publishNotReadyAddresses"] is True
    # compose: Prometheus finds the scaled worker service by DNS, on the worker's port.
    worker = compose()["services"]["worker"]
    assert "container_name" not in worker and "ports" not in worker
    job = next(
        j
        for j in load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"]
        if "dns_sd_configs" in j
    )
    assert job["metrics_path"] in paths
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["worker"]
    assert sd["port"] == int(service_env("worker")["PIPELINE_WEB_PORT"])


def seconds(duration: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)([smh])", duration))


def test_grace_periods_outlast_the_shutdown_timeout() -> None:
    config = Config.from_env(configmap_env())
    pod = k8s("Deployment", "pipeline-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > config.worker.shutdown_timeout_s
    worker = compose()["services"]["worker"]
    shutdown = Config.from_env(service_env("worker")).worker.shutdown_timeout_s
    assert seconds(worker["stop_grace_period"]) > shutdown


def test_pods_run_as_non_root_on_a_read_only_root_filesystem() -> None:
    for doc in k8s_documents():
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        writable = {v["name"] for v in pod.get("volumes", []) if "emptyDir" in v}
        for container in pod["containers"]:
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert container["resources"]["requests"] and container["resources"]["limits"]
            mounted = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            if "workingDir" in container:
                assert mounted.get(container["workingDir"]) in writable
    assert not [d for d in k8s_documents() if d["kind"] == "Secret"], "no secrets in git"


def test_secrets_are_referenced_and_documented() -> None:
    refs = set()
    for _, container in pod_containers():
        for env in container.get("env", []):
            ref = env.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["name"] == "pipeline-secrets"
                refs.add(ref["key"])
    assert {"DATABASE_URL", "KAFKA_SASL_PASSWORD"} <= refs
    runbook = RUNBOOK.read_text()
    assert "pipeline-secrets" in runbook and all(key in runbook for key in refs)


def test_dockerfile_is_slim_non_root_with_pipeline_entry_point() -> None:
    lines = [
        line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines() if line.strip()
    ]
    final_stage = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    assert final_stage[0].startswith("FROM python:3.11-slim")
    user = next(line.split()[1] for line in final_stage if line.startswith("USER "))
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0
    assert 'ENTRYPOINT ["pipeline"]' in final_stage
    expose = next(line for line in final_stage if line.startswith("EXPOSE "))
    assert str(WorkerConfig().web_port) in expose.split()
    healthcheck = "\n".join(final_stage[final_stage.index(
        next(line for line in final_stage if line.startswith("HEALTHCHECK"))
    ):])  # fmt: skip
    assert "/healthz" in healthcheck and "PIPELINE_WEB_PORT" in healthcheck
