//! Kubernetes operator for socket connectors: reconciles `SocketConnector` resources into a
//! ConfigMap, one Deployment per gateway identity and a Service.
//!
//! Pipeline: read → [`validate`] (pure) → [`build`] (pure) → apply (server-side apply)
//! → delete orphans → status ([`status`], pure conditions from the Deployments, the pods' `/status`
//! and the kubelet's Events). [`controller`] holds the IO. The operator reads no Secret data; with
//! `--watch-secrets` it watches their metadata ([`secrets`]).

pub mod build;
pub mod controller;
pub mod crd;
pub mod drift;
pub mod failure;
pub mod fixtures;
pub mod leader;
pub mod metrics;
pub mod secrets;
pub mod status;
pub mod validate;
