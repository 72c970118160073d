//! Running external tools (skopeo, docker) with a time limit and failure
//! messages that show what was run and what it said.

use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

/// No single tool invocation of the tests should take longer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `command` to completion and returns its output, whatever its exit
/// status. Panics if it cannot start or exceeds the time limit.
pub async fn output(command: &mut Command) -> Output {
    let line = describe(command);
    command
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null());
    match tokio::time::timeout(COMMAND_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => panic!("cannot run `{line}`: {err}"),
        Err(_) => panic!("`{line}` did not finish within {COMMAND_TIMEOUT:?}"),
    }
}

/// Runs `command` with `input` on its stdin (e.g. a password for
/// `--password-stdin`) and returns its output, whatever its exit status.
pub async fn output_with_stdin(command: &mut Command, input: &[u8]) -> Output {
    use tokio::io::AsyncWriteExt;
    let line = describe(command);
    command
        .kill_on_drop(true)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let run = async {
        let mut child = command.spawn()?;
        let mut stdin = child.stdin.take().expect("piped stdin");
        stdin.write_all(input).await?;
        drop(stdin);
        child.wait_with_output().await
    };
    match tokio::time::timeout(COMMAND_TIMEOUT, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => panic!("cannot run `{line}`: {err}"),
        Err(_) => panic!("`{line}` did not finish within {COMMAND_TIMEOUT:?}"),
    }
}

/// Everything a command printed, stdout then stderr, for messages and
/// searching.
pub fn all_output(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command` and panics unless it exits with status 0.
pub async fn checked(command: &mut Command) -> Output {
    let line = describe(command);
    let output = output(command).await;
    assert!(
        output.status.success(),
        "`{line}` failed ({}):\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    output
}

/// The command line, for messages.
pub fn describe(command: &Command) -> String {
    let command = command.as_std();
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// stdout as text, trimmed.
pub fn stdout_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}
