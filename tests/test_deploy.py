"""Dockerfile and deploy/ (kustomize), checked statically with the real tools.

`kubectl kustomize` renders each overlay; `kubernetes-validate --strict` checks every built-in
kind against the Kubernetes OpenAPI schemas it ships (offline); the CRD kinds it has no schema
for are checked against deploy/schemas/; yamllint and hadolint lint the sources. The other tests
assert, on the rendered objects, what an operator relies on: probes on the app's real endpoints,
a grace period longer than the drain, non-root read-only containers, an autoscaler metric the
app really exports. No Docker engine or cluster is needed.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from service import metrics
from service.settings import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
OVERLAYS = ("gpu", "cpu")
# The venv's console scripts sit next to its interpreter (also in CI's fresh clone).
VENV_BIN = Path(sys.executable).parent
IN_CI = os.environ.get("CI", "").lower() not in ("", "0", "false")

# Kubernetes versions the manifests are validated against: the oldest supported, and None for
# the newest whose schemas the installed kubernetes-validate ships (its default).
K8S_VERSIONS = ("1.28.0", None)
# Kinds kubernetes-validate has no schema for, and the schema this project checks them with.
SERVICE_MONITOR_SCHEMA = DEPLOY / "schemas" / "servicemonitor.monitoring.coreos.com_v1.subset.json"
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA}
# The contract's endpoints (shared/CONTRACT.md).
HEALTHZ, READYZ, METRICS = "/healthz", "/readyz", "/metrics"


def tool(name: str) -> str:
    """Path of a command-line tool, the venv's first; missing skips locally and fails in CI."""
    for candidate in (VENV_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    message = f"{name} is not installed (kubectl: apt; the others: pip, the project's test extra)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def python_module(name: str):
    """Import a test dependency; missing skips locally and fails in CI, like a tool."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        if IN_CI:
            pytest.fail(f"{name} is not installed (the project's test extra)")
        pytest.skip(f"{name} is not installed")


def run(*cmd: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs
    )


@functools.cache
def rendered_text(overlay: str) -> str:
    result = run(tool("kubectl"), "kustomize", DEPLOY / "overlays" / overlay)
    assert result.returncode == 0, result.stderr
    return result.stdout


def render(overlay: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(rendered_text(overlay)) if doc]


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def pod_spec(docs: list[dict]) -> dict:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def server(docs: list[dict]) -> dict:
    (container,) = [c for c in pod_spec(docs)["containers"] if c["name"] == "server"]
    return container


def settings_configmap(docs: list[dict]) -> dict:
    """The ConfigMap the server takes its W2V_* environment from."""
    env_from = server(docs).get("envFrom", [])
    refs = [e["configMapRef"]["name"] for e in env_from if "configMapRef" in e]
    assert len(refs) == 1, refs
    return one(docs, "ConfigMap", refs[0])["data"]


def exported_metric_names() -> set[str]:
    """Every series name the app's registry exposes on /metrics, suffixes included."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in metrics.REGISTRY.collect():
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


@pytest.fixture(params=OVERLAYS)
def overlay(request) -> str:
    return request.param


# ---- the real tools ---------------------------------------------------------------------------


@pytest.mark.parametrize("version", K8S_VERSIONS, ids=lambda v: v or "newest")
def test_overlay_renders_and_validates_strictly(overlay, version, tmp_path):
    docs = render(overlay)
    manifest = tmp_path / f"{overlay}.yaml"
    manifest.write_text(rendered_text(overlay))
    version_args = ("-k", version) if version else ()
    result = run(tool("kubernetes-validate"), "--strict", *version_args, manifest)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    passed = re.findall(r"passed for resource (\S+)", output)
    builtin = [d for d in docs if (d["apiVersion"], d["kind"]) not in CRD_SCHEMAS]
    assert len(passed) == len(builtin), output
    # kubernetes-validate only warns about kinds it has no schema for: those must be ours.
    unknown = set(re.findall(r"find schema for kind (\S+) with api version (\S+)", output))
    assert unknown == {(k, v) for v, k in CRD_SCHEMAS if any(d["kind"] == k for d in docs)}


def test_kubernetes_validate_strict_rejects_unknown_fields(tmp_path):
    """Guards the check above: a misspelt field must fail, not pass silently."""
    docs = render("gpu")
    server(docs)["livenessprobe"] = server(docs).pop("livenessProbe")
    manifest = tmp_path / "typo.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    result = run(tool("kubernetes-validate"), "--strict", manifest)
    assert result.returncode != 0
    assert "livenessprobe" in result.stdout + result.stderr


def test_crd_objects_match_their_schema(overlay):
    jsonschema = python_module("jsonschema")
    for doc in render(overlay):
        key = (doc["apiVersion"], doc["kind"])
        if key in CRD_SCHEMAS:
            schema = json.loads(CRD_SCHEMAS[key].read_text())
            jsonschema.validate(doc, schema)
            bad = json.loads(json.dumps(doc))
            bad["spec"]["endpoints"][0]["interval"] = "15 seconds"
            with pytest.raises(jsonschema.ValidationError):
                jsonschema.validate(bad, schema)


def test_yamllint():
    result = run(tool("yamllint"), "--strict", "-c", DEPLOY / ".yamllint", DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_with_every_ignore_explained():
    result = run(tool("hadolint"), "--failure-threshold", "style", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore" in line:
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and "hadolint" not in before, (
                f"Dockerfile:{i + 1}: explain the ignored rule in a comment on the line above"
            )


# ---- Dockerfile ---------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """[(INSTRUCTION, arguments)] per stage, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), " ".join(args.split())))
    return stages


def test_dockerfile_final_stage():
    preamble, *stages = dockerfile_stages()
    assert len(stages) >= 2, "multi-stage build"
    base = dict(a.split("=", 1) for i, a in preamble if i == "ARG")["BASE_IMAGE"]
    assert re.fullmatch(r"pytorch/pytorch:[\d.]+-cuda[\d.]+-cudnn\d+-runtime", base), base
    final = stages[-1]
    assert final[0] == ("FROM", "${BASE_IMAGE} AS runtime")
    args = {i: [a for j, a in final if j == i] for i in {j for j, _ in final}}

    (user,) = args["USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0, "numeric non-root USER"
    (entrypoint,) = args["ENTRYPOINT"]
    (cmd,) = args["CMD"]
    assert json.loads(entrypoint) + json.loads(cmd) == ["python", "-m", "service", "serve"]
    (healthcheck,) = args["HEALTHCHECK"]
    assert "/opt/w2v/healthcheck.py" in healthcheck
    env = " ".join(args["ENV"])
    assert "W2V_HOST=0.0.0.0" in env and "W2V_PORT=8000" in env
    assert "W2V_MODEL=${MODEL_ID:+" in env, "a baked model becomes the default W2V_MODEL"

    runs = " ".join(args["RUN"])
    assert not re.search(r"apt-get|apk |gcc|g\+\+|build-essential", runs), "no compilers"
    for install in re.findall(r"pip install [^&]*", runs):
        assert "--no-index" in install and "--no-cache-dir" in install, install
        assert not re.search(r"(^|\s)(-e|--editable)\s", install), install
        assert not re.search(r"\btorch\b", install), "torch comes from the base image"
    assert re.search(r"pip install [^&]*--no-deps [^&]*/dist/w2v_service-\*\.whl", runs)


def test_dockerfile_builds_from_allowed_context_only():
    """Every file the Dockerfile copies from the context is kept by the .dockerignore allowlist."""
    patterns = (ROOT / ".dockerignore").read_text().splitlines()
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    assert "*" in patterns, ".dockerignore is an allowlist"
    assert not {".venv", ".git", "tests", "training"} & set(allowed)
    copied = []
    for stage in dockerfile_stages():
        for instruction, args in stage:
            if instruction == "COPY" and "--from=" not in args:
                copied += [a for a in args.split()[:-1] if not a.startswith("--")]
    assert copied
    for source in copied:
        source = source.rstrip("/").removeprefix("./")
        assert any(source == a or source.startswith(a + "/") for a in allowed), source
        # README.md is the package's readme (pyproject.toml), needed to build the wheel.
        if source != "README.md":
            assert (ROOT / source).exists(), source


def test_requirements_script_drops_only_torch():
    result = run(sys.executable, DEPLOY / "docker" / "requirements.py", ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stderr
    emitted = result.stdout.split()
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert [d for d in declared if not re.match(r"torch\b(?![-_.\w])", d)] == emitted


def test_healthcheck_script_calls_healthz():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(200 if self.path == HEALTHZ else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    script = DEPLOY / "docker" / "healthcheck.py"
    env = {**os.environ, "W2V_HOST": "0.0.0.0", "W2V_PORT": str(httpd.server_address[1])}
    try:
        assert run(sys.executable, script, env=env).returncode == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert run(sys.executable, script, env=env).returncode == 1  # nothing listens any more


# ---- rendered manifests -----------------------------------------------------------------------


def test_settings_configmap_holds_valid_settings(overlay, monkeypatch):
    data = settings_configmap(render(overlay))
    for key, value in data.items():
        assert key.startswith(ENV_PREFIX), key
        field = key.removeprefix(ENV_PREFIX).lower()
        assert field in Settings.model_fields, f"{key}: no such setting"
        monkeypatch.setenv(key, value)
    Settings()  # the values parse and pass the validators
    for var in server(render(overlay)).get("env", []):
        if var["name"].startswith(ENV_PREFIX):
            assert var["name"].removeprefix(ENV_PREFIX).lower() in Settings.model_fields


def test_probes_point_at_the_contract_endpoints(overlay):
    docs = render(overlay)
    container = server(docs)
    assert container["startupProbe"]["httpGet"]["path"] == HEALTHZ
    assert container["livenessProbe"]["httpGet"]["path"] == HEALTHZ
    assert container["readinessProbe"]["httpGet"]["path"] == READYZ
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    port = int(settings_configmap(docs)["W2V_PORT"])
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == port
    # Loading a model from a cold volume takes minutes: the startup probe must allow for it.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    service = one(docs, "Service")
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    monitor = one(docs, "ServiceMonitor")
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["path"] == METRICS
        assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]}


def test_probe_paths_are_routes_of_the_app():
    try:
        from service.app import create_app
    except ModuleNotFoundError as exc:
        if exc.name != "service.app":
            raise
        # Only while service/app.py is being written; the contract paths are checked above.
        pytest.skip("service.app does not exist yet")
    from starlette.routing import Match

    app = create_app(Settings())  # routes only: the lifespan (model loading) does not run

    def is_get_route(path: str) -> bool:
        # Match like a request does: FastAPI may nest included routers instead of flattening.
        scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
        return any(route.matches(scope)[0] == Match.FULL for route in app.router.routes)

    for path in (HEALTHZ, READYZ, METRICS):
        assert is_get_route(path), f"GET {path} is not a route of service.app"
    assert not is_get_route("/no-such-endpoint")


def test_grace_period_outlasts_prestop_and_drain(overlay):
    docs = render(overlay)
    spec = pod_spec(docs)
    prestop = server(docs)["lifecycle"]["preStop"]
    if "sleep" in prestop:  # the native sleep action (Kubernetes >= 1.30)
        pause = prestop["sleep"]["seconds"]
    else:
        command = prestop["exec"]["command"]
        assert command[0] == "sleep", command
        pause = float(command[1])
    assert pause > 0, "endpoints must be removed before the drain starts"
    drain = float(
        settings_configmap(docs).get(
            "W2V_DRAIN_TIMEOUT", Settings.model_fields["drain_timeout"].default
        )
    )
    assert spec["terminationGracePeriodSeconds"] - pause > drain


def test_containers_run_non_root_read_only(overlay):
    spec = pod_spec(render(overlay))
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    (user,) = [a for i, a in dockerfile_stages()[-1] if i == "USER"]
    assert pod["runAsUser"] == int(user.split(":")[0]), "the image's user"
    assert spec["enableServiceLinks"] is False, "service links would inject W2V_* variables"
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for container in spec["initContainers"] + spec["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"] and not sc["capabilities"].get("add")
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert tmp and "emptyDir" in volumes[tmp[0]["name"]], "a writable /tmp"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


def test_gpu_overlay_requests_one_gpu_on_gpu_nodes():
    docs = render("gpu")
    spec = pod_spec(docs)
    resources = server(docs)["resources"]
    # One server process per GPU: one GPU per pod, scale out with replicas.
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert resources["requests"]["nvidia.com/gpu"] == "1"
    assert any(k.startswith("nvidia.com/") for k in spec["nodeSelector"])
    assert any(
        t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in spec["tolerations"]
    )
    assert settings_configmap(docs)["W2V_DEVICE"] == "cuda"


def test_cpu_overlay_has_no_gpu():
    docs = render("cpu")
    assert "nvidia.com/gpu" not in rendered_text("cpu").replace("nvidia.com/gpu.present", "")
    assert settings_configmap(docs)["W2V_DEVICE"] == "cpu"
    assert "tolerations" not in pod_spec(docs)


def test_autoscaler_scales_on_an_exported_metric(overlay):
    docs = render(overlay)
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert hpa["spec"]["minReplicas"] >= 2
    hpa_metrics = hpa["spec"]["metrics"]
    assert hpa_metrics and all(m["type"] == "Pods" for m in hpa_metrics), "load, not CPU"

    # prometheus-adapter turns each series into the per-pod custom metric the HPA asks for.
    adapter = yaml.safe_load((DEPLOY / "prometheus-adapter" / "values.yaml").read_text())
    served = {}
    for rule in adapter["rules"]["custom"]:
        series = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["seriesQuery"]).group()
        match = re.fullmatch(rule["name"]["matches"], series)
        assert match, rule
        served[match.expand(rule["name"]["as"].replace("${", "\\g<").replace("}", ">"))] = series
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    exported = exported_metric_names()
    for metric in hpa_metrics:
        name = metric["pods"]["metric"]["name"]
        assert name in served, f"{name}: no prometheus-adapter rule"
        assert served[name] in exported, f"{served[name]}: not exported by service.metrics"
        assert served[name] in metrics.AUTOSCALING_METRICS
        assert float(metric["pods"]["target"]["averageValue"]) > 0


def test_selectors_match_the_pods(overlay):
    docs = render(overlay)
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    selectors = [
        one(docs, "Deployment")["spec"]["selector"]["matchLabels"],
        one(docs, "Service")["spec"]["selector"],
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector and selector.items() <= pod_labels.items()
    service_labels = one(docs, "Service")["metadata"]["labels"]
    assert one(docs, "ServiceMonitor")["spec"]["selector"]["matchLabels"].items() <= (
        service_labels.items()
    )
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb.get("maxUnavailable", 0) >= 1 or pdb["minAvailable"] < 2
    strategy = one(docs, "Deployment")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0, "a rollout never goes below the serving capacity"


def test_model_volume_is_filled_by_the_init_container(overlay):
    docs = render(overlay)
    spec = pod_spec(docs)
    volumes = {v["name"]: v for v in spec["volumes"]}
    (init,) = spec["initContainers"]
    assert init["image"] == server(docs)["image"]
    assert init["command"] == ["python", "/opt/w2v/fetch_model.py"]
    model = one(docs, "ConfigMap", init["envFrom"][0]["configMapRef"]["name"])["data"]
    assert model["MODEL_ID"]

    def mount_of(container: dict, path: str) -> dict:
        (mount,) = [m for m in container["volumeMounts"] if path.startswith(m["mountPath"] + "/")]
        return mount

    init_mount = mount_of(init, model["MODEL_DIR"])
    claim = volumes[init_mount["name"]]["persistentVolumeClaim"]["claimName"]
    one(docs, "PersistentVolumeClaim", claim)
    assert not init_mount.get("readOnly")
    # The server reads the directory the init container fills, read-only.
    paths = [e.split("=", 1)[-1] for e in settings_configmap(docs)["W2V_MODEL"].split(",")]
    assert model["MODEL_DIR"] in paths
    server_mount = mount_of(server(docs), model["MODEL_DIR"])
    assert server_mount["name"] == init_mount["name"] and server_mount["readOnly"] is True


def load_fetch_model():
    path = DEPLOY / "docker" / "fetch_model.py"
    spec = importlib.util.spec_from_file_location("fetch_model", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fetch_model_downloads_once(tmp_path, monkeypatch):
    fetch_model = load_fetch_model()
    calls = []

    def fake_snapshot_download(repo_id, revision, local_dir, **kwargs):
        calls.append((repo_id, revision))
        Path(local_dir).mkdir(parents=True)
        (Path(local_dir) / "config.json").write_text("{}")

    monkeypatch.setattr("huggingface_hub.snapshot_download", fake_snapshot_download)
    target = tmp_path / "models" / "asr"
    fetch_model.fetch("org/model", target, "main")
    fetch_model.fetch("org/model", target, "main")  # already there: no second download
    assert calls == [("org/model", "main")]
    assert (target / "config.json").is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["asr"], "no partial left behind"
    fetch_model.fetch("org/model", target, "abc123")  # a new revision replaces the old
    assert calls[-1] == ("org/model", "abc123") and (target / "config.json").is_file()
    assert fetch_model.main([]) == 0  # no MODEL_ID: the embedded model, nothing to do


def test_dashboard_has_the_operator_panels():
    dashboard = json.loads(
        (DEPLOY / "components" / "monitoring" / "dashboards" / "w2v-service.json").read_text()
    )
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in dashboard["panels"]}
    wanted = {
        "status": "w2v_requests_total",
        "latency": "w2v_request_duration_seconds_bucket",
        "queue depth": "w2v_queue_depth",
        "batch size": "w2v_batch_size",
        "audio seconds": "w2v_audio_seconds_total",
        "active streams": "w2v_active_streams",
    }
    for words, metric in wanted.items():
        assert any(words in t.lower() and metric in e for t, e in exprs.items()), words
    assert any("histogram_quantile(0.99" in e for e in exprs.values()), "latency percentiles"
    exported = exported_metric_names()
    for title, expr in exprs.items():
        for name in re.findall(r"\bw2v_[a-z_]+", expr):
            assert name in exported, f"{title}: {name} is not exported by service.metrics"
    rendered = one(render("gpu"), "ConfigMap", "w2v-service-dashboard")
    assert rendered["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(rendered["data"]["w2v-service.json"]) == dashboard


def test_readme_documents_operations():
    readme = (DEPLOY / "README.md").read_text()
    for needle in (
        "kubectl apply -k deploy/overlays/gpu",
        "Rolling updates without dropped requests",
        "W2V_DRAIN_TIMEOUT",
        *metrics.AUTOSCALING_METRICS,
        "ServiceMonitor",
        "prometheus-adapter",
        "Alert on",
    ):
        assert needle in readme, needle
