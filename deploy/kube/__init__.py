"""A local Kubernetes control plane for testing the manifests: `python -m deploy.kube up|down|status|env`.

Real kube-apiserver, kube-controller-manager and kube-scheduler on etcd, with kwok simulating the
nodes and their pods and metrics-server serving the resource-metrics API the autoscalers read.
The binaries come from `make k8s-tools` (deploy/kube/tools/build.sh).
"""
