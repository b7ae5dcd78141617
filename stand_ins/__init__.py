"""Local stand-ins for the outside systems (Argo Server, Slack, S3), for tests and the demo."""
