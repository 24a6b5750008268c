//! What deploy/ ships (issue 30), checked against gatehouse itself: the systemd unit and
//! the Kubernetes manifests. The container image has its own module (`container`).

mod kubernetes;
mod systemd;
