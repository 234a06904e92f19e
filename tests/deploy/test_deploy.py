"""Deployment manifests, checked without Envoy or a cluster: the Kubernetes manifests (against the Kubernetes
schemas, strictly, and against each other and the configuration they carry), the Envoy bootstraps (parsed strictly
into envoy.config.bootstrap.v3.Bootstrap) and the Istio resources. The Dockerfile is checked in
test_deploy_dockerfile.py."""

import copy
import functools
from pathlib import Path

# The typed_config Any types used in our bootstraps: importing the modules puts them in the descriptor pool.
import envoy.extensions.filters.http.ext_authz.v3.ext_authz_pb2
import envoy.extensions.filters.http.router.v3.router_pb2
import envoy.extensions.filters.network.http_connection_manager.v3.http_connection_manager_pb2
import envoy.extensions.transport_sockets.tls.v3.tls_pb2
import envoy.extensions.upstreams.http.v3.http_protocol_options_pb2  # noqa: F401
import pytest
import yaml
from envoy.config.bootstrap.v3 import bootstrap_pb2
from envoy.config.core.v3 import config_source_pb2
from envoy.extensions.filters.http.ext_authz.v3 import ext_authz_pb2
from google.protobuf import json_format

from tenantgate import config
from tenantgate.policy import load_policies

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S_VERSION = "1.30"
EXT_AUTHZ_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"


def _documents(path):
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@functools.cache
def _all_kubernetes():
    return [(path, doc) for path in sorted((DEPLOY / "kubernetes").rglob("*.yaml")) for doc in _documents(path)]


def _find(kind, name):
    (doc,) = [d for _p, d in _all_kubernetes() if d["kind"] == kind and d["metadata"]["name"] == name]
    return copy.deepcopy(doc)


def parse_bootstrap(data: dict) -> bootstrap_pb2.Bootstrap:
    """Strict: unknown fields (also inside typed_config) and unresolvable Any types raise ParseError."""
    return json_format.ParseDict(data, bootstrap_pb2.Bootstrap(), ignore_unknown_fields=False)


def _ext_authz(bootstrap: bootstrap_pb2.Bootstrap) -> ext_authz_pb2.ExtAuthz:
    from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm

    manager = hcm.HttpConnectionManager()
    assert bootstrap.static_resources.listeners[0].filter_chains[0].filters[0].typed_config.Unpack(manager)
    (authz,) = [f for f in manager.http_filters if f.typed_config.type_url == EXT_AUTHZ_TYPE]
    assert manager.http_filters[-1].name == "envoy.filters.http.router"
    assert manager.normalize_path.value and manager.merge_slashes
    config_ = ext_authz_pb2.ExtAuthz()
    assert authz.typed_config.Unpack(config_)
    # TenantGate must see every request header to refuse duplicate tokens, overrides and other spellings.
    assert not config_.HasField("allowed_headers") and not config_.HasField("disallowed_headers")
    return config_


# ------------------------------------------------------------------------------------------- Kubernetes


def _validator():
    try:
        import kubernetes_validate
    except ImportError:
        pytest.skip("kubernetes-validate is not installed: pip install -e '.[test]'")
    return kubernetes_validate


@pytest.mark.parametrize("path,doc", _all_kubernetes(), ids=lambda v: v.name if isinstance(v, Path) else (
    f"{v['kind']}/{v['metadata']['name']}" if isinstance(v, dict) else str(v)))
def test_every_kubernetes_manifest_is_valid_against_its_schema(path, doc):
    _validator().validate(doc, K8S_VERSION, strict=True)


def test_the_schema_check_is_strict_about_unknown_fields():
    kv = _validator()
    broken = copy.deepcopy(_find("Deployment", "tenantgate"))
    broken["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(broken, K8S_VERSION, strict=True)


def test_the_central_pdp_has_the_objects_a_production_deployment_needs():
    kinds = {(d["kind"], d["metadata"]["name"]) for p, d in _all_kubernetes() if "central" in p.parts}
    assert {("Deployment", "tenantgate"), ("Service", "tenantgate"), ("PodDisruptionBudget", "tenantgate"),
            ("HorizontalPodAutoscaler", "tenantgate"), ("NetworkPolicy", "tenantgate"),
            ("ConfigMap", "tenantgate-config"), ("ServiceAccount", "tenantgate")} <= kinds


def _pod(deployment):
    return deployment["spec"]["template"]["spec"]


def _container(deployment, name):
    (container,) = [c for c in _pod(deployment)["containers"] if c["name"] == name]
    return container


@pytest.mark.parametrize("deployment,container", [("tenantgate", "tenantgate"), ("invoices", "tenantgate")])
def test_tenantgate_containers_are_locked_down_probed_by_grpc_health_and_bounded(deployment, container):
    d = _find("Deployment", deployment)
    pod, c = _pod(d), _container(d, container)
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert (sc["allowPrivilegeEscalation"], sc["readOnlyRootFilesystem"], sc["capabilities"]["drop"]) == (
        False, True, ["ALL"])
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == 8081, probe
    assert c["readinessProbe"]["grpc"]["service"] == "envoy.service.auth.v3.Authorization"
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and "memory" in c["resources"]["limits"]
    env = {e["name"]: e for e in c["env"]}
    for name in ("TENANTGATE_GRANTS_STORE", "PGPASSWORD"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "tenantgate-postgres", name
        assert "value" not in env[name]
    assert pod["terminationGracePeriodSeconds"] > 10  # > server.grace_seconds


def test_every_container_is_non_root_without_privilege_escalation():
    for _path, d in _all_kubernetes():
        if d["kind"] != "Deployment":
            continue
        for c in _pod(d)["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, c["name"]
            assert c["resources"]["limits"]["memory"], c["name"]
            assert ":" in c["image"] and not c["image"].endswith(":latest"), c["name"]


def test_service_pdb_hpa_and_networkpolicy_select_the_central_pods():
    d = _find("Deployment", "tenantgate")
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _find("Service", "tenantgate")["spec"]["selector"].items() <= labels.items()
    assert _find("PodDisruptionBudget", "tenantgate")["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert _find("NetworkPolicy", "tenantgate")["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    target = _find("HorizontalPodAutoscaler", "tenantgate")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "tenantgate")
    ports = {p["containerPort"] for p in _container(d, "tenantgate")["ports"]}
    assert {50051, 8081, 9464} == ports
    ingress_ports = {p["port"] for rule in _find("NetworkPolicy", "tenantgate")["spec"]["ingress"]
                     for p in rule["ports"]}
    assert 50051 in ingress_ports and 8081 not in ingress_ports


# What a pod's environment holds besides the Deployment's own variables: Kubernetes' service links for the
# Service named tenantgate (review finding: they crash-looped the central pods) and the image's ENV.
SERVICE_LINKS = {"TENANTGATE_SERVICE_HOST": "10.96.0.10", "TENANTGATE_SERVICE_PORT": "50051",
                 "TENANTGATE_SERVICE_PORT_GRPC": "50051", "TENANTGATE_SERVICE_PORT_METRICS": "9464",
                 "TENANTGATE_PORT": "tcp://10.96.0.10:50051", "TENANTGATE_PORT_50051_TCP": "tcp://10.96.0.10:50051",
                 "TENANTGATE_PORT_50051_TCP_PROTO": "tcp", "TENANTGATE_PORT_50051_TCP_PORT": "50051",
                 "TENANTGATE_PORT_50051_TCP_ADDR": "10.96.0.10"}


def _image_env():
    """The TENANTGATE_* settings the Dockerfile's ENV instruction sets."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    (env_line,) = [line for line in text.splitlines() if line.startswith("ENV ") and "TENANTGATE_" in line]
    pairs = (item.split("=", 1) for item in env_line[len("ENV "):].split())
    return {name: value for name, value in pairs if name.startswith("TENANTGATE_")}


def _load_config(tmp_path, config_map):
    path = tmp_path / "tenantgate.toml"
    path.write_text(_find("ConfigMap", config_map)["data"]["tenantgate.toml"])
    # The Deployment provides the grant store from a Secret; the pod also holds the image's ENV and links.
    return config.load(path, env={**SERVICE_LINKS, **_image_env(),
                                  "TENANTGATE_GRANTS_STORE": "postgresql://tenantgate@postgres.db.svc:5432/tg"})


def _size(quantity):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]]


@pytest.mark.parametrize("deployment,config_map", [("tenantgate", "tenantgate-config"),
                                                   ("invoices", "invoices-tenantgate")])
def test_the_audit_log_is_bounded_below_its_volume_and_shipped_on_stdout(tmp_path, deployment, config_map):
    # Review finding: neither config rotated or shipped the log: it filled the emptyDir until eviction and
    # went with every pod.
    s = _load_config(tmp_path, config_map)
    pod = _pod(_find("Deployment", deployment))
    (mount,) = [m for m in _container(_find("Deployment", deployment), "tenantgate")["volumeMounts"]
                if s.audit.path.startswith(m["mountPath"] + "/")]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert s.audit.stdout is True and s.audit.rotate_bytes > 0 and s.audit.keep_files > 0
    assert s.audit.rotate_bytes * (s.audit.keep_files + 2) < _size(volume["emptyDir"]["sizeLimit"])
    assert s.server.state_dir == "/var/lib/tenantgate" == _image_env()["TENANTGATE_SERVER_STATE_DIR"]


def test_central_pods_scale_and_roll_without_failed_checks(tmp_path):
    # Review findings: `replicas` fought the autoscaler on every apply; no preStop pause, so calls met a
    # closed port while the endpoint removal spread; Envoy's connections never moved to new replicas.
    d = _find("Deployment", "tenantgate")
    pod, c = _pod(d), _container(d, "tenantgate")
    assert "replicas" not in d["spec"] and pod["enableServiceLinks"] is False
    pause = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    s = _load_config(tmp_path, "tenantgate-config")
    assert pause > 0 and pod["terminationGracePeriodSeconds"] > pause + s.server.grace_seconds
    assert s.server.max_connection_age_seconds > 0
    sidecar = _pod(_find("Deployment", "invoices"))
    pauses = {c["name"]: c["lifecycle"]["preStop"]["exec"]["command"] for c in sidecar["containers"]
              if "lifecycle" in c}
    assert pauses["tenantgate"] == pauses["envoy"]  # Envoy is never left without its PDP


def test_the_central_config_map_is_a_valid_mtls_configuration(tmp_path):
    s = _load_config(tmp_path, "tenantgate-config")
    tls = s.server.tls
    mounts = {m["name"]: m["mountPath"] for m in _container(_find("Deployment", "tenantgate"), "tenantgate")[
        "volumeMounts"]}
    assert tls.cert_file.startswith(mounts["tls"] + "/") and tls.client_ca_file.startswith(mounts["tls"] + "/")
    assert "spiffe://cluster.local/ns/edge/sa/envoy" in tls.allowed_callers
    assert s.policies.dir == mounts["policies"] and s.server.health_listen.endswith(":8081")
    assert s.ext_authz.routes and s.grants.store.startswith("postgresql://")


def test_the_sidecar_tenantgate_listens_only_on_the_pod_loopback(tmp_path):
    s = _load_config(tmp_path, "invoices-tenantgate")
    assert s.server.listen.startswith("127.0.0.1:") and s.server.health_listen.startswith("0.0.0.0:")
    bootstrap = parse_bootstrap(yaml.safe_load(_find("ConfigMap", "invoices-envoy")["data"]["envoy.yaml"]))
    (cluster,) = [c for c in bootstrap.static_resources.clusters if c.name == "tenantgate"]
    address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert f"{address.address}:{address.port_value}" == s.server.listen
    authz = _ext_authz(bootstrap)
    assert authz.failure_mode_allow is False and authz.grpc_service.timeout.ToMilliseconds() > 0


def test_the_policy_config_maps_load_as_a_valid_policy_set(tmp_path):
    d = _find("Deployment", "tenantgate")
    (volume,) = [v for v in _pod(d)["volumes"] if v["name"] == "policies"]
    for source in volume["projected"]["sources"]:
        data = _find("ConfigMap", source["configMap"]["name"])["data"]
        items = source["configMap"].get("items") or [{"key": k, "path": k} for k in data]
        assert {i["key"] for i in items} == set(data), "every tenant policy key needs an items entry"
        for item in items:
            target = tmp_path / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(data[item["key"]])
    compiled = load_policies(tmp_path)
    assert compiled.policy_count > 1


# ------------------------------------------------------------------------------------------------ Envoy


def test_envoy_bootstrap_parses_strictly_and_fails_closed_with_an_explicit_timeout():
    bootstrap = parse_bootstrap(yaml.safe_load((DEPLOY / "envoy" / "envoy.yaml").read_text()))
    authz = _ext_authz(bootstrap)
    assert authz.failure_mode_allow is False
    assert authz.include_peer_certificate is True
    assert authz.transport_api_version == config_source_pb2.V3
    assert 0 < authz.grpc_service.timeout.ToMilliseconds() <= 1000
    clusters = {c.name: c for c in bootstrap.static_resources.clusters}
    target = clusters[authz.grpc_service.envoy_grpc.cluster_name]
    options = target.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "HttpProtocolOptions" in options.type_url  # gRPC needs HTTP/2 to TenantGate
    assert target.transport_socket.name == "envoy.transport_sockets.tls"  # mTLS to the central PDP
    central = _find("Service", "tenantgate")
    address = target.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address
    assert address.port_value == central["spec"]["ports"][0]["port"]
    assert address.address.startswith(f"{central['metadata']['name']}.tenantgate.svc")


def test_the_bootstrap_parser_refuses_unknown_fields_even_inside_typed_config():
    data = yaml.safe_load((DEPLOY / "envoy" / "envoy.yaml").read_text())
    broken = copy.deepcopy(data)
    broken["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "http_filters"][0]["typed_config"]["failure_mode_alow"] = True
    with pytest.raises(json_format.ParseError):
        parse_bootstrap(broken)
    unknown_type = copy.deepcopy(data)
    unknown_type["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"][
        "@type"] = "type.googleapis.com/envoy.extensions.filters.network.nope.v3.Nope"
    with pytest.raises(json_format.ParseError):
        parse_bootstrap(unknown_type)


# ------------------------------------------------------------------------------------------------ Istio


def test_istio_extension_provider_has_an_explicit_timeout_and_fails_closed():
    (operator,) = _documents(DEPLOY / "istio" / "mesh-config.yaml")
    assert operator["apiVersion"] == "install.istio.io/v1alpha1" and operator["kind"] == "IstioOperator"
    (provider,) = operator["spec"]["meshConfig"]["extensionProviders"]
    grpc_provider = provider["envoyExtAuthzGrpc"]
    assert grpc_provider["timeout"] == "0.25s"  # never Istio's 600 s default
    assert grpc_provider["failOpen"] is False
    service = _find("Service", "tenantgate")
    assert grpc_provider["service"] == "tenantgate.tenantgate.svc.cluster.local"
    assert grpc_provider["port"] == service["spec"]["ports"][0]["port"]


def test_istio_networkpolicy_lets_the_central_pods_reach_istiod():
    (extra,) = _documents(DEPLOY / "istio" / "networkpolicy.yaml")
    _validator().validate(extra, K8S_VERSION, strict=True)
    labels = _find("Deployment", "tenantgate")["spec"]["template"]["metadata"]["labels"]
    assert extra["kind"] == "NetworkPolicy" and extra["spec"]["policyTypes"] == ["Egress"]
    assert extra["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    (rule,) = extra["spec"]["egress"]
    (peer,) = rule["to"]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "istio-system"}
    assert peer["podSelector"]["matchLabels"] == {"app": "istiod"}
    assert rule["ports"] == [{"port": 15012, "protocol": "TCP"}]


def test_istio_authorization_policy_sends_requests_to_the_tenantgate_provider():
    policies = {d["metadata"]["name"]: d for d in _documents(DEPLOY / "istio" / "authorization-policy.yaml")}
    custom = policies["invoices-tenantgate"]
    assert custom["apiVersion"] == "security.istio.io/v1" and custom["kind"] == "AuthorizationPolicy"
    assert custom["spec"]["action"] == "CUSTOM"
    (operator,) = _documents(DEPLOY / "istio" / "mesh-config.yaml")
    assert custom["spec"]["provider"]["name"] == operator["spec"]["meshConfig"]["extensionProviders"][0]["name"]
    assert custom["spec"]["selector"]["matchLabels"] == _find("Deployment", "invoices")["spec"]["selector"][
        "matchLabels"]
    # Broad match: every operation except the health path goes to TenantGate (its routes default-deny).
    (rule,) = custom["spec"]["rules"]
    (operation,) = rule["to"]
    assert set(operation["operation"]) == {"notPaths"}
    callers = policies["tenantgate-callers"]
    assert callers["spec"]["action"] == "ALLOW"
    assert callers["spec"]["selector"]["matchLabels"].items() <= _find("Deployment", "tenantgate")["spec"][
        "template"]["metadata"]["labels"].items()
