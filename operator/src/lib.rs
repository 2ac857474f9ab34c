//! Kubernetes operator for socket connectors: reconciles `SocketConnector` resources into a
//! ConfigMap, one Deployment per gateway identity and a Service.
//!
//! Pipeline: read (Secrets) → [`validate`] (pure) → [`build`] (pure) → apply (server-side apply)
//! → delete orphans → status ([`status`], pure conditions). [`controller`] holds the IO.

pub mod build;
pub mod controller;
pub mod crd;
pub mod drift;
pub mod failure;
pub mod fixtures;
pub mod leader;
pub mod metrics;
pub mod status;
pub mod validate;
