"""argo-chatops: run Argo Workflows from Slack."""
