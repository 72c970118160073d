use std::io;
use std::path::Path;

/// Failures of spec generation, bundles, the shim and runc.
#[derive(Debug, thiserror::Error)]
pub enum RuncError {
    /// The container cannot be turned into a runtime spec (no command,
    /// unknown user, invalid quantity, ...).
    #[error("container {container}: {message}")]
    Spec {
        /// The container's name.
        container: String,
        /// What is wrong.
        message: String,
    },
    /// `runAsNonRoot` is set and the container's user is root: it must
    /// not start (Kubernetes' `CreateContainerConfigError`).
    #[error("container {container}: container has runAsNonRoot and image will run as root")]
    RunsAsRoot {
        /// The container's name.
        container: String,
    },
    /// A container id runc would refuse or misread as a flag.
    #[error("invalid container id {0:?}: use letters, digits, '_', '+', '-', '.'")]
    InvalidId(String),
    /// A program (runc or the shim) could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: io::Error,
    },
    /// runc ran and failed; `message` is its error text.
    #[error("{command}: {message}")]
    Runc {
        /// The runc command line, shortened (`runc kill web-1`).
        command: String,
        /// runc's error message.
        message: String,
    },
    /// The container was created but its process did not start.
    #[error("container {id} failed to start: {message}")]
    StartFailed {
        /// The container id.
        id: String,
        /// runc's error message, from the container log.
        message: String,
    },
    /// The shim exited without recording the container's exit.
    #[error("shim of container {id} exited without an exit file ({status})")]
    ShimFailed {
        /// The container id.
        id: String,
        /// How the shim ended.
        status: String,
    },
    /// An operation did not finish in time.
    #[error("container {id}: timed out {what}")]
    Timeout {
        /// The container id.
        id: String,
        /// What was being waited for.
        what: &'static str,
    },
    /// A JSON file or runc's JSON output is malformed.
    #[error("{path}: {source}")]
    Json {
        /// The file, or the runc command.
        path: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A filesystem operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: String,
        /// The OS error.
        source: io::Error,
    },
}

impl RuncError {
    pub(crate) fn io(path: &Path, source: io::Error) -> RuncError {
        RuncError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    pub(crate) fn spec(container: &str, message: impl Into<String>) -> RuncError {
        RuncError::Spec {
            container: container.to_string(),
            message: message.into(),
        }
    }

    pub(crate) fn join(err: tokio::task::JoinError) -> RuncError {
        RuncError::Io {
            path: "<blocking task>".into(),
            source: io::Error::other(err),
        }
    }
}
