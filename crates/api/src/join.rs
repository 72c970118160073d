//! The join command: the one shell line that makes a fresh machine a node
//! of a pool (`wharf node join-command` prints it; the pool autoscaler
//! gives it to new cloud machines as their first-boot script).

/// The shell line that fetches the server's join script and runs it with
/// what it needs: the server URL, the pool, a single-use join token and
/// the SHA-256 of the server's `wharf` binary. Values are single-quoted
/// for the shell; none may hold a quote (names, tokens and hex digests
/// do not).
///
/// ```
/// let line = wharf_api::join_command_line("http://10.0.0.1:7700/", "web", "wjt_abc", "12ab");
/// assert!(line.starts_with("curl -fsSL 'http://10.0.0.1:7700/api/v1/join/script' | "));
/// ```
pub fn join_command_line(server: &str, pool: &str, token: &str, digest: &str) -> String {
    let server = server.trim_end_matches('/');
    format!(
        "curl -fsSL '{server}/api/v1/join/script' | WHARF_SERVER='{server}' WHARF_POOL='{pool}' \
         WHARF_JOIN_TOKEN='{token}' WHARF_SHA256='{digest}' sh"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_line_runs_the_script_with_its_settings() {
        let line = join_command_line("http://10.0.0.1:7700/", "web", "wjt_abc", "12ab");
        assert_eq!(
            line,
            "curl -fsSL 'http://10.0.0.1:7700/api/v1/join/script' | \
             WHARF_SERVER='http://10.0.0.1:7700' WHARF_POOL='web' WHARF_JOIN_TOKEN='wjt_abc' \
             WHARF_SHA256='12ab' sh"
        );
        assert!(!line.contains('\n'));
    }
}
