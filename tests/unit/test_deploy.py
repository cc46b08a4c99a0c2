"""deploy/: what can be checked without Docker or Kubernetes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry

from alerts.metrics import AlertMetrics
from ingest.api.metrics import ApiMetrics
from ingest.cli import parser
from ingest.pipeline.metrics import IngestMetrics
from ingest.platform import Settings

DEPLOY = Path(__file__).parent.parent.parent / "deploy"
DOCS = DEPLOY.parent / "docs"
SETTINGS = {f"TELEMON_{name.upper()}" for name in Settings.model_fields}
SERVED = {"/healthz", "/readyz", "/metrics"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in documents(path):
            out[f"{doc['kind']}/{doc['metadata']['name'] if 'metadata' in doc else path.stem}"] = (
                doc
            )
    return out


def telemon_variables(mapping: dict[str, Any]) -> set[str]:
    return {k for k in mapping if k.startswith("TELEMON_")}


def test_compose_runs_real_commands_with_real_settings() -> None:
    compose = documents(DEPLOY / "compose.yaml")[0]
    telemon = {n: s for n, s in compose["services"].items() if s.get("image") == "telemon:latest"}
    assert set(telemon) == {"migrate", "ingest", "api"}
    for name, service in telemon.items():
        parser().parse_args(service["command"])  # exits (fails the test) if not a command
        unknown = telemon_variables(service["environment"]) - SETTINGS
        assert not unknown, f"{name}: not settings: {unknown}"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert telemon["ingest"]["deploy"]["replicas"] >= 2
    # Each service logs in as its own: the owner migrates; ingest and the API own nothing.
    logins = {
        n: urlsplit(s["environment"]["TELEMON_DATABASE_URL"]).username for n, s in telemon.items()
    }
    assert logins == {
        "migrate": "telemon",
        "ingest": "telemon_ingest_login",
        "api": "telemon_api_login",
    }
    api = telemon["api"]
    assert not {v for v in api["environment"] if v.startswith("TELEMON_KAFKA")}
    assert "ports" not in api, "the API is reached through the TLS proxy only"
    proxy = compose["services"]["proxy"]
    assert proxy["ports"] == ["443:443"]
    assert (
        api["environment"]["TELEMON_API_TRUSTED_PROXIES"]
        == (proxy["networks"]["default"]["ipv4_address"])
    )
    assert "reverse_proxy api:8080" in (DEPLOY / "caddy" / "Caddyfile").read_text()
    assert "IN ROLE telemon_api" in (DEPLOY / "postgres" / "logins.sql").read_text()
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == (
        "broker,controller"
    )
    prometheus = documents(DEPLOY / "prometheus" / "prometheus.yml")[0]
    assert prometheus["scrape_configs"][0]["dns_sd_configs"][0]["names"] == ["ingest"]


def test_kubernetes_manifests() -> None:
    found = manifests()
    listed = documents(DEPLOY / "k8s" / "kustomization.yaml")[0]["resources"]
    assert all((DEPLOY / "k8s" / name).exists() for name in listed)
    config = found["ConfigMap/telemon"]["data"]
    kafka = found["ConfigMap/telemon-kafka"]["data"]
    secrets = {
        name: found[f"Secret/telemon-{name}"]["stringData"] for name in ("migrate", "ingest", "api")
    }
    for values in (config, kafka, *secrets.values()):
        assert not telemon_variables(values) - SETTINGS
    assert all("TELEMON_DATABASE_URL" in secret for secret in secrets.values())
    assert "TELEMON_DATABASE_URL" not in config
    logins = {n: urlsplit(s["TELEMON_DATABASE_URL"]).username for n, s in secrets.items()}
    assert logins == {
        "migrate": "telemon",
        "ingest": "telemon_ingest_login",
        "api": "telemon_api_login",
    }
    # Each pod's settings are complete and valid with what it is given, and no more.
    Settings(
        **{k.removeprefix("TELEMON_").lower(): v for k, v in (config | secrets["api"]).items()}
    )
    ingest = config | kafka | secrets["ingest"]
    Settings(**{k.removeprefix("TELEMON_").lower(): v for k, v in ingest.items()})

    deployment = found["Deployment/telemon-ingest"]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"] == labels
    assert found["PodDisruptionBudget/telemon-ingest"]["spec"]["selector"]["matchLabels"] == labels
    assert found["Service/telemon-ingest"]["spec"]["selector"] == labels
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["spec"]["containers"]
    parser().parse_args(container["args"])
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in SERVED
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    api = found["Deployment/telemon-api"]["spec"]["template"]
    assert found["Service/telemon-api"]["spec"]["selector"] == api["metadata"]["labels"]
    (api_container,) = api["spec"]["containers"]
    parser().parse_args(api_container["args"])
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    sources = {
        "api": api_container["envFrom"],
        "ingest": container["envFrom"],
        "migrate": found["Job/telemon-migrate"]["spec"]["template"]["spec"]["containers"][0][
            "envFrom"
        ],
    }
    given = {
        name: {next(iter(ref.values()))["name"] for ref in refs} for name, refs in sources.items()
    }
    assert given == {
        "api": {"telemon", "telemon-api"},  # no Kafka, no owner's login
        "ingest": {"telemon", "telemon-kafka", "telemon-ingest"},
        "migrate": {"telemon", "telemon-migrate"},
    }
    assert {p["name"] for p in api_container["ports"]} == {"http", "metrics"}
    service = found["Service/telemon-api"]
    assert (
        service["metadata"]["annotations"]["prometheus.io/port"]
        == config["TELEMON_API_METRICS_PORT"]
    )
    parser().parse_args(
        found["Job/telemon-migrate"]["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (Debian package prometheus)"
    config = DEPLOY / "prometheus" / "prometheus.yml"
    checked = subprocess.run(  # noqa: S603 - a fixed tool on our own file
        [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = {job["job_name"]: job for job in documents(config)[0]["scrape_configs"]}
    assert set(jobs) == {"telemon-ingest", "telemon-api"}
    # The API's metrics port, not the clinicians' (compose.yaml's TELEMON_API_METRICS_PORT).
    assert jobs["telemon-api"]["static_configs"][0]["targets"] == ["api:8001"]


def test_alerting_rules_pass_their_promtool_tests() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (Debian package prometheus)"
    tested = subprocess.run(  # noqa: S603 - a fixed tool on our own files
        [promtool, "test", "rules", "rules.test.yml"],
        cwd=DEPLOY / "prometheus",
        capture_output=True,
        text=True,
        check=False,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = documents(DEPLOY / "prometheus" / "rules.yml")[0]
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = (DEPLOY / "prometheus" / "rules.test.yml").read_text()
    assert all(f"alertname: {alert}" in tests for alert in alerts), "an alert without a test"


@pytest.mark.parametrize("line", ["USER 10001", 'CMD ["telemon", "check", "--live"]'])
def test_the_image_is_non_root_with_a_healthcheck(line: str) -> None:
    assert line in (DEPLOY / "Dockerfile").read_text()


def telemon_metrics() -> CollectorRegistry:
    """The metrics of telemon's processes (ingest and API) in one registry."""
    registry = CollectorRegistry()
    IngestMetrics(registry)
    AlertMetrics(registry)
    ApiMetrics(registry)
    return registry


def exposed_metric_names() -> set[str]:
    """Every series name telemon's processes can expose."""
    registry = telemon_metrics()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    return {
        family.name + suffix
        for family in registry.collect()
        for suffix in suffixes.get(family.type, [""])
    }


def test_dashboard_and_rules_query_real_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "telemon.json").read_text())
    expressions = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    rules = documents(DEPLOY / "prometheus" / "rules.yml")[0]
    expressions += [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    used = {name for e in expressions for name in re.findall(r"telemon_[a-z0-9_]+", e)}
    assert used, "no telemon metric queried"
    assert not used - exposed_metric_names(), "queried but never exposed"
    titles = {p["title"] for p in dashboard["panels"]}
    for wanted in ("Throughput", "Consumer lag by partition", "Rejected by reason"):
        assert wanted in titles
    assert {p["datasource"]["uid"] for p in dashboard["panels"]} == {"prometheus"}
    datasource = documents(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    assert datasource[0]["datasources"][0]["uid"] == "prometheus"


def test_every_metric_is_documented() -> None:
    documented = set(re.findall(r"`(telemon_[a-z0-9_]+)`", (DOCS / "metrics.md").read_text()))
    exposed = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in telemon_metrics().collect()
    }
    assert exposed - documented == set(), "exposed but not in docs/metrics.md"
    assert documented - exposed == set(), "in docs/metrics.md but not exposed"
