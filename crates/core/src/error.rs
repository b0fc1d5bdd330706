//! One error type for the crate. Every variant carries enough context to say
//! what was being done and with which input.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A netlink or API-server error, kept opaque so this crate's core needs
/// neither client; the edges that must inspect one check it before boxing.
pub type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user or cluster input; nothing was changed. Exit code 2.
    #[error("invalid {field}: {reason}")]
    Invalid { field: String, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("reading {path}: {source}")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("netlink: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: Source,
    },

    /// A call to the Kubernetes API server (or building its client).
    #[error("{context}: {source}")]
    Kube {
        context: String,
        #[source]
        source: Source,
    },

    /// A check ran and found something broken (what it printed says what).
    #[error("{0}")]
    Failing(String),
    #[error("interrupted")]
    Cancelled,

    /// Something we would own by name is somebody else's.
    #[error("{0}")]
    Foreign(String),

    #[error("{failed} of the writes failed ({done} done), first: {first}")]
    Apply {
        failed: usize,
        done: usize,
        first: Box<Error>,
    },

    #[error("kernel state after apply still differs from the plan: {0}")]
    Unconverged(String),

    #[error("command `{command}` failed: {stderr}")]
    Command { command: String, stderr: String },

    #[error("network namespace {name}: {reason}")]
    Netns { name: String, reason: String },

    /// A network device (by name, or `#index`) that is not there.
    #[error("device {name}: {reason}")]
    Device { name: String, reason: String },
}

impl From<crate::api::Invalid> for Error {
    fn from(e: crate::api::Invalid) -> Self {
        Error::Invalid {
            field: e.field,
            reason: e.reason,
        }
    }
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn kube(context: impl Into<String>, source: impl Into<Source>) -> Self {
        Error::Kube {
            context: context.into(),
            source: source.into(),
        }
    }

    /// Bad input is exit code 2, everything else is a runtime failure (1).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid { .. } | Error::ReadFile { .. } => 2,
            Error::Cancelled => 130,
            _ => 1,
        }
    }
}
