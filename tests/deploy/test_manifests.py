"""deploy/kubernetes, deploy/envoy and deploy/nginx, checked against the gateway's real option parser, the API
(the generated descriptors) and each other; the nginx config also with `nginx -t`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.command_line import parse_settings
from gateway.config import OPTIONS, Settings
from gateway.wire import SERVICE_NAME
from generated.glance.gateway.v1 import image_service_pb2 as pb
from harness.proxy import NginxProxy, self_signed_certificate

from .files import (
    DOCKERFILE,
    ENVOY,
    KUBERNETES,
    NGINX,
    Block,
    Doc,
    dockerfile_stages,
    kubernetes_docs,
    nginx_location,
    nginx_parse,
    nginx_seconds,
    one,
    quantity,
)

OPTION_FLAGS = {option.flag for option in OPTIONS}
OPTION_ENVS = {option.env for option in OPTIONS}
METHODS = pb.DESCRIPTOR.services_by_name["ImageService"].methods
# Safe to send again after a failure that may have reached a replica; the others change images.
IDEMPOTENT = {
    "GetImageMeta", "ListImages", "GetImage", "ListImageMembers", "GetImageMember", "ListStores",
    "GetQuotaUsage", "WatchImageImport",
}  # fmt: skip
STREAMING = {m.name for m in METHODS if m.client_streaming or m.server_streaming}
# The clean-up of failed uploads still pending at exit gets this long after the shutdown grace
# (gateway/cleanup.py, Janitor.__aexit__).
CLEANUP_GRACE = 10.0


@pytest.fixture(scope="module")
def docs() -> list[Doc]:
    return kubernetes_docs()


@pytest.fixture(scope="module")
def deployment(docs: list[Doc]) -> Doc:
    return one(docs, "Deployment")


@pytest.fixture(scope="module")
def pod(deployment: Doc) -> Doc:
    spec: Doc = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: Doc) -> Doc:
    containers: list[Doc] = [c for c in pod["containers"] if c["name"] == "gateway"]
    assert len(containers) == 1
    return containers[0]


def container_env(container: Doc) -> dict[str, str]:
    env = {}
    for entry in container.get("env", []):
        assert "value" in entry, f"{entry['name']}: only literal values are checked here"
        assert isinstance(entry["value"], str), f"{entry['name']}: env values must be strings in YAML"
        env[entry["name"]] = entry["value"]
    return env


@pytest.fixture(scope="module")
def settings(container: Doc) -> Settings:
    """What the gateway in the pod runs with: the image's ENV, the container's env, then its args."""
    image_env = dockerfile_stages(DOCKERFILE.read_text())[-1].env()
    try:
        return parse_settings(container.get("args", []), environ={**image_env, **container_env(container)})
    except SystemExit:
        pytest.fail("the gateway refuses the container's args/env (its usage error is printed above)")


def port_number(container: Doc, port: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    assert len(named) == 1, f"no container port named {port!r}"
    return int(named[0])


# -- Kubernetes ------------------------------------------------------------------------------


def test_kustomization_applies_every_manifest(docs: list[Doc]) -> None:
    kustomization = one(docs, "Kustomization")
    manifests = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == manifests
    images = {image["name"] for image in kustomization.get("images", [])}
    container_images = {c["image"].split(":")[0] for d in docs if d["kind"] == "Deployment"
                        for c in d["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert container_images <= images


def test_every_flag_and_variable_is_one_of_the_gateways(container: Doc, settings: Settings) -> None:
    for arg in container.get("args", []):
        assert arg.startswith("--") and arg.split("=")[0] in OPTION_FLAGS, f"unknown flag {arg}"
    assert "command" not in container, "the image's entrypoint (python -m gateway) runs the args"
    for name in container_env(container):
        if name.startswith(("GATEWAY_", "GLANCE_")):
            assert name in OPTION_ENVS, f"{name} is no option of the gateway"
    # Each value parses on its own too (the fixture parsed them all together).
    for name, value in container_env(container).items():
        if name in OPTION_ENVS:
            parse_settings([], environ={name: value})


def test_container_ports_are_the_ones_the_gateway_listens_on(container: Doc, settings: Settings) -> None:
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": settings.port, "health": settings.health_port, "metrics": settings.metrics_port}
    assert settings.host == "0.0.0.0", "the kubelet probes the pod's IP"


def test_probes_ask_the_health_port_for_the_right_services(container: Doc, settings: Settings) -> None:
    readiness, liveness = container["readinessProbe"]["grpc"], container["livenessProbe"]["grpc"]
    assert port_number(container, readiness["port"]) == settings.health_port
    assert port_number(container, liveness["port"]) == settings.health_port
    # Ready: the process serves and Glance answers. Alive: the process serves (a Glance outage must not
    # restart the pods).
    assert readiness["service"] == SERVICE_NAME == "glance.gateway.v1.ImageService"
    assert liveness["service"] == ""


def test_termination_outlasts_the_drain(pod: Doc, settings: Settings) -> None:
    assert settings.drain_delay == 5
    longest = settings.drain_delay + settings.shutdown_grace + CLEANUP_GRACE
    assert pod["terminationGracePeriodSeconds"] > longest


def test_rollouts_and_disruptions_keep_capacity(deployment: Doc, docs: list[Doc]) -> None:
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["replicas"] >= 2


def test_security_context(pod: Doc, container: Doc) -> None:
    effective = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    assert effective["runAsNonRoot"] is True
    image_user = dockerfile_stages(DOCKERFILE.read_text())[-1].all("USER")[-1].args.split(":")[0]
    assert effective["runAsUser"] == int(image_user) == 10001
    assert effective["readOnlyRootFilesystem"] is True
    assert effective["allowPrivilegeEscalation"] is False
    assert effective["capabilities"]["drop"] == ["ALL"]
    # The one writable path: the workers' metric files (gateway/workers.py, tempfile) go to /tmp.
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def test_resources_are_requested_and_limited(container: Doc) -> None:
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        assert 0 < quantity(resources["requests"][kind]) <= quantity(resources["limits"][kind]), kind


def test_prometheus_scrapes_the_metrics_port(deployment: Doc, settings: Settings) -> None:
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(settings.metrics_port)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_services_reach_the_pods_by_named_ports(docs: list[Doc], deployment: Doc, container: Doc) -> None:
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    services = [d for d in docs if d["kind"] == "Service"]
    names = {s["metadata"]["name"] for s in services}
    assert names == {"glance-grpc-gateway", "glance-grpc-gateway-headless"}
    for service in services:
        assert service["spec"]["selector"].items() <= labels.items()
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in {p["name"] for p in container["ports"]}, port
            assert port["appProtocol"] == "kubernetes.io/h2c"
        first = service["spec"]["ports"][0]
        assert port_number(container, first["targetPort"]) == port_number(container, "grpc")
    cluster_ip = one(docs, "Service", "glance-grpc-gateway")["spec"]
    assert cluster_ip["type"] == "ClusterIP" and cluster_ip["ports"][0]["name"] == "grpc"


def test_pdb_and_hpa_select_the_deployment(docs: list[Doc], deployment: Doc) -> None:
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == (
        "apps/v1", "Deployment", deployment["metadata"]["name"],
    )  # fmt: skip
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    # The PDB's one unavailable pod always leaves others serving.
    assert hpa["spec"]["minReplicas"] >= 2 and hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]


# -- Envoy -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def envoy() -> Doc:
    doc: Doc = yaml.safe_load(ENVOY.read_text())
    return doc


def envoy_seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def envoy_routes(envoy: Doc) -> tuple[Doc, list[Doc]]:
    (listener,) = envoy["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (manager,) = chain["filters"]
    config: Doc = manager["typed_config"]
    (host,) = config["route_config"]["virtual_hosts"]
    routes: list[Doc] = host["routes"]
    return config, routes


def envoy_route_for(routes: list[Doc], path: str) -> Doc:
    """The first route whose match takes `path` (Envoy's order)."""
    for route in routes:
        match = route["match"]
        if match.get("path") == path or ("prefix" in match and path.startswith(match["prefix"])):
            return route
    raise AssertionError(f"no Envoy route for {path}")


def test_envoy_cluster_reaches_the_replicas_over_http2(envoy: Doc, docs: list[Doc], container: Doc) -> None:
    (cluster,) = envoy["static_resources"]["clusters"]
    kind = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    options = cluster["typed_extension_protocol_options"][kind]
    assert options["@type"] == f"type.googleapis.com/{kind}"
    assert "http2_protocol_options" in options["explicit_http_config"]
    # Idle connections are closed by Envoy before the gateway's --max-connection-idle closes them.
    idle = envoy_seconds(options["common_http_protocol_options"]["idle_timeout"])
    assert idle < Settings().max_connection_idle
    ((endpoint,),) = [group["lb_endpoints"] for group in cluster["load_assignment"]["endpoints"]]
    address = endpoint["endpoint"]["address"]["socket_address"]
    assert address["port_value"] == port_number(container, "grpc")
    headless = one(docs, "Service", "glance-grpc-gateway-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert address["address"].split(".")[0] == headless["metadata"]["name"]
    assert cluster["type"] == "STRICT_DNS"
    # Health from every replica's health port, for the service that includes Glance's reachability.
    assert endpoint["endpoint"]["health_check_config"]["port_value"] == port_number(container, "health")
    (check,) = cluster["health_checks"]
    assert check["grpc_health_check"]["service_name"] == SERVICE_NAME
    # A draining replica leaves the rotation within its drain delay.
    interval, timeout = envoy_seconds(check["interval"]), envoy_seconds(check["timeout"])
    assert interval * check["unhealthy_threshold"] + timeout < 5


def test_envoy_routes_every_rpc_with_its_timeouts_and_retries(envoy: Doc) -> None:
    config, routes = envoy_routes(envoy)
    assert envoy_seconds(config["stream_idle_timeout"]) > Settings().stall_timeout
    assert envoy_seconds(config["request_timeout"]) == 0
    assert {m.name for m in METHODS} == {
        "ListImages", "GetImageMeta", "GetImage", "AddImage", "UpdateImage", "DeleteImage", "AddImageTag",
        "RemoveImageTag", "CreateImageMember", "ListImageMembers", "GetImageMember", "UpdateImageMember",
        "DeleteImageMember", "ListStores", "DeleteImageFromStore", "StageImageData", "ImportImage",
        "WatchImageImport", "DeactivateImage", "ReactivateImage", "GetQuotaUsage",
    }  # fmt: skip
    for method in METHODS:
        route = envoy_route_for(routes, f"/{SERVICE_NAME}/{method.name}")
        action: Doc = route["route"]
        assert action["cluster"] == "glance_grpc_gateway"
        retry: Doc | None = action.get("retry_policy")
        if method.name in STREAMING:
            # Envoy's default route timeout (15 s) would cut every longer transfer.
            assert envoy_seconds(action["timeout"]) == 0, method.name
            assert retry is None or "per_try_timeout" not in retry, method.name
        else:
            assert envoy_seconds(action["timeout"]) > 0, method.name
        if method.name in IDEMPOTENT:
            assert retry is not None, method.name
            conditions = set(retry["retry_on"].split(","))
            assert {"unavailable", "reset", "connect-failure"} <= conditions, method.name
        else:
            assert retry is None, f"{method.name} changes images: never retried"


# -- nginx -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nginx() -> Block:
    return nginx_parse(NGINX.read_text())


def nginx_server(nginx: Block) -> Block:
    (server,) = nginx.directives("server")
    return server


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    """`nginx -t` on the shipped file included in a minimal main config (with a throwaway certificate and
    loopback addresses; everything else as shipped)."""
    cert, key = self_signed_certificate(tmp_path)
    proxy = NginxProxy(tmp_path / "nginx", ["127.0.0.1:50051", "127.0.0.1:50052"], 8443, cert, key)
    checked = proxy.check()
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


def test_nginx_upstream_never_benches_a_restarting_replica(nginx: Block) -> None:
    (upstream,) = nginx.directives("upstream")
    servers = upstream.directives("server")
    assert len(servers) >= 2
    for server in servers:
        # See the file: with max_fails=1 a restarted replica stayed benched for fail_timeout and a rolling
        # restart lost calls (tests/integration/test_proxy.py measured it).
        assert "max_fails=0" in server.args, server.args
    assert upstream.value("keepalive") is not None


def test_nginx_routes_every_rpc_with_its_timeouts_and_retries(nginx: Block) -> None:
    (upstream,) = nginx.directives("upstream")
    server = nginx_server(nginx)
    assert server.value("client_max_body_size") == ["0"], "the default 1m answers 413 mid-upload"
    assert "http2" in (server.value("listen") or [])
    for method in METHODS:
        location = nginx_location(server, f"/{SERVICE_NAME}/{method.name}")
        assert location is not None, method.name
        assert location.value("grpc_pass") == [f"grpc://{upstream.args[0]}"], method.name
        retry = set(location.value("grpc_next_upstream") or ["error", "timeout"])  # nginx's default
        # nginx moves a gRPC call only while none of it was sent (connection failures); nothing that could
        # resend a call that reached a replica.
        assert retry <= {"error", "timeout"}, method.name
        if method.name in IDEMPOTENT:
            assert "error" in retry, method.name
        timeouts = [nginx_seconds((location.value(name) or ["60s"])[0])
                    for name in ("grpc_read_timeout", "grpc_send_timeout")]  # fmt: skip
        if method.name in STREAMING:
            assert min(timeouts) >= 3600, method.name
    unknown = nginx_location(server, "/some.other.Service/Method")
    assert unknown is not None and unknown.value("return") == ["404"]


def test_nginx_idle_connections_close_before_the_gateway_closes_them(nginx: Block) -> None:
    (upstream,) = nginx.directives("upstream")
    keepalive_timeout: Any = upstream.value("keepalive_timeout")
    assert keepalive_timeout is not None
    assert nginx_seconds(keepalive_timeout[0]) < Settings().max_connection_idle
