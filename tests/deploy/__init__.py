"""Tests of the deploy files: the Dockerfile, the Kubernetes manifests, the nginx and Envoy configs."""
