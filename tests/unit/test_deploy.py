"""The deployment files at the repository root (systemd/, k8s/, the Dockerfile and its
.dockerignore), checked against the Kubernetes API schemas, systemd, and what routerd itself
knows: its settings, its HTTP endpoint, its shutdown bound and the files its route config is
built from.

No cluster, container runtime or network. Kustomizations are rendered here by a small
reader of the few kustomize features they use; where kubectl is installed its own
`kubectl kustomize` must render the same.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from copy import deepcopy
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest
import yaml

from routerd.amqp.link import CLOSE_TIMEOUT
from routerd.config.loader import load
from routerd.config.model import RouteTable
from routerd.observe import Metrics
from routerd.observe import systemd as systemd_notify
from routerd.reload import Reloader, TableHolder, watch_dirs
from routerd.settings import ENV_VARS, Settings
from tests.unit import operator_crds

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "k8s"
SYSTEMD = ROOT / "systemd"
DOCKERFILE = ROOT / "Dockerfile"
# Docker reads the ignore file at the build context's root, and the context is ROOT.
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
SHIPPED_CONFIG = ROOT / "config" / "routes.yaml"
# The default kustomization and the KEDA variant: the two things ops apply.
ENTRY_POINTS = {"hpa": KUBE, "keda": KUBE / "keda"}
# The Prometheus Operator's objects, applied on their own (they need its CRDs).
MONITORING = KUBE / "monitoring"
CONFIGMAP_SCRIPT = ROOT / "scripts" / "k8s_configmaps.py"
# The oldest Kubernetes the manifests promise to work on, and the newest the package knows.
KUBERNETES_VERSIONS = ("1.30", "latest")
# After the shutdown timeout and the connection close, the task group still has to end.
TEARDOWN_MARGIN = 5.0
# ROUTERD_AMQP_URL_FILE: the broker URL read from a file (a mounted Secret). It is
# routerd's setting from the security work (routerd/settings.py on that branch); the
# manifests use it already, and the test names it until that branch is merged.
AMQP_URL_FILE = "ROUTERD_AMQP_URL_FILE"
KNOWN_VARS = frozenset(ENV_VARS.values()) | {AMQP_URL_FILE}


# --- rendering ---------------------------------------------------------------------------


def render(folder: Path) -> list[dict[str, Any]]:
    """The resources a kustomization yields: resources (files, folders) and ConfigMaps from
    configMapGenerator `files`. Anything else kustomize could do fails here, loudly."""
    spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
    allowed = {"apiVersion", "kind", "resources", "configMapGenerator", "generatorOptions"}
    assert set(spec) <= allowed, f"{folder}: teach render() {set(spec) - allowed}"
    out: list[dict[str, Any]] = []
    for entry in spec.get("resources", []):
        path = folder / entry
        if path.is_dir():
            out += render(path)
        else:
            out += [d for d in yaml.safe_load_all(path.read_text()) if d]
    options = spec.get("generatorOptions", {})
    for gen in spec.get("configMapGenerator", []):
        assert set(gen) == {"name", "files"}, f"{folder}: teach render() {set(gen)}"
        metadata = {"name": gen["name"], "labels": options.get("labels", {})}
        data = {Path(f).name: (folder / f).read_text() for f in gen["files"]}
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return out


def configmap_script() -> Any:
    """scripts/k8s_configmaps.py as a module (scripts/ is no package)."""
    spec = importlib.util.spec_from_file_location("k8s_configmaps", CONFIGMAP_SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return render(KUBE)


@pytest.fixture(scope="module")
def pod(docs: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = one(docs, "Deployment")["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (routerd,) = pod["containers"]
    return dict(routerd)


def plain_env(container: Mapping[str, Any]) -> dict[str, str]:
    """The container's literal environment; values from Secrets are left out."""
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def settings_of(container: Mapping[str, Any]) -> Settings:
    env = plain_env(container)
    if AMQP_URL_FILE in env:
        # routerd reads the mounted Secret's file at start; it exists only in the pod.
        stand_in = Path(tempfile.mkdtemp()) / "amqp-url"
        stand_in.write_text("amqp://routerd:secret@rabbitmq:5672/\n")
        env[AMQP_URL_FILE] = str(stand_in)
    return Settings.from_sources({}, env)


# --- Kubernetes --------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_manifests_validate_against_kubernetes_schemas(entry: str, version: str) -> None:
    # Imported here so that, without it, this test fails and the others still run.
    import kubernetes_validate  # the dev dependency kubernetes-validate

    if version == "latest":
        version = kubernetes_validate.latest_version()
    checked, problems = [], []
    for doc in render(ENTRY_POINTS[entry]):
        if not builtin(doc):
            continue  # a CRD's: test_custom_resources_match_their_crds checks it
        try:
            # strict: unknown fields (a misspelt key) are errors, as `kubectl apply` makes them.
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            problems.append(f"{doc['kind']}/{doc['metadata']['name']}: {where}: {exc.message}")
        checked.append(doc["kind"])
    assert not problems, "\n".join(problems)
    assert {"Deployment", "ConfigMap", "Service", "PodDisruptionBudget"} <= set(checked)


def test_every_manifest_file_is_rendered_somewhere() -> None:
    used = set()
    for folder in {p.parent for p in KUBE.rglob("kustomization.yaml")}:
        spec = yaml.safe_load((folder / "kustomization.yaml").read_text())
        used |= {(folder / r).resolve() for r in spec.get("resources", [])}
    manifests = {p.resolve() for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert manifests - used == set(), "manifests no kustomization applies (so none validated)"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("entry", [*sorted(ENTRY_POINTS), "monitoring"])
def test_kubectl_kustomize_renders_the_same(entry: str) -> None:
    folder = ENTRY_POINTS.get(entry, MONITORING)
    # No --load-restrictor: `kubectl apply -k` cannot pass one, so none may be needed.
    cmd = ["kubectl", "kustomize"]
    result = subprocess.run([*cmd, str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    theirs = [d for d in yaml.safe_load_all(result.stdout) if d]
    mine = render(folder)

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(map(key, theirs)) == sorted(map(key, mine))
    for doc in theirs:
        (twin,) = [d for d in mine if key(d) == key(doc)]
        assert doc == twin, key(doc)


def test_configmaps_are_mounted_whole_folders(
    docs: list[dict[str, Any]], pod: dict[str, Any]
) -> None:
    generated = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    volumes = {v["name"]: v["configMap"]["name"] for v in pod["volumes"] if "configMap" in v}
    assert set(volumes.values()) == generated
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    for volume in volumes:
        # subPath mounts are copies that never see a ConfigMap update.
        assert "subPath" not in mounts[volume] and "subPathExpr" not in mounts[volume]
        assert mounts[volume]["readOnly"] is True


def test_configmaps_are_generated_from_config_and_schemas() -> None:
    # The ConfigMaps are a generated file (kustomize may not read outside k8s/): it must be
    # what the script makes of today's config/ and schemas/.
    script = configmap_script()
    assert (KUBE / "base" / "configmaps.yaml").read_text() == script.render(), (
        "k8s/base/configmaps.yaml is out of date: run .venv/bin/python scripts/k8s_configmaps.py"
    )
    maps = {d["metadata"]["name"]: d["data"] for d in render(KUBE) if d["kind"] == "ConfigMap"}
    shipped = {
        (folder / key).resolve() for name, folder in script.FOLDERS.items() for key in maps[name]
    }
    # Every file the shipped route table is built from, and every file of schemas/.
    assert {Path(f).resolve() for f in load(SHIPPED_CONFIG).files} <= shipped
    assert {p.resolve() for p in (ROOT / "schemas").iterdir() if p.is_file()} <= shipped
    # The keys become file names in one mount each: no two files may share a name.
    assert sum(map(len, maps.values())) == len(shipped)


def test_configmap_script_check_mode() -> None:
    result = subprocess.run(
        [sys.executable, str(CONFIGMAP_SCRIPT), "--check"], capture_output=True, text=True
    )
    assert (result.returncode, result.stdout) == (0, "")


def mount_layout(root: Path, docs: list[dict[str, Any]], pod: dict[str, Any]) -> dict[str, Path]:
    """Lay the ConfigMaps out under `root` at the Deployment's mount paths, as kubelet does;
    returns the mount folder of each ConfigMap."""
    (container,) = pod["containers"]
    by_volume = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    folders = {}
    for volume in pod["volumes"]:
        if "configMap" in volume:
            name = volume["configMap"]["name"]
            folders[name] = root / by_volume[volume["name"]].lstrip("/")
            kubelet_publish(folders[name], maps[name])
    return folders


def kubelet_publish(volume: Path, files: Mapping[str, str]) -> None:
    """Write a ConfigMap volume the way kubelet's atomic writer does: the files in a fresh
    ..<timestamp> folder, `..data` swapped to it by rename, one symlink per key."""
    volume.mkdir(parents=True, exist_ok=True)
    old = os.readlink(volume / "..data") if (volume / "..data").is_symlink() else None
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.time_ns() % 10**9:09d}"
    (volume / stamp).mkdir()
    for name, text in files.items():
        (volume / stamp / name).write_text(text)
    os.symlink(stamp, volume / "..data_tmp")
    os.replace(volume / "..data_tmp", volume / "..data")
    for name in files:
        if not (volume / name).is_symlink():
            os.symlink(f"..data/{name}", volume / name)
    if old is not None:
        shutil.rmtree(volume / old)


@pytest.mark.anyio
async def test_mounted_configmaps_load_and_hot_reload(
    tmp_path: Path, docs: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    folders = mount_layout(tmp_path, docs, pod)
    config = tmp_path / str(settings_of(container).config_path).lstrip("/")
    table = load(config)
    assert table.content_hash == load(SHIPPED_CONFIG).content_hash
    # The reloader watches the mount folders themselves, where kubelet's ..data swap shows.
    assert set(watch_dirs(config, table.files)) == set(folders.values())

    swapped, seen = anyio.create_memory_object_stream[RouteTable](4)

    async def before_swap(new: RouteTable) -> None:
        await swapped.send(new)

    reloader = Reloader(config, TableHolder(table), Metrics(), before_swap=before_swap)
    maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    async with swapped, seen, anyio.create_task_group() as tg:
        await tg.start(reloader.run)
        # Each volume twice: the second update finds the folder of the first one deleted.
        for edit, name in enumerate(sorted(folders) * 2):
            # Any change to a mounted file makes a new route table; a comment will do.
            files = {k: f"{v}\n# edit {edit}\n" for k, v in maps[name].items()}
            kubelet_publish(folders[name], files)
            with anyio.fail_after(20):
                new = await seen.receive()
            assert new.content_hash != table.content_hash
            table = new
        tg.cancel_scope.cancel()


def test_http_port_probes_and_scrape_agree(
    docs: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    settings = settings_of(container)
    # Probes and scrapes come from outside the pod: not loopback.
    assert settings.http_host in ("0.0.0.0", "", "::")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": settings.http_port}

    def port(ref: int | str) -> int:
        return ref if isinstance(ref, int) else ports[ref]

    probes = {
        k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    assert {k: (p["path"], port(p["port"])) for k, p in probes.items()} == {
        "startupProbe": ("/healthz", settings.http_port),
        "livenessProbe": ("/healthz", settings.http_port),
        "readinessProbe": ("/readyz", settings.http_port),
    }
    (service_port,) = one(docs, "Service")["spec"]["ports"]
    assert port(service_port["targetPort"]) == settings.http_port
    annotations = one(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert int(annotations["prometheus.io/port"]) == settings.http_port


def test_grace_period_outlasts_the_graceful_stop(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    needed = settings_of(container).shutdown_timeout + CLOSE_TIMEOUT + TEARDOWN_MARGIN
    assert pod["terminationGracePeriodSeconds"] >= needed
    assert "lifecycle" not in container  # no preStop: routerd drains on SIGTERM itself


def test_environment_is_routerd_settings(container: dict[str, Any]) -> None:
    names = {e["name"] for e in container["env"]}
    assert names <= KNOWN_VARS, f"unknown to routerd: {names - KNOWN_VARS}"
    # The broker URL comes from the Secret as a file, never as a variable.
    assert not [e for e in container["env"] if "valueFrom" in e]
    assert "ROUTERD_AMQP_URL" not in names
    settings_of(container)  # raises SettingsError on a value routerd would refuse


def amqp_secret_file(pod: Mapping[str, Any], container: Mapping[str, Any]) -> tuple[str, str]:
    """(Secret name, key) of the file ROUTERD_AMQP_URL_FILE names, through the pod's mounts."""
    path = Path(plain_env(container)[AMQP_URL_FILE])
    (mount,) = [m for m in container["volumeMounts"] if path.is_relative_to(m["mountPath"])]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    secret = volume["secret"]
    (item,) = [i for i in secret["items"] if i["path"] == str(path.relative_to(mount["mountPath"]))]
    return secret["secretName"], item["key"]


def test_amqp_url_is_a_secret_file_only_routerd_reads(
    pod: dict[str, Any], container: dict[str, Any]
) -> None:
    assert amqp_secret_file(pod, container) == ("routerd-amqp", "url")
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    # Group-readable by the pod's fsGroup only, which is routerd's own group.
    assert volume["secret"]["defaultMode"] == 0o440
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]


def test_replicas_spread_across_zones_and_nodes(pod: dict[str, Any]) -> None:
    labels = {"app.kubernetes.io/name": "routerd"}
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    for constraint in spread.values():
        assert constraint["labelSelector"]["matchLabels"] == labels
        assert constraint["maxSkew"] == 1
        # A replica a spike needs must not wait for a balanced spot.
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"


def test_network_policy_admits_broker_dns_and_scrapes_only(
    docs: list[dict[str, Any]], container: dict[str, Any]
) -> None:
    policy = one(docs, "NetworkPolicy")["spec"]
    pods = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= pods.items()
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    (ingress,) = policy["ingress"]
    metrics = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert [(p["port"], p["protocol"]) for p in ingress["ports"]] == [("metrics", "TCP")]
    assert set(metrics) == {"metrics"}
    egress = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert egress == {(5672, "TCP"), (5671, "TCP"), (53, "UDP"), (53, "TCP")}
    # Every rule names where it may go: no rule opens a port to the whole world.
    assert all(rule.get("to") for rule in policy["egress"])


def test_pods_run_unprivileged(pod: dict[str, Any], container: dict[str, Any]) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    # A Service named routerd-* would otherwise inject ROUTERD_*_SERVICE_HOST and friends.
    assert pod["enableServiceLinks"] is False
    ctx = container["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    user = dockerfile_instructions()["USER"][-1]
    assert user == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"


def test_selectors_match_the_pods(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selectors = [
        deployment["spec"]["selector"]["matchLabels"],
        one(docs, "Service")["spec"]["selector"],
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items()
    # The autoscaler owns the replica count; a value here would undo it on every apply.
    assert "replicas" not in deployment["spec"]


def test_autoscalers_scale_on_the_source_queue(
    docs: list[dict[str, Any]], container: dict[str, Any]
) -> None:
    sources = [source.queue for source in load(SHIPPED_CONFIG).sources]
    hpa = one(docs, "HorizontalPodAutoscaler")["spec"]
    assert hpa["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    externals = [m["external"] for m in hpa["metrics"] if m["type"] == "External"]
    # One metric per source queue, each with the same target.
    assert sorted(e["metric"]["selector"]["matchLabels"]["queue"] for e in externals) == sorted(
        sources
    )
    for external in externals:
        assert external["metric"]["name"] == "rabbitmq_queue_messages_ready"
        assert external["target"] == externals[0]["target"]
    external = externals[0]

    keda = render(ENTRY_POINTS["keda"])
    assert not [d for d in keda if d["kind"] == "HorizontalPodAutoscaler"], "two autoscalers"
    scaled = one(keda, "ScaledObject")["spec"]
    assert scaled["scaleTargetRef"]["name"] == hpa["scaleTargetRef"]["name"]
    assert (scaled["minReplicaCount"], scaled["maxReplicaCount"]) == (
        hpa["minReplicas"],
        hpa["maxReplicas"],
    )
    triggers = [t for t in scaled["triggers"] if t["type"] == "rabbitmq"]
    assert sorted(t["metadata"]["queueName"] for t in triggers) == sorted(sources)
    for trigger in triggers:
        assert trigger["metadata"]["value"] == external["target"]["averageValue"]
    auth = one(keda, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    # KEDA reads the same Secret routerd mounts, through the API.
    name, key = amqp_secret_file(one(docs, "Deployment")["spec"]["template"]["spec"], container)
    (ref,) = auth["spec"]["secretTargetRef"]
    assert (ref["parameter"], ref["name"], ref["key"]) == ("host", name, key)


def builtin(doc: Mapping[str, Any]) -> bool:
    """A Kubernetes API kind (core, apps, policy, *.k8s.io), as opposed to a CRD's."""
    group = doc["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def custom_resources() -> list[dict[str, Any]]:
    """Every object of a custom resource kind in what ops apply (KEDA, Prometheus Operator)."""
    docs = render(ENTRY_POINTS["keda"]) + render(MONITORING)
    return [d for d in docs if not builtin(d)]


def crd_problems(doc: Mapping[str, Any]) -> list[str]:
    schema = operator_crds.SCHEMAS[(doc["apiVersion"], doc["kind"])]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{doc['kind']}: {'.'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(doc)
    ]


def test_custom_resources_match_their_crds() -> None:
    kinds = []
    for doc in custom_resources():
        assert (doc["apiVersion"], doc["kind"]) in operator_crds.SCHEMAS, "no schema for it"
        assert crd_problems(doc) == []
        kinds.append(doc["kind"])
    assert sorted(kinds) == [
        "PodMonitor",
        "PrometheusRule",
        "ScaledObject",
        "TriggerAuthentication",
    ]


@pytest.mark.parametrize(
    ("kind", "path", "key", "value"),
    [
        ("ScaledObject", ["spec"], "minReplicas", 2),  # the HPA's name, not KEDA's
        ("ScaledObject", ["spec"], "pollingInterval", "15s"),
        ("ScaledObject", ["spec", "advanced", "horizontalPodAutoscalerConfig"], "scaleUp", {}),
        ("TriggerAuthentication", ["spec"], "secretRef", []),
        ("PodMonitor", ["spec"], "endpoints", []),  # a ServiceMonitor's field
        ("PodMonitor", ["spec", "podMetricsEndpoints", 0], "interval", "15 seconds"),
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0], "for", "5 min"),
        ("PrometheusRule", ["spec", "groups", 0, "rules", 0], "severity", "critical"),
    ],
)
def test_crd_schemas_catch_mistakes(kind: str, path: list[str | int], key: str, value: Any) -> None:
    (doc,) = deepcopy([d for d in custom_resources() if d["kind"] == kind])
    node = doc
    for step in path:
        node = node[step]
    node[key] = value
    assert crd_problems(doc) != []


def test_keda_rabbitmq_trigger_uses_the_scalers_parameters() -> None:
    scaled = one(render(ENTRY_POINTS["keda"]), "ScaledObject")["spec"]
    triggers = [t for t in scaled["triggers"] if t["type"] == "rabbitmq"]
    assert triggers
    for trigger in triggers:
        assert set(trigger["metadata"]) <= set(operator_crds.RABBITMQ_METADATA_KEYS)
        assert trigger["metadata"]["mode"] in ("QueueLength", "MessageRate")


def test_pod_monitor_scrapes_routerd_metrics_port(
    docs: list[dict[str, Any]], container: dict[str, Any]
) -> None:
    monitor = one(render(MONITORING), "PodMonitor")["spec"]
    labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert endpoint["port"] in {p["name"] for p in container["ports"]}
    assert endpoint["path"] == "/metrics"


# Queue series of RabbitMQ's rabbitmq_prometheus plugin (per object, `rabbitmq_` prefix),
# from deps/rabbitmq_prometheus/src/collectors/prometheus_rabbitmq_core_metrics_collector.erl
# (rabbitmq/rabbitmq-server 4bb2262140663b186c8d7beb57d10e3d86ef52ea), and the one
# kube-state-metrics series the rules use.
RABBITMQ_QUEUE_SERIES = {
    "rabbitmq_queue_messages_ready",
    "rabbitmq_queue_messages_unacked",
    "rabbitmq_queue_messages",
    "rabbitmq_queue_consumers",
    "rabbitmq_queue_messages_published_total",
}
KUBE_STATE_SERIES = {"kube_pod_status_ready"}


def alert_rules() -> dict[str, dict[str, Any]]:
    rule = one(render(MONITORING), "PrometheusRule")
    return {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}


def test_alerts_cover_the_failure_modes() -> None:
    assert set(alert_rules()) == {
        "RouterdNoConsumer",
        "RouterdBacklogGrowing",
        "RouterdRejectedRateHigh",
        "RouterdReloadRefused",
        "RouterdPublishFailures",
        "RouterdNotReady",
    }


def test_alerts_use_series_that_exist() -> None:
    metrics = Metrics()
    metrics.rejected.labels(reason="x").inc()
    metrics.publish_failures.labels(target="t", cause="nack").inc()
    routerd_series = {
        sample.name for family in metrics.registry.collect() for sample in family.samples
    }
    source = load(SHIPPED_CONFIG).source.queue
    for name, rule in alert_rules().items():
        for series in re.findall(r"\b((?:routerd|rabbitmq|kube)_\w+)\b", rule["expr"]):
            known = routerd_series | RABBITMQ_QUEUE_SERIES | KUBE_STATE_SERIES
            assert series in known, f"{name}: {series} is exported by nobody"
        for queue in re.findall(r'queue="([^"]*)"', rule["expr"]):
            assert queue == source, f"{name}: watches {queue}, the source queue is {source}"
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"]


PROMTOOL = shutil.which("promtool")


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (apt: prometheus) is not installed")
def test_promtool_checks_the_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(one(render(MONITORING), "PrometheusRule")["spec"]))
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def rendered(template: str, labels: Mapping[str, str], value: str = "") -> str:
    """An alert annotation as Prometheus renders it: $labels.X, $value, humanizePercentage
    (the only template parts routerd's rules use; a value is given already formatted)."""
    text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], template)
    return re.sub(r"\{\{ \$value( \| humanizePercentage)? \}\}", value, text)


# A routerd replica's name: Deployment, ReplicaSet's template hash, 5 random characters.
POD = "routerd-5f8d7c9b6d-x2k4p"
OTHER = "routerd-api-5f8d7c9b6d-x2k4p"  # a replica of a Deployment named routerd-api
# Each alert: input series (promtool's expanding notation, one sample a minute), when it
# must not fire yet, when it must, its labels then, and $value as rendered.
ALERT_CASES: dict[str, dict[str, Any]] = {
    "RouterdNoConsumer": {
        "series": {'rabbitmq_queue_consumers{queue="email.send",vhost="/"}': "2x5 0x20"},
        "quiet": "9m",  # 0 since minute 6: 3 of the 5 minutes
        "fires": "12m",
        "labels": {"queue": "email.send", "vhost": "/", "severity": "critical"},
    },
    "RouterdBacklogGrowing": {
        # +1,000 ready a minute from 0: above 10,000 from minute 11, rising throughout.
        "series": {'rabbitmq_queue_messages_ready{queue="email.send",vhost="/"}': "0+1000x40"},
        "quiet": "20m",
        "fires": "27m",
        "labels": {"queue": "email.send", "vhost": "/", "severity": "warning"},
        "value": "27000",
    },
    "RouterdRejectedRateHigh": {
        # 100/s consumed for a day; rejected 0.5 % of it, then 5 % in the last hour.
        "series": {
            "routerd_requests_consumed_total": "0+6000x1500",
            "routerd_requests_rejected_total": "0+30x1380 41400+300x120",
        },
        "quiet": "1380m",
        "fires": "1440m",
        "labels": {"severity": "warning"},
        "value": "5%",
    },
    "RouterdReloadRefused": {
        "series": {f'routerd_reloads_total{{result="refused",pod="{POD}"}}': "0x10 1x30"},
        "quiet": "9m",
        "fires": "12m",
        "labels": {"result": "refused", "pod": POD, "severity": "warning"},
    },
    "RouterdPublishFailures": {
        "series": {'routerd_publish_failures_total{target="bulk",cause="nack"}': "0x5 0+60x30"},
        "quiet": "12m",
        "fires": "18m",
        "labels": {"target": "bulk", "cause": "nack", "severity": "warning"},
    },
    "RouterdNotReady": {
        "series": {
            f'kube_pod_status_ready{{condition="false",namespace="routerd",pod="{POD}"}}': (
                "0x5 1x30"
            ),
            # Another workload whose name starts with routerd-: not a routerd replica.
            'kube_pod_status_ready{condition="false",namespace="x",pod="routerd-api-0"}': "1x40",
            f'kube_pod_status_ready{{condition="false",namespace="x",pod="{OTHER}"}}': "1x40",
        },
        "quiet": "14m",
        "fires": "17m",
        "labels": {"namespace": "routerd", "pod": POD, "severity": "warning"},
    },
}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool (apt: prometheus) is not installed")
def test_alerts_fire_when_they_should(tmp_path: Path) -> None:
    rules = alert_rules()
    assert set(ALERT_CASES) == set(rules)
    (tmp_path / "rules.yaml").write_text(
        yaml.safe_dump(one(render(MONITORING), "PrometheusRule")["spec"])
    )
    tests = []
    for name, case in ALERT_CASES.items():
        annotations = {
            k: rendered(v, case["labels"], case.get("value", ""))
            for k, v in rules[name]["annotations"].items()
        }
        tests.append(
            {
                "interval": "1m",
                "input_series": [{"series": k, "values": v} for k, v in case["series"].items()],
                "alert_rule_test": [
                    {"eval_time": case["quiet"], "alertname": name, "exp_alerts": []},
                    {
                        "eval_time": case["fires"],
                        "alertname": name,
                        "exp_alerts": [
                            {"exp_labels": case["labels"], "exp_annotations": annotations}
                        ],
                    },
                ],
            }
        )
    spec = {"rule_files": ["rules.yaml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(spec))
    result = subprocess.run(
        [str(PROMTOOL), "test", "rules", "tests.yaml"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- container image ---------------------------------------------------------------------


def dockerfile_instructions() -> dict[str, list[str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out: dict[str, list[str]] = defaultdict(list)
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out[word.upper()].append(rest.strip())
    return out


def test_dockerfile_runs_routerd_serve_unprivileged() -> None:
    steps = dockerfile_instructions()
    assert all(base.startswith("python:3.11-slim") for base in steps["FROM"])
    assert yaml.safe_load(steps["ENTRYPOINT"][-1]) == ["/opt/routerd/.venv/bin/routerd", "serve"]
    assert not steps["USER"][-1].startswith(("0", "root"))
    env = dict(word.split("=", 1) for line in steps["ENV"] for word in shlex.split(line))
    routerd_env = {k: v for k, v in env.items() if k.startswith("ROUTERD_")}
    assert set(routerd_env) <= KNOWN_VARS
    assert Settings.from_sources({}, routerd_env).http_host == "0.0.0.0"
    # Everything copied from the build context exists and is let through the ignore file.
    allowed = {line[1:] for line in DOCKERIGNORE.read_text().split() if line.startswith("!")}
    for copy in steps["COPY"]:
        if not copy.startswith("--from"):
            *sources, _ = copy.split()
            for src in sources:
                assert (ROOT / src).exists() and src.rstrip("/") in allowed, src


def test_dockerignore_is_the_one_docker_reads() -> None:
    # BuildKit prefers <Dockerfile>.dockerignore over the context's .dockerignore: one
    # beside the Dockerfile would quietly replace the file checked above.
    assert DOCKERFILE.parent == DOCKERIGNORE.parent == ROOT
    assert not (ROOT / f"{DOCKERFILE.name}.dockerignore").exists()
    assert "*" in DOCKERIGNORE.read_text().split(), "the context must start from nothing"


# --- systemd -----------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values (in order) of a unit file, across sections; comments dropped."""
    out: dict[str, list[str]] = defaultdict(list)
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out[key.strip()].append(value.strip())
    return out


def env_file(path: Path, *, commented: bool) -> dict[str, str]:
    """KEY=value lines of an EnvironmentFile; `commented` also reads `#KEY=value` examples."""
    pattern = r"^#?([A-Z][A-Z0-9_]*)=(.*)$" if commented else r"^([A-Z][A-Z0-9_]*)=(.*)$"
    return dict(re.findall(pattern, path.read_text(), re.MULTILINE))


UNIT = SYSTEMD / "routerd.service"
TEMPLATE = SYSTEMD / "routerd@.service"
# What the template may set differently from routerd.service: the instance is the port.
TEMPLATE_ONLY = {"Description", "Environment", "EnvironmentFile", "DefaultInstance"}
ENV_EXAMPLE = SYSTEMD / "routerd.env.example"


def unit_environment() -> dict[str, str]:
    unit = dict(v.split("=", 1) for v in unit_settings(UNIT)["Environment"])
    return {**unit, **env_file(ENV_EXAMPLE, commented=False)}  # the file wins, as in systemd


def test_systemd_environment_is_routerd_settings() -> None:
    names = set(unit_environment()) | set(env_file(ENV_EXAMPLE, commented=True))
    assert names <= KNOWN_VARS, f"unknown to routerd: {names - KNOWN_VARS}"
    assert "ROUTERD_AMQP_URL" in env_file(ENV_EXAMPLE, commented=False)
    Settings.from_sources({}, unit_environment())
    Settings.from_sources({}, env_file(ENV_EXAMPLE, commented=True))


def test_systemd_unit_stops_gracefully_and_reloads() -> None:
    unit = unit_settings(UNIT)
    # systemd 252 (Debian 12) has no notify-reload; ExecReload waits for the result itself.
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["ExecStart"] == ["/opt/routerd/.venv/bin/routerd serve"]
    python, flag, module, verb, pid = unit["ExecReload"][0].split()
    assert (python, flag, verb, pid) == (
        "/opt/routerd/.venv/bin/python",
        "-m",
        "reload",
        "$MAINPID",
    )
    assert module == systemd_notify.__name__ and callable(systemd_notify._main)
    # Pings at half the period, checked for each tick of the link.
    watchdog = float(unit["WatchdogSec"][0].removesuffix("s"))
    assert watchdog / 2 > 10 * systemd_notify.TICK
    # SIGTERM to routerd alone; SIGKILL to what is left only after TimeoutStopSec.
    assert (unit["KillMode"], unit["KillSignal"]) == (["mixed"], ["SIGTERM"])
    settings = Settings.from_sources({}, unit_environment())
    timeout = float(unit["TimeoutStopSec"][0].removesuffix("s"))
    assert timeout >= settings.shutdown_timeout + CLOSE_TIMEOUT + TEARDOWN_MARGIN
    assert unit["Restart"] == ["on-failure"] and unit["StartLimitBurst"]
    assert unit["User"] == ["routerd"] and unit["EnvironmentFile"] == ["/etc/routerd/routerd.env"]
    for key, value in [
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
    ]:
        assert unit[key] == [value]
    config = settings.config_path
    assert any(config.is_relative_to(p) for p in unit["ReadOnlyPaths"])
    assert config.is_relative_to(unit["WorkingDirectory"][0])


def test_template_unit_is_routerd_service_per_port() -> None:
    unit, template = unit_settings(UNIT), unit_settings(TEMPLATE)
    assert {k: v for k, v in unit.items() if k not in TEMPLATE_ONLY} == {
        k: v for k, v in template.items() if k not in TEMPLATE_ONLY
    }
    instance = template["DefaultInstance"][0]
    env = dict(v.replace("%i", instance).split("=", 1) for v in template["Environment"])
    assert env == {**dict(v.split("=", 1) for v in unit["Environment"]), **env}
    settings = Settings.from_sources({}, env)
    assert settings.http_port == int(instance) and settings.http_host == "127.0.0.1"
    # The shared file first, then the instance's own (optional: '-'), which wins.
    assert template["EnvironmentFile"] == [*unit["EnvironmentFile"], "-/etc/routerd/routerd@%i.env"]
    # The shared env file must not set the port for every instance.
    assert "ROUTERD_HTTP_ADDR" not in env_file(ENV_EXAMPLE, commented=False)


def exposure(unit: Path, tmp_path: Path) -> str:
    """`systemd-analyze security --offline` of a unit file: its overall exposure line."""
    copy = tmp_path / unit.name.replace("@.", "@9464.")
    shutil.copy(unit, copy)
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", "--no-pager", str(copy)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    (line,) = [x for x in result.stdout.splitlines() if "Overall exposure level" in x]
    return line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize("unit", [UNIT, TEMPLATE], ids=["service", "template"])
def test_exposure_score_is_the_documented_one(unit: Path, tmp_path: Path) -> None:
    match = re.search(r": (\d+\.\d) (\w+)", exposure(unit, tmp_path))
    assert match is not None
    score, verdict = match.groups()
    assert verdict == "OK"
    # docs/deploy.md quotes the score; the tool's own figure must match it.
    assert f"exposure **{score}**" in DEPLOY_DOC.read_text()


def stub_root(root: Path, unit_file: Path = UNIT) -> None:
    """A filesystem root holding the unit, its binary and stubs of the units it names."""
    unit = unit_settings(unit_file)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(unit_file, root / "etc/systemd/system" / unit_file.name)
    # verify checks that every Exec*= command is an executable file under the root.
    for key in [k for k in unit if k.startswith("Exec")]:
        for command in unit[key]:
            binary = root / shlex.split(command)[0].lstrip("/")
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_text("#!/bin/sh\n")
            binary.chmod(0o755)
    # Units every service depends on by default, plus those the unit names itself.
    named = {"sysinit.target", "basic.target", "shutdown.target"}
    for key in ("Wants", "After", "Requires", "WantedBy"):
        named.update(w for v in unit.get(key, []) for w in v.split())
    lib = root / "usr/lib/systemd/system"
    lib.mkdir(parents=True)
    for name in named:
        (lib / name).write_text("[Unit]\nDescription=stub\n")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
@pytest.mark.parametrize(
    ("unit", "name"), [(UNIT, "routerd.service"), (TEMPLATE, "routerd@9464.service")]
)
def test_systemd_analyze_verify(unit: Path, name: str, tmp_path: Path) -> None:
    stub_root(tmp_path, unit)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={tmp_path}", name],
        capture_output=True,
        text=True,
        timeout=60,
    )
    # verify exits 0 on unknown keys and bad values too: any output at all is a finding.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="systemd-sysusers missing")
def test_sysusers_creates_the_unit_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    result = subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "routerd.sysusers")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    users = [line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()]
    assert [u[0] for u in users] == unit_settings(UNIT)["User"]


# --- docs --------------------------------------------------------------------------------


def deployment_files() -> set[Path]:
    return {p for folder in (SYSTEMD, KUBE) for p in folder.rglob("*") if p.is_file()} | {
        DOCKERFILE,
        DOCKERIGNORE,
    }


def test_deploy_doc_lists_every_deployment_file() -> None:
    table = DEPLOY_DOC.read_text().split("| file | what |", 1)[1].split("\n\n", 1)[0]
    named = [ROOT / n for n in re.findall(r"^\| `([^`]+)` \|", table, re.MULTILINE)]
    assert [n for n in named if not n.exists()] == [], "docs/deploy.md names missing files"
    unlisted = {f for f in deployment_files() if not any(f.is_relative_to(n) for n in named)}
    assert unlisted == set(), "deployment files docs/deploy.md does not list"


def test_paths_in_docs_and_deployment_files_exist() -> None:
    # Install and render commands name repository paths; a move must carry them along.
    # deploy/ held these files until the layout moved them to the root: a path there is stale.
    pattern = r"(?<![\w./-])((?:deploy|systemd|k8s|config|schemas|docs)/[\w./*@-]*)"
    missing = {
        f"{source.relative_to(ROOT)}: {path}"
        for source in [DEPLOY_DOC, *deployment_files()]
        for path in re.findall(pattern, source.read_text())
        if not any(ROOT.glob(path.rstrip("/.")))
    }
    assert missing == set()
