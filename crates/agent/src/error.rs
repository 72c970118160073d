/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The server could not be reached.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// The server refused or failed the request.
    #[error("server: {0}")]
    Api(String),
    /// The in-process control plane failed.
    #[error("control plane: {0}")]
    Control(#[from] wharf_control::ControlError),
}
