"""Command line of the local control plane: ``python -m deploy.kube up|down|status|env``."""

from __future__ import annotations

import argparse
import sys

from deploy.kube import cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.kube",
        description="A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, "
        "kube-scheduler, kwok, metrics-server) built by `make k8s-tools`.",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start it (a fresh cluster) and wait until it answers")
    sub.add_parser("down", help="stop what `up` started")
    sub.add_parser("status", help="list the running processes; exit code 3 if any is missing")
    sub.add_parser("env", help="print KUBECONFIG=… for a shell")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            cluster.up(progress=not args.quiet)
        elif args.command == "down":
            cluster.down(progress=not args.quiet)
        elif args.command == "env":
            print(f"export KUBECONFIG={cluster.kubeconfig_path()}")
        else:
            pids = cluster.running()
            for name in cluster.PROCESSES:
                print(f"{name:<24} {'pid ' + str(pids[name]) if name in pids else 'not running'}")
            return 0 if len(pids) == len(cluster.PROCESSES) else 3
    except cluster.KubeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
