"""The Argo side of argo-chatops: the REST client, Workflow manifests and shipped templates."""
