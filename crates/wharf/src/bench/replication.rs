//! `wharf bench replication`: two Wharf servers (two processes, as two
//! IDCs would run them) on loopback. Measures the lag from a push
//! acknowledged at the source to the tag being pullable at the
//! destination, the throughput of a large image copy beside the raw speed
//! of the loopback link measured in the same run, and how closely a
//! policy's bandwidth limit is kept.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, ensure};
use bytes::Bytes;
use clap::Args;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use wharf_oci::{Digest, DigestAlgorithm, RepositoryName, Tag};
use wharf_replication::{
    EndpointKind, Manifest, RegistryAccess, RegistryCredentials, RemoteOptions, RemoteRegistry,
};

use super::{admin_token, spawn_listening};
use crate::units;

const PASSWORD: &str = "bench-admin-password";

#[derive(Args)]
pub struct ReplicationBenchArgs {
    /// Small images pushed one after another for the lag figures.
    #[arg(long, default_value_t = 50)]
    images: usize,
    /// Size of the image copied for the throughput figure.
    #[arg(long, default_value = "1GiB", value_parser = units::parse_size)]
    size: u64,
    /// Bandwidth limit of the paced copy (per second).
    #[arg(long, default_value = "100MiB", value_parser = units::parse_size)]
    limit: u64,
    /// Size of the image copied under the limit.
    #[arg(long, default_value = "512MiB", value_parser = units::parse_size)]
    limited_size: u64,
    /// Upload request size of large blobs at the source (`--replication-chunk`).
    #[arg(long, default_value = "64MiB")]
    chunk: String,
    /// Also measure the copy and the raw link with loopback shaped to these
    /// rates (tc tbf, as root), like a WAN link between IDCs: e.g. `1gbit,5gbit`.
    #[arg(long, value_delimiter = ',')]
    shaped_link: Vec<String>,
}

/// A server process and an API session on it.
struct Side {
    _child: tokio::process::Child,
    url: String,
    http: reqwest::Client,
    token: String,
    registry: RemoteRegistry,
}

impl Side {
    async fn start(name: &str, dir: &std::path::Path, chunk: &str) -> Result<Side> {
        let mut command = Command::new(std::env::current_exe()?);
        command
            .args(["server", "--listen", "127.0.0.1:0", "--gc-interval", "0"])
            .args(["--replication-chunk", chunk])
            .arg("--data-dir")
            .arg(dir.join(name))
            .args(["--instance", name])
            .env("WHARF_ADMIN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn");
        let (child, url, _) = spawn_listening(command, Duration::from_secs(30)).await?;
        let http = reqwest::Client::new();
        let token = admin_token(&http, &url, PASSWORD).await?;
        let registry = RemoteRegistry::new(
            name,
            EndpointKind::Wharf,
            &url,
            Some(RegistryCredentials::new("admin", PASSWORD)),
            RemoteOptions::default(),
        )?;
        let side = Side {
            _child: child,
            url,
            http,
            token,
            registry,
        };
        side.api("POST", "/api/v1/projects", json!({"name": "bench"}))
            .await?;
        Ok(side)
    }

    async fn api(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let mut request = self
            .http
            .request(method.parse()?, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "{method} {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Pushes an image whose one layer is `layer`; returns its manifest digest.
    async fn push(&self, repo: &str, tag: &str, layer: Bytes) -> Result<Digest> {
        let repo: RepositoryName = repo.parse()?;
        let config = Bytes::from(format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"tag":"{tag}"}}"#
        ));
        let layer_digest = self.upload(&repo, layer.clone()).await?;
        let config_digest = self.upload(&repo, config.clone()).await?;
        let body = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer.len()}],
        }))?;
        let bytes = Bytes::from(body);
        let manifest = Manifest {
            digest: Digest::of(DigestAlgorithm::Sha256, &bytes),
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            bytes,
        };
        self.registry
            .put_manifest(&repo, tag, &manifest, None)
            .await?;
        Ok(manifest.digest)
    }

    async fn upload(&self, repo: &RepositoryName, content: Bytes) -> Result<Digest> {
        let digest = Digest::of(DigestAlgorithm::Sha256, &content);
        let len = content.len() as u64;
        let pieces: Vec<Result<Bytes, wharf_replication::ReplicationError>> = (0..content.len())
            .step_by(8 << 20)
            .map(|start| Ok(content.slice(start..(start + (8 << 20)).min(content.len()))))
            .collect();
        let session = self.registry.start_upload(repo).await?;
        let session = self
            .registry
            .append_upload(
                repo,
                &session,
                0,
                len,
                futures_util::stream::iter(pieces).boxed(),
            )
            .await?;
        self.registry.finish_upload(repo, &session, &digest).await?;
        Ok(digest)
    }

    async fn has(&self, repo: &str, tag: &str, digest: &Digest) -> Result<bool> {
        let state = self
            .registry
            .tag(&repo.parse()?, &tag.parse::<Tag>()?)
            .await?;
        Ok(state.is_some_and(|s| s.digest == *digest))
    }

    /// Runs `policy` by hand and waits for its job; the seconds it took.
    async fn run_and_wait(&self, policy: &str) -> Result<f64> {
        let started = Instant::now();
        let job = self
            .api(
                "POST",
                &format!("/api/v1/replication/policies/{policy}/run"),
                Value::Null,
            )
            .await?;
        let id = job["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no job id"))?
            .to_string();
        loop {
            let job = self
                .api(
                    "GET",
                    &format!("/api/v1/replication/jobs/{id}"),
                    Value::Null,
                )
                .await?;
            match job["state"].as_str() {
                Some("succeeded") => return Ok(started.elapsed().as_secs_f64()),
                Some("pending" | "running") => tokio::time::sleep(Duration::from_millis(20)).await,
                other => return Err(anyhow!("job {id} ended {other:?}: {job}")),
            }
        }
    }
}

pub async fn run(args: ReplicationBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (a, b) = tokio::try_join!(
        Side::start("bench-a", dir.path(), &args.chunk),
        Side::start("bench-b", dir.path(), &args.chunk)
    )?;
    a.api(
        "POST",
        "/api/v1/replication/endpoints",
        json!({"name": "b", "url": b.url, "username": "admin", "password": PASSWORD}),
    )
    .await?;
    let policy = |name: &str, repository: &str, on_event: bool, limit: Option<u64>| {
        json!({"name": name, "endpoint": "b", "filters": {"repository": repository},
               "triggers": {"onEvent": on_event}, "bandwidthLimit": limit})
    };
    a.api(
        "POST",
        "/api/v1/replication/policies",
        policy("lag", "bench/lag", true, None),
    )
    .await?;
    a.api(
        "POST",
        "/api/v1/replication/policies",
        policy("bulk", "bench/bulk", false, None),
    )
    .await?;
    a.api(
        "POST",
        "/api/v1/replication/policies",
        policy("paced", "bench/paced", false, Some(args.limit)),
    )
    .await?;
    a.api(
        "POST",
        "/api/v1/replication/policies",
        policy("shaped", "bench/shaped-*", false, None),
    )
    .await?;

    let lags = measure_lag(&a, &b, args.images).await?;
    let raw = raw_loopback_rate(args.size).await?;
    let copy = measure_copy(&a, &b, "bulk", "bench/bulk", args.size).await?;
    let paced = measure_copy(&a, &b, "paced", "bench/paced", args.limited_size).await?;
    let mut shaped = Vec::new();
    for rate in &args.shaped_link {
        // Pushed before shaping: the push goes over loopback too.
        let repo = format!("bench/shaped-{}", rate.to_ascii_lowercase());
        let digest = push_image_of_size(&a, &repo, args.size).await?;
        let _shaping = ShapedLoopback::apply(rate)?;
        let raw = raw_loopback_rate(args.size).await?;
        let copy = copy_rate(&a, &b, "shaped", &repo, &digest, args.size).await?;
        shaped.push((rate.clone(), raw, copy));
    }
    let mib = |rate: f64| rate / (1 << 20) as f64;
    println!("| metric | value |");
    println!("|---|---|");
    println!(
        "| replication lag p50 ({} images) | {:.0} ms |",
        lags.len(),
        percentile(&lags, 0.50)
    );
    println!(
        "| replication lag p99 | {:.0} ms |",
        percentile(&lags, 0.99)
    );
    println!("| replication lag max | {:.0} ms |", percentile(&lags, 1.0));
    println!(
        "| raw loopback TCP ({}) | {:.0} MiB/s |",
        units_text(args.size),
        mib(raw)
    );
    println!(
        "| image copy ({}) | {:.0} MiB/s ({:.0}% of raw) |",
        units_text(args.size),
        mib(copy),
        100.0 * copy / raw
    );
    for (rate, raw, copy) in &shaped {
        println!(
            "| loopback shaped to {rate}: raw TCP | {:.0} MiB/s |",
            mib(*raw)
        );
        println!(
            "| loopback shaped to {rate}: image copy | {:.0} MiB/s ({:.0}% of raw) |",
            mib(*copy),
            100.0 * copy / raw
        );
    }
    println!(
        "| copy under a {:.0} MiB/s limit ({}) | {:.1} MiB/s ({:+.1}% of the limit) |",
        mib(args.limit as f64),
        units_text(args.limited_size),
        mib(paced),
        100.0 * (paced / args.limit as f64 - 1.0)
    );
    Ok(())
}

/// Pushes small images one by one; for each, the milliseconds from the
/// acknowledged manifest PUT at `a` to the tag answering at `b`.
async fn measure_lag(a: &Side, b: &Side, images: usize) -> Result<Vec<f64>> {
    let mut lags = Vec::with_capacity(images);
    for i in 0..images {
        let layer = Bytes::from(format!("layer {i} {:?}", Instant::now()).repeat(64));
        let tag = format!("v{i}");
        let digest = a.push("bench/lag", &tag, layer).await?;
        let acknowledged = Instant::now();
        while !b.has("bench/lag", &tag, &digest).await? {
            ensure!(
                acknowledged.elapsed() < Duration::from_secs(30),
                "bench/lag:{tag} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lags.push(acknowledged.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(lags)
}

/// Pushes a `size`-byte image to `a`, copies it with `policy`; bytes per second.
async fn measure_copy(a: &Side, b: &Side, policy: &str, repo: &str, size: u64) -> Result<f64> {
    let digest = push_image_of_size(a, repo, size).await?;
    copy_rate(a, b, policy, repo, &digest, size).await
}

/// Pushes `repo:1` with one `size`-byte layer of content no other image shares.
async fn push_image_of_size(a: &Side, repo: &str, size: u64) -> Result<Digest> {
    let layer = Bytes::from(pseudo_random(size as usize, repo));
    a.push(repo, "1", layer)
        .await
        .context("pushing the image to copy")
}

/// Runs `policy` and checks `repo:1` arrived; bytes per second.
async fn copy_rate(
    a: &Side,
    b: &Side,
    policy: &str,
    repo: &str,
    digest: &Digest,
    size: u64,
) -> Result<f64> {
    let seconds = a.run_and_wait(policy).await?;
    ensure!(b.has(repo, "1", digest).await?, "{repo}:1 did not arrive");
    Ok(size as f64 / seconds)
}

/// One TCP stream over 127.0.0.1 carrying `size` bytes: the link's raw speed.
async fn raw_loopback_rate(size: u64) -> Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buffer = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = socket.read(&mut buffer).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(total);
            }
            total += n as u64;
        }
    });
    let chunk = pseudo_random(1 << 20, "loopback");
    let started = Instant::now();
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    let mut sent = 0u64;
    while sent < size {
        socket.write_all(&chunk).await?;
        sent += chunk.len() as u64;
    }
    socket.shutdown().await?;
    let received = reader.await??;
    ensure!(received == sent, "loopback lost bytes");
    Ok(sent as f64 / started.elapsed().as_secs_f64())
}

/// A token-bucket filter on `lo` for as long as it lives.
struct ShapedLoopback;

impl ShapedLoopback {
    fn apply(rate: &str) -> Result<ShapedLoopback> {
        let status = std::process::Command::new("tc")
            .args(["qdisc", "replace", "dev", "lo", "root", "tbf", "rate", rate])
            .args(["burst", "4mb", "latency", "100ms"])
            .status()
            .context("running tc (apt-get install iproute2; as root)")?;
        ensure!(
            status.success(),
            "tc could not shape lo to {rate} (root needed)"
        );
        Ok(ShapedLoopback)
    }
}

impl Drop for ShapedLoopback {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tc")
            .args(["qdisc", "del", "dev", "lo", "root"])
            .status();
    }
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(index).copied().unwrap_or(0.0)
}

fn units_text(bytes: u64) -> String {
    crate::output::human_size(bytes)
}

/// Incompressible bytes without reading /dev/urandom for a GiB; each
/// `salt` gives other content.
fn pseudo_random(len: usize, salt: &str) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut state: u64 = salt.bytes().fold(0x2545_F491_4F6C_DD1D, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
    });
    for chunk in out.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    out
}
