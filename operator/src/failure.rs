//! The one vocabulary for what goes wrong with a `SocketConnector`: a [`Failure`]'s name is at
//! once the `reason` label of `socket_connector_operator_reconcile_errors_total`, the reason of
//! its status conditions and the reason of its Event.

/// Why a reconcile did not roll the connector out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The resource does not deserialize (an old or hand-edited object).
    InvalidObject,
    /// The embedded connector configuration fails the connector's own checks.
    InvalidConfig,
    /// Two replicas would share one access token.
    DuplicateAccessToken,
    /// More replicas than access tokens.
    NotEnoughAccessTokens,
    /// ThingsBoard credentials or TLS settings that cannot work together.
    InvalidCredentials,
    /// Queue settings the connector would refuse.
    InvalidQueue,
    /// The memory limit is smaller than the queue needs.
    QueueExceedsMemory,
    /// A network policy CIDR that does not parse.
    InvalidNetworkPolicy,
    /// A Secret, ConfigMap or key that the pods mount does not exist (the kubelet says so).
    SecretMissing,
    /// The kubelet cannot set up another volume of the pods (a claim, a host path).
    VolumeMountFailed,
    /// The API server refused a child for good (quota, admission, an immutable field, RBAC).
    ApplyFailed,
    /// A transient Kubernetes API error; retried with backoff.
    ApiError,
    /// The object has no namespace.
    NoNamespace,
}

impl Failure {
    pub const ALL: &'static [Self] = &[
        Self::InvalidObject,
        Self::InvalidConfig,
        Self::DuplicateAccessToken,
        Self::NotEnoughAccessTokens,
        Self::InvalidCredentials,
        Self::InvalidQueue,
        Self::QueueExceedsMemory,
        Self::InvalidNetworkPolicy,
        Self::SecretMissing,
        Self::VolumeMountFailed,
        Self::ApplyFailed,
        Self::ApiError,
        Self::NoNamespace,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Self::InvalidObject => "InvalidObject",
            Self::InvalidConfig => "InvalidConfig",
            Self::DuplicateAccessToken => "DuplicateAccessToken",
            Self::NotEnoughAccessTokens => "NotEnoughAccessTokens",
            Self::InvalidCredentials => "InvalidCredentials",
            Self::InvalidQueue => "InvalidQueue",
            Self::QueueExceedsMemory => "QueueExceedsMemory",
            Self::InvalidNetworkPolicy => "InvalidNetworkPolicy",
            Self::SecretMissing => "SecretMissing",
            Self::VolumeMountFailed => "VolumeMountFailed",
            Self::ApplyFailed => "ApplyFailed",
            Self::ApiError => "ApiError",
            Self::NoNamespace => "NoNamespace",
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}
