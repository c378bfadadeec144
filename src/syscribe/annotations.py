"""The names of the annotations syscribe reads and writes, spelled once.

Constants only, no imports: the OCI hook loads this on its lean path, before it knows
whether a container asks for anything.
"""

# syscribe's own request: `[if:<path>;]of:<path>`, pod-wide or `TRACE_SYSCALL/<container name>`.
TRACE_SYSCALL = "io.containers.trace-syscall"

# The kubelet's names for a container's pod, set by CRI-O (and podman for pod members) as annotations.
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"

# CRI-O's own annotations: ContainerType "sandbox" marks a pod's infra container, whose SandboxID is
# its own id; Labels is a JSON object of the pod's labels.
CRIO_CONTAINER_TYPE = "io.kubernetes.cri-o.ContainerType"
CRIO_SANDBOX_ID = "io.kubernetes.cri-o.SandboxID"
CRIO_LABELS = "io.kubernetes.cri-o.Labels"
CRIO_PREFIX = "io.kubernetes.cri-o."

# containerd's CRI plugin spells the same facts differently.
CONTAINERD_POD_NAME = "io.kubernetes.cri.sandbox-name"
CONTAINERD_POD_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
CONTAINERD_POD_UID = "io.kubernetes.cri.sandbox-uid"
CONTAINERD_CONTAINER_NAME = "io.kubernetes.cri.container-name"
CONTAINERD_CONTAINER_TYPE = "io.kubernetes.cri.container-type"
CONTAINERD_PREFIX = "io.kubernetes.cri."

# Every kubelet-set key starts so (pod labels with it are the kubelet's, not the user's).
KUBERNETES_PREFIX = "io.kubernetes."

# The ContainerType of a pod's infra container.
SANDBOX = "sandbox"

# A static pod's mirror in the API server carries this annotation on the Pod object.
KUBE_MIRROR = "kubernetes.io/config.mirror"
