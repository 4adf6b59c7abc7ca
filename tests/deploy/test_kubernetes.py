"""deploy/kubernetes/, read as a reviewer reads it (docs/deployment.md): the probes ask real endpoints on
the port the server listens on, every environment variable is one the settings read, secrets
are references (never values), beat is a singleton replaced with Recreate, nothing runs as root
or writes its root filesystem, and every container runs the image with one of its commands."""

from __future__ import annotations

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.deploy.invariants import SECRET_NAME, URL_NAME, endpoint_exists, entrypoint_commands, settings_reads

DIRECTORY = REPO_ROOT / "deploy" / "kubernetes"
WORKLOADS = ("Deployment", "Job")


@pytest.fixture(scope="module")
def manifests() -> dict[tuple[str, str], dict]:
    kustomization = yaml.safe_load((DIRECTORY / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {path.name for path in DIRECTORY.glob("*.yaml")} - {"kustomization.yaml"}
    documents = [doc for name in sorted(listed) for doc in yaml.safe_load_all((DIRECTORY / name).read_text()) if doc]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}


def _pods(manifests):
    for (kind, name), doc in manifests.items():
        if kind in WORKLOADS:
            yield name, doc["spec"]["template"]["spec"]


def _containers(pod: dict) -> list[dict]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def test_the_pieces_are_there(manifests):
    assert set(manifests) == {
        ("ConfigMap", "jwtex"), ("Deployment", "jwtex-web"), ("Service", "jwtex-web"),
        ("PodDisruptionBudget", "jwtex-web"), ("HorizontalPodAutoscaler", "jwtex-web"),
        ("Deployment", "jwtex-worker"), ("Deployment", "jwtex-beat"), ("Job", "jwtex-migrate"),
        ("Ingress", "jwtex"), ("ServiceMonitor", "jwtex-web"),
    }  # fmt: skip
    assert not any(kind == "Secret" for kind, _ in manifests)  # referenced, never written here
    # Plain YAML: kustomize has mishandled anchors and aliases in some of its versions.
    for path in DIRECTORY.glob("*.yaml"):
        events = list(yaml.parse(path.read_text()))
        assert not any(isinstance(e, yaml.AliasEvent) or getattr(e, "anchor", None) for e in events), path.name


def test_web_probes_ask_real_endpoints_on_the_served_port(manifests):
    (web,) = manifests["Deployment", "jwtex-web"]["spec"]["template"]["spec"]["containers"]
    ports = {port["name"]: port["containerPort"] for port in web["ports"]}
    assert ports == {"http": 8000}  # the image's PORT
    probes = {kind: web[kind]["httpGet"] for kind in ("readinessProbe", "livenessProbe", "startupProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz" and probes["livenessProbe"]["path"] == "/healthz"
    for probe in probes.values():
        assert probe["port"] in ports and endpoint_exists(probe["path"]), probe
    monitor = manifests["ServiceMonitor", "jwtex-web"]["spec"]["endpoints"][0]
    assert monitor["path"] == "/metrics" and endpoint_exists("/metrics") and monitor["port"] == "http"
    assert monitor["authorization"]["credentials"] == {"name": "jwtex", "key": "metrics-token"}
    service = manifests["Service", "jwtex-web"]["spec"]
    assert service["ports"][0]["targetPort"] == "http"
    ingress = manifests["Ingress", "jwtex"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert ingress == {"name": "jwtex-web", "port": {"name": "http"}}


def test_web_has_resources_a_budget_and_an_autoscaler(manifests):
    web = manifests["Deployment", "jwtex-web"]
    labels = web["spec"]["template"]["metadata"]["labels"]
    (container,) = web["spec"]["template"]["spec"]["containers"]
    assert {"requests", "limits"} <= set(container["resources"])
    assert manifests["PodDisruptionBudget", "jwtex-web"]["spec"]["selector"]["matchLabels"] == labels
    assert manifests["Service", "jwtex-web"]["spec"]["selector"] == labels
    target = manifests["HorizontalPodAutoscaler", "jwtex-web"]["spec"]["scaleTargetRef"]
    assert target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "jwtex-web"}
    # Server processes per pod: set, and no more than the pod's CPUs (unset: the node's CPU count).
    processes = int(manifests["ConfigMap", "jwtex"]["data"]["WEB_CONCURRENCY"])
    assert processes <= int(container["resources"]["limits"]["cpu"])
    # SIGTERM: preStop, then up to 20 s for the requests in flight (jwtex_site/serve.py), within the grace.
    pod = web["spec"]["template"]["spec"]
    assert int(container["lifecycle"]["preStop"]["exec"]["command"][1]) + 20 < pod["terminationGracePeriodSeconds"]


def test_beat_is_a_singleton_replaced_with_recreate(manifests):
    beat = manifests["Deployment", "jwtex-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}
    beats = [name for name, pod in _pods(manifests) if any(c["args"][0] == "beat" for c in pod["containers"])]
    assert beats == ["jwtex-beat"]
    targets = {
        doc["spec"]["scaleTargetRef"]["name"]
        for (kind, _), doc in manifests.items()
        if kind == "HorizontalPodAutoscaler"
    }
    assert "jwtex-beat" not in targets


def test_migrations_run_in_a_job_and_the_others_wait_for_them(manifests):
    (migrate,) = manifests["Job", "jwtex-migrate"]["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]
    for name in ("jwtex-web", "jwtex-worker", "jwtex-beat"):
        (wait,) = manifests["Deployment", name]["spec"]["template"]["spec"]["initContainers"]
        assert wait["args"] == ["manage", "migrate", "--check"], name


def test_nothing_runs_as_root_or_writes_its_root_filesystem(manifests):
    for name, pod in _pods(manifests):
        security = pod["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == 10001, name
        assert pod["automountServiceAccountToken"] is False, name
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        for container in _containers(pod):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"] and "runAsUser" not in context, name
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            assert set(mounts) == {"/var/lib/jwtex", "/tmp"} and set(mounts.values()) <= set(volumes), name


def test_every_container_runs_the_image_with_one_of_its_commands(manifests):
    kustomization = yaml.safe_load((DIRECTORY / "kustomization.yaml").read_text())
    assert [image["name"] for image in kustomization["images"]] == ["jwtex"]
    assert (REPO_ROOT / "Containerfile").is_file()
    commands = entrypoint_commands()
    for name, pod in _pods(manifests):
        for container in _containers(pod):
            assert container["image"] == "jwtex" and "command" not in container, name  # the image's entrypoint
            assert container["args"][0] in commands, (name, container["args"])


def test_every_variable_is_one_the_settings_read_and_secrets_are_references(manifests):
    read = settings_reads()
    config = manifests["ConfigMap", "jwtex"]["data"]
    assert set(config) <= read, sorted(set(config) - read)
    assert not any(SECRET_NAME.search(name) for name in config)
    assert not any(URL_NAME.search(name) and "@" in value for name, value in config.items())
    for name, pod in _pods(manifests):
        for container in _containers(pod):
            assert container["envFrom"] == [{"configMapRef": {"name": "jwtex"}}], name
            for variable in container.get("env", []):
                assert variable["name"] in read, (name, variable["name"])
                if SECRET_NAME.search(variable["name"]) or URL_NAME.search(variable["name"]):
                    assert "value" not in variable and variable["valueFrom"]["secretKeyRef"]["name"] == "jwtex"
