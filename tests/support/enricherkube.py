"""The enricher's view of the real API server (tests/support/kubeapi.py): a test's namespace, a node
name of its own, and the enricher's service account bound to the ClusterRole that
packaging/kubernetes/enricher.yaml ships, so the tests prove that role is enough."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import yaml

from tests.support.kubeapi import REPO, KubeAPI, Request, pod_manifest, service_account_user

MANIFEST = REPO / "packaging" / "kubernetes" / "enricher.yaml"
ACCOUNT = "syscribe-enricher"


def shipped_cluster_role() -> dict[str, Any]:
    for doc in yaml.safe_load_all(MANIFEST.read_text()):
        if doc and doc.get("kind") == "ClusterRole":
            role: dict[str, Any] = doc
            return role
    raise AssertionError(f"no ClusterRole in {MANIFEST}")


@dataclass
class EnricherCluster:
    kube: KubeAPI
    namespace: str
    node: str  # this test's own: no other test's pods are on it
    token: str  # of the service account `syscribe-enricher` in `namespace`

    @property
    def user(self) -> str:
        return service_account_user(self.namespace, ACCOUNT)

    @classmethod
    def make(cls, kube: KubeAPI, namespace: str) -> EnricherCluster:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        rbac = client.RbacAuthorizationV1Api(kube.client())
        role = shipped_cluster_role()
        try:
            rbac.create_cluster_role(role)
        except ApiException as err:
            if err.status != 409:
                raise
            rbac.replace_cluster_role(role["metadata"]["name"], role)
        token = kube.token_for(namespace, ACCOUNT)
        rbac.create_cluster_role_binding(
            {
                "metadata": {"name": f"{ACCOUNT}-{namespace}"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": role["metadata"]["name"]},
                "subjects": [{"kind": "ServiceAccount", "name": ACCOUNT, "namespace": namespace}],
            }
        )
        made = cls(kube, namespace, f"node-{namespace}", token)
        # RBAC reads bindings through a watch: wait until this one counts, so no request gets a 403.
        for _ in range(600):
            if kube.allowed(made.user, "watch", "pods"):
                return made
            time.sleep(0.05)
        raise AssertionError(f"{made.user} never got the ClusterRole {role['metadata']['name']}")

    def api_client(self) -> Any:
        """A kubernetes ApiClient that authenticates with the service account's token."""
        from kubernetes import client

        config = client.Configuration()
        config.host = self.kube.url
        config.ssl_ca_cert = str(self.kube.ca_file)
        config.api_key = {"authorization": self.token}
        config.api_key_prefix = {"authorization": "Bearer"}
        return client.ApiClient(config)

    def requests(self) -> list[Request]:
        """What the service account asked the API server, in order."""
        return self.kube.requests(self.user)

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.kube.client())

    def create(self, name: str, node: str | None = None, **labels: str) -> str:
        """A pod in the test's namespace on `node` (default: the test's node); returns its uid."""
        pod = pod_manifest(name, node or self.node, labels)
        made = self._core().create_namespaced_pod(self.namespace, pod)
        uid: str = made.metadata.uid
        return uid

    def create_many(self, names: list[str]) -> list[str]:
        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(self.create, names))

    def get(self, name: str) -> dict[str, Any]:
        got: dict[str, Any] = self.kube.client().sanitize_for_serialization(
            self._core().read_namespaced_pod(name, self.namespace)
        )
        return got

    def label(self, name: str, **labels: str) -> None:
        """Sets these labels (others stay)."""
        self._core().patch_namespaced_pod(name, self.namespace, {"metadata": {"labels": labels}})

    def delete(self, name: str) -> None:
        self._core().delete_namespaced_pod(name, self.namespace, grace_period_seconds=0)
