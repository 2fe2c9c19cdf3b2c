//! The agent's error codes, as one enum both sides use: the agent sends
//! `Code::as_str()` in its `Error` answers, the coordinator reads them back
//! with `Code::parse` and decides on the variant, never on a string.

/// An error code an agent answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    InvalidName,
    InvalidResources,
    InvalidRequest,
    InvalidImage,
    ImageNotFound,
    RegistryUnauthorized,
    /// The registry could not be reached or answered badly (retried).
    RegistryError,
    DigestMismatch,
    DiskTooLarge,
    NotFound,
    AlreadyExists,
    StaleGeneration,
    Conflict,
    PortClosed,
    AddressesExhausted,
    ContainerdError,
    IoError,
    NetworkError,
    VolumeError,
}

impl Code {
    /// Every code.
    pub const ALL: [Code; 19] = [
        Code::InvalidName,
        Code::InvalidResources,
        Code::InvalidRequest,
        Code::InvalidImage,
        Code::ImageNotFound,
        Code::RegistryUnauthorized,
        Code::RegistryError,
        Code::DigestMismatch,
        Code::DiskTooLarge,
        Code::NotFound,
        Code::AlreadyExists,
        Code::StaleGeneration,
        Code::Conflict,
        Code::PortClosed,
        Code::AddressesExhausted,
        Code::ContainerdError,
        Code::IoError,
        Code::NetworkError,
        Code::VolumeError,
    ];

    /// The code on the wire (docs/errors.md).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::InvalidName => "invalid_name",
            Code::InvalidResources => "invalid_resources",
            Code::InvalidRequest => "invalid_request",
            Code::InvalidImage => "invalid_image",
            Code::ImageNotFound => "image_not_found",
            Code::RegistryUnauthorized => "registry_unauthorized",
            Code::RegistryError => "registry_error",
            Code::DigestMismatch => "digest_mismatch",
            Code::DiskTooLarge => "disk_too_large",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::StaleGeneration => "stale_generation",
            Code::Conflict => "conflict",
            Code::PortClosed => "port_closed",
            Code::AddressesExhausted => "addresses_exhausted",
            Code::ContainerdError => "containerd_error",
            Code::IoError => "io_error",
            Code::NetworkError => "network_error",
            Code::VolumeError => "volume_error",
        }
    }

    /// The code a wire string names, if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// Whether no retry will fix a command that failed with this code.
    pub fn is_permanent(self) -> bool {
        matches!(
            self,
            Code::InvalidName
                | Code::InvalidResources
                | Code::InvalidRequest
                | Code::InvalidImage
                | Code::ImageNotFound
                | Code::RegistryUnauthorized
                | Code::DigestMismatch
                | Code::DiskTooLarge
                | Code::AddressesExhausted
        )
    }

    /// Whether the error comes from the request rather than the node.
    pub fn is_user_error(self) -> bool {
        self.is_permanent() && self != Code::AddressesExhausted
            || matches!(
                self,
                Code::NotFound
                    | Code::AlreadyExists
                    | Code::StaleGeneration
                    | Code::Conflict
                    | Code::PortClosed
            )
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The code of an agent's error answer, if it is one of `Code`'s.
pub fn of(e: &crate::agent::Error) -> Option<Code> {
    Code::parse(&e.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back() {
        for c in Code::ALL {
            assert_eq!(Code::parse(c.as_str()), Some(c));
        }
        assert_eq!(Code::parse("nope"), None);
        assert!(Code::ImageNotFound.is_permanent());
        assert!(!Code::RegistryError.is_permanent());
        assert!(!Code::AddressesExhausted.is_user_error());
        assert!(Code::PortClosed.is_user_error());
        assert!(!Code::ContainerdError.is_user_error());
    }
}
