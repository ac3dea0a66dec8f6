//! Cordon, drain and uncordon a Keelson node through the Kubernetes API.
