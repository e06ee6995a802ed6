"""What QA engineers, plant IT and Kubernetes see: CLI views, dashboard, metrics, health."""
