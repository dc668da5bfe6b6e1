//! Embedded Kubernetes API server (placeholder, being built).
