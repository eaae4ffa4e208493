"""deploy/k8s checked offline against the Kubernetes OpenAPI schemas (kubernetes-validate, the
JSON schemas kubeconform uses, in strict mode: unknown or misspelled fields fail, so do wrong
types and missing required fields), plus what a schema cannot see: resource quantities, the
model volume the config's example points into, and the metric chain behind the HPA
(server -> Prometheus series -> prometheus-adapter rule -> HPA metric)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from kubernetes_validate.utils import ValidationError, validate

from server.config import ServerConfig

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
# Not Kubernetes API objects: kustomize's own file and a Helm values file.
NOT_OBJECTS = {"kustomization.yaml", "prometheus-adapter-values.yaml"}
# The oldest and newest Kubernetes the package has schemas for (policy/v1 PDBs and
# autoscaling/v2 HPAs exist in both).
VERSIONS = ("1.25", "1.37")
KINDS = {"ConfigMap", "PersistentVolumeClaim", "Deployment", "Service",
         "HorizontalPodAutoscaler", "PodDisruptionBudget"}
# resource.Quantity: a signed decimal with a binary-SI, decimal-SI or exponent suffix
QUANTITY = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$")


def objects() -> dict[str, dict]:
    """kind -> the object, for every manifest of deploy/k8s that is an API object."""
    found = {}
    for f in sorted(K8S.glob("*.yaml")):
        if f.name not in NOT_OBJECTS:
            for doc in yaml.safe_load_all(f.read_text()):
                assert doc["kind"] not in found, f
                found[doc["kind"]] = doc
    return found


def schema_errors(obj: dict, version: str = VERSIONS[-1]) -> str | None:
    try:
        validate(obj, version, strict=True)
    except ValidationError as e:
        return f"{'.'.join(map(str, e.path))}: {e.message}"
    return None


def quantities(node: object, key: str = "") -> list[tuple[str, object]]:
    """Every (key, value) that Kubernetes parses as a resource.Quantity."""
    out: list[tuple[str, object]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("limits", "requests") and key == "resources" and isinstance(v, dict):
                out += [(f"{k}.{name}", q) for name, q in v.items()]
            elif k == "sizeLimit":
                out.append((k, v))
            else:
                out += quantities(v, k)
    elif isinstance(node, list):
        for item in node:
            out += quantities(item, key)
    return out


def test_every_k8s_manifest_is_listed_and_an_expected_kind():
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kust) == {"apiVersion", "kind", "resources"}
    listed = set(kust["resources"])
    assert listed == {f.name for f in K8S.glob("*.yaml")} - NOT_OBJECTS
    assert set(objects()) == KINDS


@pytest.mark.parametrize("version", VERSIONS)
def test_k8s_manifests_validate_strictly_against_the_kubernetes_schemas(version):
    for kind, obj in objects().items():
        assert schema_errors(obj, version) is None, (kind, schema_errors(obj, version))


def test_k8s_resource_quantities_parse():
    found = [q for obj in objects().values() for q in quantities(obj)]
    assert len(found) >= 6  # GPU, memory and CPU of the container, /dev/shm, the volume
    for key, value in found:
        assert isinstance(value, int) or QUANTITY.match(str(value)), (key, value)


def _container(d: dict) -> dict:
    return d["spec"]["template"]["spec"]["containers"][0]


BROKEN = {
    "misspelled field": ("Deployment", lambda d: _container(d).__setitem__(
        "readinesProbe", _container(d).pop("readinessProbe")), "'readinesProbe' was unexpected"),
    "unknown top-level spec field": ("Service", lambda d: d["spec"].__setitem__("replicas", 2),
                                     "'replicas' was unexpected"),
    "string for an int": ("Deployment", lambda d: _container(d)["ports"][0].__setitem__(
        "containerPort", "8000"), "'8000' is not of type 'integer'"),
    "string for an int (HPA)": ("HorizontalPodAutoscaler",
                                lambda d: d["spec"].__setitem__("maxReplicas", "4"),
                                "'4' is not of type 'integer'"),
    "missing required field": ("Deployment", lambda d: _container(d).pop("name"),
                               "'name' is a required property"),
    "list where a map belongs": ("PersistentVolumeClaim",
                                 lambda d: d["spec"].__setitem__("resources", ["200Gi"]),
                                 "is not of type 'object'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_schema_check_rejects_a_broken_manifest(case):
    kind, breaks, message = BROKEN[case]
    obj = copy.deepcopy(objects()[kind])
    assert schema_errors(obj) is None
    breaks(obj)
    err = schema_errors(obj)
    assert err is not None and message in err, err


def test_the_quantity_check_rejects_a_bad_quantity():
    assert not QUANTITY.match("32 GB") and not QUANTITY.match("lots")
    assert all(QUANTITY.match(q) for q in ("1", "4", "500m", "32Gi", "1.5G", "2e3"))


def test_model_volume_is_the_claim_mounted_read_only_where_the_config_example_points():
    objs = objects()
    pvc, dep = objs["PersistentVolumeClaim"], objs["Deployment"]
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    pod = dep["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if "persistentVolumeClaim" in v)
    assert volume["persistentVolumeClaim"] == {"claimName": pvc["metadata"]["name"],
                                               "readOnly": True}
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == volume["name"])
    assert mount["readOnly"] is True
    # the ConfigMap serves the image's SmolLM2 as is (tests/deploy/test_deploy.py) and carries
    # a commented example for a model on the volume: uncommented over the default, it is a
    # valid config whose model and value models all lie on the volume
    text = objs["ConfigMap"]["data"]["tilt.yaml"]
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if "tilt-models" in ln) + 1
    example_lines = [ln.strip()[2:] for ln in lines[start:]  # "# key: ..." lines, not prose
                     if re.match(r"#\s+[\w-]+:( |$)", ln.strip())]
    example = yaml.safe_load("\n".join(example_lines))
    cfg = ServerConfig(**{**yaml.safe_load(text), **example})
    assert set(example) >= {"model", "value_models", "defaults"}
    for path in (cfg.model, *cfg.value_models.values()):
        assert path.startswith(mount["mountPath"] + "/"), path
    assert cfg.defaults.value_model in cfg.value_models
    assert not yaml.safe_load(text)["model"].startswith(mount["mountPath"])


def test_several_replicas_spread_over_nodes_and_drain_one_at_a_time():
    objs = objects()
    dep, pdb, hpa = objs["Deployment"], objs["PodDisruptionBudget"], objs["HorizontalPodAutoscaler"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert "replicas" not in dep["spec"]  # the HPA owns it
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"] == labels
    assert pdb["spec"]["maxUnavailable"] == 1
    (spread,) = dep["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert spread["labelSelector"]["matchLabels"] == labels
    assert spread["topologyKey"] == "kubernetes.io/hostname"
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # GPUs decide, not the spread


def test_hpa_metric_comes_from_a_series_an_idle_server_exports():
    """The chain the HPA needs: an idle pod's /metrics has a tilt:num_requests_waiting sample
    (0, not absent: a pod with no series has no value for the HPA), Prometheus scrapes the
    pod's port and path (annotations), the adapter rule selects that series by pod and
    namespace and renames it to the HPA's metric name."""
    from fastapi.testclient import TestClient

    from server.app import create_app

    objs = objects()
    hpa, dep = objs["HorizontalPodAutoscaler"], objs["Deployment"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods" and metric["pods"]["target"]["type"] == "AverageValue"
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    name = metric["pods"]["metric"]["name"]
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())
    (rule,) = [r for r in adapter["rules"]["custom"] if r["name"]["as"] == name]
    series = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)\{(.*)\}$", rule["seriesQuery"].strip("'"))
    assert re.fullmatch(rule["name"]["matches"], series.group(1))
    assert {"namespace", "pod"} <= set(re.findall(r"(\w+)!=\"\"", series.group(2)))
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"},
                                              "pod": {"resource": "pod"}}
    assert "<<.Series>>{<<.LabelMatchers>>}" in rule["metricsQuery"]
    assert "by (<<.GroupBy>>)" in rule["metricsQuery"]

    ann = dep["spec"]["template"]["metadata"]["annotations"]
    cfg = ServerConfig(**yaml.safe_load(objs["ConfigMap"]["data"]["tilt.yaml"]))
    assert ann["prometheus.io/scrape"] == "true" and ann["prometheus.io/port"] == str(cfg.port)
    assert {p["containerPort"] for p in _container(dep)["ports"]} == {cfg.port}
    app = create_app(ServerConfig(model="toy:vocab=8,len=4,seed=0", engine="toy"))
    with TestClient(app) as client:
        body = client.get(ann["prometheus.io/path"]).text
    samples = re.findall(rf"^{re.escape(series.group(1))}\{{[^}}]*\}} (\S+)$", body, re.M)
    assert samples == ["0.0"], body
