//! The agent's error type: every failure a caller can see, with a stable code.

use berth_proto::agent as pb;

/// An agent failure. `code()` is stable and documented in docs/errors.md;
/// the message is for humans.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid workspace name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("invalid resources: {0}")]
    InvalidResources(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidImage { reference: String, reason: String },
    #[error("image {0} not found in its registry")]
    ImageNotFound(String),
    #[error("registry refused credentials for {0}")]
    RegistryUnauthorized(String),
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    #[error("blob {expected} from the registry has digest {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("volume of {requested} bytes does not fit: {available} bytes free on the node")]
    DiskTooLarge { requested: u64, available: u64 },
    #[error("workspace {0} not found")]
    NotFound(String),
    #[error("workspace {0} already exists")]
    AlreadyExists(String),
    #[error("stale generation {got} for workspace {name}: it is at {current}")]
    StaleGeneration {
        name: String,
        got: u64,
        current: u64,
    },
    #[error("workspace {name} is {state}: {action} not possible")]
    Conflict {
        name: String,
        state: String,
        action: &'static str,
    },
    #[error("nothing accepts connections on port {port} of workspace {name}: {reason}")]
    PortClosed {
        name: String,
        port: u16,
        reason: String,
    },
    #[error("no free address left in the node subnet")]
    AddressesExhausted,
    #[error("containerd: {context}: {status}")]
    Containerd {
        context: String,
        status: tonic::Status,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("network setup: {0}")]
    Network(String),
    #[error("volume: {0}")]
    Volume(String),
    #[error("backup: {0}")]
    Backup(String),
    /// A restore was asked for a backup its store does not have.
    #[error("{0}")]
    BackupMissing(String),
    /// A repository workspace's clone or configuration failed: the
    /// repository's or the request's doing.
    #[error("{message}")]
    Init {
        code: berth_proto::codes::Code,
        message: String,
    },
    /// A file operation refused (its code one of `Code::is_file`).
    #[error("{message}")]
    File {
        code: berth_proto::codes::Code,
        message: String,
    },
}

impl AgentError {
    /// The stable machine-readable code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidName { .. } => "invalid_name",
            Self::InvalidResources(_) => "invalid_resources",
            Self::InvalidRequest(_) => "invalid_request",
            Self::InvalidImage { .. } => "invalid_image",
            Self::ImageNotFound(_) => "image_not_found",
            Self::RegistryUnauthorized(_) => "registry_unauthorized",
            Self::Registry { .. } => "registry_error",
            Self::DigestMismatch { .. } => "digest_mismatch",
            Self::DiskTooLarge { .. } => "disk_too_large",
            Self::NotFound(_) => "not_found",
            Self::AlreadyExists(_) => "already_exists",
            Self::StaleGeneration { .. } => "stale_generation",
            Self::Conflict { .. } => "conflict",
            Self::PortClosed { .. } => "port_closed",
            Self::AddressesExhausted => "addresses_exhausted",
            Self::Containerd { .. } => "containerd_error",
            Self::Io { .. } => "io_error",
            Self::Network(_) => "network_error",
            Self::Volume(_) => "volume_error",
            Self::Backup(_) => "backup_failed",
            Self::BackupMissing(_) => "backup_missing",
            Self::Init { code, .. } | Self::File { code, .. } => code.as_str(),
        }
    }

    /// True for errors caused by the request rather than by the node.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::InvalidName { .. }
                | Self::InvalidResources(_)
                | Self::InvalidRequest(_)
                | Self::InvalidImage { .. }
                | Self::ImageNotFound(_)
                | Self::RegistryUnauthorized(_)
                | Self::DigestMismatch { .. }
                | Self::DiskTooLarge { .. }
                | Self::NotFound(_)
                | Self::AlreadyExists(_)
                | Self::StaleGeneration { .. }
                | Self::Conflict { .. }
                | Self::PortClosed { .. }
                | Self::Init { .. }
                | Self::File { .. }
        )
    }

    /// A repository workspace's init failure.
    pub fn init(code: berth_proto::codes::Code, message: impl Into<String>) -> Self {
        Self::Init {
            code,
            message: message.into(),
        }
    }

    /// Wraps a containerd status with what we were doing.
    pub fn containerd(context: impl Into<String>) -> impl FnOnce(tonic::Status) -> Self {
        let context = context.into();
        move |status| Self::Containerd { context, status }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io { context, source }
    }

    /// The wire form of this error.
    pub fn to_proto(&self) -> pb::Error {
        pb::Error {
            code: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

/// Result alias for the agent.
pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// True when a containerd status says the object does not exist.
pub fn is_not_found(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound
}
