"""Deployment assets for Parley: the local development stack and Kubernetes manifests."""
