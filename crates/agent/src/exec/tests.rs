//! `run` against a stand-in for runc: a script that drops runc's own
//! arguments and runs the command itself, so the relay, the framing, the
//! terminal and the exit code are tested without root or containers.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, DuplexStream};

use super::*;

/// `<runc> --root R exec [--tty] ID CMD...` runs `CMD...`.
fn fake_runc(dir: &std::path::Path) -> Runc {
    let script = dir.join("runc");
    std::fs::write(
        &script,
        "#!/bin/sh\nshift 3\n[ \"$1\" = --tty ] && shift\nshift\nexec \"$@\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    Runc::new(script, dir.join("root"))
}

fn command(words: &[&str], stdin: bool, tty: Option<(u16, u16)>) -> ExecCommand {
    ExecCommand {
        id: "c1".into(),
        command: words.iter().map(|w| w.to_string()).collect(),
        stdin,
        tty,
    }
}

/// Starts `exec`; the client's end of the connection.
fn start(runc: Runc, exec: ExecCommand) -> DuplexStream {
    let (client, agent) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move { run(&runc, exec, agent).await.unwrap() });
    client
}

/// Reads frames until the exit: stdout, stderr and the code.
async fn finish(client: &mut (impl AsyncRead + Unpin)) -> (String, String, i32) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read = async {
        loop {
            match Frame::read_from(client).await.unwrap() {
                Some(Frame::Stdout(data)) => out.extend_from_slice(&data),
                Some(Frame::Stderr(data)) => err.extend_from_slice(&data),
                Some(Frame::Exit(code)) => return code,
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let code = tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("an exit frame in time");
    let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
    (text(out), text(err), code)
}

async fn send(client: &mut (impl AsyncWrite + Unpin), frame: Frame) {
    frame.write_to(client).await.unwrap();
}

#[tokio::test]
async fn output_errors_and_exit_code_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let exec = command(&["sh", "-c", "echo out; echo err >&2; exit 7"], false, None);
    let mut client = start(fake_runc(dir.path()), exec);
    assert_eq!(
        finish(&mut client).await,
        ("out\n".into(), "err\n".into(), 7)
    );
}

#[tokio::test]
async fn input_and_its_end_reach_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut client = start(fake_runc(dir.path()), command(&["cat"], true, None));
    send(&mut client, Frame::Stdin(Bytes::from_static(b"one\n"))).await;
    send(&mut client, Frame::Stdin(Bytes::from_static(b"two\n"))).await;
    send(&mut client, Frame::StdinClosed).await;
    assert_eq!(
        finish(&mut client).await,
        ("one\ntwo\n".into(), String::new(), 0)
    );
}

#[tokio::test]
async fn a_command_that_cannot_start_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut runc = fake_runc(dir.path());
    runc = Runc::new(dir.path().join("missing-runc"), runc.root());
    let mut client = start(runc, command(&["true"], false, None));
    let (out, err, code) = finish(&mut client).await;
    assert_eq!((out.as_str(), code), ("", 126));
    assert!(err.contains("exec failed"), "{err}");
}

#[tokio::test]
async fn a_terminal_has_its_size_and_follows_resizes() {
    let dir = tempfile::tempdir().unwrap();
    // `tty` names the terminal; the size is read after the resize arrives.
    let script = "tty; stty size; read line; stty size; echo \"got $line\"";
    let exec = command(&["sh", "-c", script], true, Some((100, 30)));
    let mut client = start(fake_runc(dir.path()), exec);
    let mut shown = String::new();
    while !shown.contains("30 100") {
        match Frame::read_from(&mut client).await.unwrap() {
            Some(Frame::Stdout(data)) => shown.push_str(&String::from_utf8_lossy(&data)),
            other => panic!("unexpected {other:?} after {shown:?}"),
        }
    }
    assert!(shown.starts_with("/dev/pts/"), "{shown:?}");
    send(
        &mut client,
        Frame::Resize {
            cols: 132,
            rows: 50,
        },
    )
    .await;
    send(&mut client, Frame::Stdin(Bytes::from_static(b"hello\r"))).await;
    let (out, err, code) = finish(&mut client).await;
    // The terminal echoes the input and turns newlines into CR LF.
    assert!(out.contains("50 132\r\ngot hello\r\n"), "{out:?}");
    assert_eq!((err.as_str(), code), ("", 0));
}

#[tokio::test]
async fn a_client_that_goes_away_hangs_the_process_up() {
    let dir = tempfile::tempdir().unwrap();
    let runc = fake_runc(dir.path());
    let (client, agent) = tokio::io::duplex(1024);
    let exec = command(&["sleep", "60"], false, None);
    let session = tokio::spawn(async move { run(&runc, exec, agent).await });
    drop(client);
    let ended = tokio::time::timeout(Duration::from_secs(10), session).await;
    assert!(ended.is_ok(), "the process outlived its client");
}
