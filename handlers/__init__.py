"""Thin edges: Slack listeners and the Argo exit-hook endpoint."""
