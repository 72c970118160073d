/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server could not be reached.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server refused or failed the request.
    #[error("server: {0}")]
    Api(String),
    /// The node cannot run containers as configured.
    #[error("{0}")]
    Setup(String),
    /// The server refused a request made for a user (a commit grant), with
    /// the HTTP status to pass on to that user.
    #[error("server: {message}")]
    Refused {
        /// The server's status.
        status: u16,
        /// Its message.
        message: String,
    },
    /// The object asked about does not exist (any more).
    #[error("not found: {0}")]
    NotFound(String),
}

impl AgentError {
    /// Whether the object asked about does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AgentError::NotFound(_))
    }
}
