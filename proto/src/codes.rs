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
    /// The repository refused the credential (or there was none).
    GitAuthFailed,
    /// No repository at the URL.
    GitRepoNotFound,
    /// The branch asked for is not in the repository.
    GitBranchNotFound,
    /// The commit asked for is not in the repository.
    GitCommitNotFound,
    /// The repository's host could not be reached.
    GitUnreachable,
    /// The clone did not finish in time.
    GitTimeout,
    /// The repository does not fit in the workspace's volume.
    GitRepoTooBig,
    /// The clone failed for another reason (git's message says).
    GitCloneFailed,
    /// devcontainer.json is not valid (line and column, or the key, named).
    DevcontainerInvalid,
    /// devcontainer.json asks for what Berth does not allow (the key named).
    DevcontainerRefused,
    /// The Dockerfile has an instruction the builder does not support (its line named).
    DockerfileInvalid,
    /// A Dockerfile step or a feature's install failed.
    BuildFailed,
    /// devcontainer.json asks for more than the workspace has.
    HostRequirementsUnmet,
    /// A prebuild's onCreateCommand or updateContentCommand failed (its log says).
    PrebuildFailed,
    /// A backup or restore failed on the node or in its store (retried).
    BackupFailed,
    /// A restore named a backup its store does not have: never started empty.
    BackupMissing,
    /// A file operation's path does not exist.
    FileNotFound,
    /// A file operation's target exists (create-only write, mkdir, rename).
    FileExists,
    /// A file operation met the wrong kind (a directory to read as a file,
    /// a directory not empty, a parent that is a file).
    FileKind,
    /// The workspace user may not do this to the path (its permissions).
    FileDenied,
    /// A path leads out of /workspace (`..`, or a symlink).
    OutsideWorkspace,
    /// A write or delete whose etag no longer matches.
    PreconditionFailed,
    /// A write past the size a file may have.
    FileTooLarge,
    /// A write the workspace's volume has no room for.
    VolumeFull,
}

impl Code {
    /// Every code.
    pub const ALL: [Code; 43] = [
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
        Code::GitAuthFailed,
        Code::GitRepoNotFound,
        Code::GitBranchNotFound,
        Code::GitCommitNotFound,
        Code::GitUnreachable,
        Code::GitTimeout,
        Code::GitRepoTooBig,
        Code::GitCloneFailed,
        Code::DevcontainerInvalid,
        Code::DevcontainerRefused,
        Code::DockerfileInvalid,
        Code::BuildFailed,
        Code::HostRequirementsUnmet,
        Code::PrebuildFailed,
        Code::BackupFailed,
        Code::BackupMissing,
        Code::FileNotFound,
        Code::FileExists,
        Code::FileKind,
        Code::FileDenied,
        Code::OutsideWorkspace,
        Code::PreconditionFailed,
        Code::FileTooLarge,
        Code::VolumeFull,
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
            Code::GitAuthFailed => "git_auth_failed",
            Code::GitRepoNotFound => "git_repo_not_found",
            Code::GitBranchNotFound => "git_branch_not_found",
            Code::GitCommitNotFound => "git_commit_not_found",
            Code::GitUnreachable => "git_unreachable",
            Code::GitTimeout => "git_timeout",
            Code::GitRepoTooBig => "git_repo_too_big",
            Code::GitCloneFailed => "git_clone_failed",
            Code::DevcontainerInvalid => "devcontainer_invalid",
            Code::DevcontainerRefused => "devcontainer_refused",
            Code::DockerfileInvalid => "dockerfile_invalid",
            Code::BuildFailed => "build_failed",
            Code::HostRequirementsUnmet => "host_requirements_unmet",
            Code::PrebuildFailed => "prebuild_failed",
            Code::BackupFailed => "backup_failed",
            Code::BackupMissing => "backup_missing",
            Code::FileNotFound => "file_not_found",
            Code::FileExists => "file_exists",
            Code::FileKind => "file_kind",
            Code::FileDenied => "file_denied",
            Code::OutsideWorkspace => "outside_workspace",
            Code::PreconditionFailed => "precondition_failed",
            Code::FileTooLarge => "file_too_large",
            Code::VolumeFull => "volume_full",
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
                | Code::BackupMissing
        ) || self.is_init()
    }

    /// Whether the code is a repository workspace's clone or configuration
    /// failing (the repository's or the request's doing, never retried).
    pub fn is_init(self) -> bool {
        matches!(
            self,
            Code::GitAuthFailed
                | Code::GitRepoNotFound
                | Code::GitBranchNotFound
                | Code::GitCommitNotFound
                | Code::GitUnreachable
                | Code::GitTimeout
                | Code::GitRepoTooBig
                | Code::GitCloneFailed
                | Code::DevcontainerInvalid
                | Code::DevcontainerRefused
                | Code::DockerfileInvalid
                | Code::BuildFailed
                | Code::HostRequirementsUnmet
                | Code::PrebuildFailed
        )
    }

    /// Whether the code is a file operation's refusal.
    pub fn is_file(self) -> bool {
        matches!(
            self,
            Code::FileNotFound
                | Code::FileExists
                | Code::FileKind
                | Code::FileDenied
                | Code::OutsideWorkspace
                | Code::PreconditionFailed
                | Code::FileTooLarge
                | Code::VolumeFull
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
            || self.is_file()
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
