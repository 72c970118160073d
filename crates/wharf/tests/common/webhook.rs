//! A webhook receiver on a loopback port for alert notifications: a
//! thread that answers every POST with 200 and hands over the body after
//! checking its `X-Wharf-Signature` against the secret.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// The receiver; it stops with the test process.
pub struct Webhook {
    pub url: String,
    secret: String,
    received: mpsc::Receiver<(String, Vec<u8>)>,
}

impl Webhook {
    /// Listens on `address` (e.g. `127.0.0.1:0`, or an address inside a
    /// test's network namespace reachable from the server).
    pub fn start(address: &str, secret: &str) -> Webhook {
        let listener = TcpListener::bind(address).unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let (sent, received) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let (mut length, mut signature) = (0usize, String::new());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if lower.starts_with("x-wharf-signature:") {
                        signature = line["x-wharf-signature:".len()..].trim().to_owned();
                    }
                    line.clear();
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                let mut stream = reader.into_inner();
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                if sent.send((signature, body)).is_err() {
                    return;
                }
            }
        });
        Webhook {
            url,
            secret: secret.to_owned(),
            received,
        }
    }

    /// `wharf alert receiver add ops` for this webhook in project `shop`,
    /// to run with the secret on stdin.
    pub fn receiver_args(&self) -> [&str; 9] {
        let url = self.url.as_str();
        [
            "alert",
            "receiver",
            "add",
            "ops",
            "--url",
            url,
            "--secret-stdin",
            "-p",
            "shop",
        ]
    }

    /// The next notification within `wait`, its signature checked.
    pub fn next(&self, wait: Duration) -> Option<Value> {
        let (signature, body) = self.received.recv_timeout(wait).ok()?;
        assert_eq!(
            signature,
            wharf_server::webhook_signature(self.secret.as_bytes(), &body),
            "the notification is signed with the receiver's secret"
        );
        Some(serde_json::from_slice(&body).unwrap())
    }
}

/// `wharf alert rule add cpu-high` in project `shop`: a pod's summed CPU
/// rate (cores) over `window` meeting `condition` (e.g. `>0.5`), critical.
pub fn cpu_rule_args<'a>(window: &'a str, condition: &'a str) -> [&'a str; 19] {
    [
        "alert",
        "rule",
        "add",
        "cpu-high",
        "--metric",
        "container.cpu.usage_seconds",
        "--rate",
        "--agg",
        "sum",
        "--by",
        "pod",
        "--window",
        window,
        "--condition",
        condition,
        "--severity",
        "critical",
        "-p",
        "shop",
    ]
}

/// `wharf alert silence add` for rule `cpu-high` in project `shop`, an hour.
pub const SILENCE_CPU_HIGH: [&str; 9] = [
    "alert",
    "silence",
    "add",
    "--matcher",
    "alertname=cpu-high",
    "--duration",
    "1h",
    "-p",
    "shop",
];
