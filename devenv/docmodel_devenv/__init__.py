"""Local Kubernetes control plane, fake and local nodes, and S3 (MinIO) for tests and development."""
