//! `wharf bench p2p`: N peers, each in a network namespace whose link is
//! shaped to W bytes/s in each direction, pull one B-byte image of L layers
//! at once; the registry's blob bytes sent (its own counter,
//! `wharf_registry_blob_bytes_sent_total`) give the origin bytes, each
//! peer's time from the common start its completion time T.
//!
//! The bound the issue measures against is Kraken's,
//! `T* = B/W + log2(N)·p/W` with `p` the piece size of a layer
//! ([`wharf_p2p::piece_size_for`]); `eta = T*/T` at p50 and p99.
//!
//! Sides, in one run: `registry` (every peer pulls straight from the
//! registry, P2P off) and `p2p` (the peers pull with `--p2p`: through the
//! server's tracker and each other, as agents do).
//!
//! The peers are `wharf p2p-peer` processes: the node's pull code
//! ([`wharf_image::ImageStore`]) without runc, each joined as a node of
//! pool `wpp-peers` (one IDC) with its own node credential, as agents are. Their caches and the
//! server's data live on a tmpfs sized for the run, so that disk space and
//! fsyncs are not what is measured.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::Rng;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin};
use wharf_net::lab::{LabMachine, LabNetwork, LabSpec};

use crate::demo::{Blob, PushTarget, push_image};
use crate::output::{OutputFormat, OutputOption, Table};
use crate::units;

/// Options of `wharf bench p2p`.
#[derive(Args)]
pub struct P2pBenchArgs {
    /// Peers pulling at once (one network namespace each).
    #[arg(long, default_value_t = 50)]
    peers: usize,
    /// Image size B in MiB (random, incompressible bytes).
    #[arg(long, default_value_t = 512)]
    size: u64,
    /// Each peer's link rate W, per direction (bytes/s: `64MiB`, `100MB`).
    #[arg(long, default_value = "64MiB", value_parser = units::parse_size)]
    rate: u64,
    /// Layers the image is split into (equal sizes).
    #[arg(long, default_value_t = 4)]
    layers: u64,
    #[command(flatten)]
    output: OutputOption,
}

/// How peers pull in one side of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    /// Straight from the registry: P2P off.
    Registry,
    /// Through the tracker and the other peers (`--p2p`).
    P2p,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Registry => "registry",
            Side::P2p => "p2p",
        }
    }

    /// `wharf p2p-peer` arguments that select this side.
    fn peer_args(self) -> &'static [&'static str] {
        match self {
            Side::Registry => &[],
            Side::P2p => &["--p2p"],
        }
    }
}

/// The sides measured, in order.
const SIDES: &[Side] = &[Side::Registry, Side::P2p];

/// Figures of one side.
struct Outcome {
    side: Side,
    origin_bytes: u64,
    /// Each peer's completion time from the common start, sorted.
    times: Vec<Duration>,
}

/// Runs the benchmark and prints the figures.
pub async fn run(args: P2pBenchArgs) -> Result<()> {
    check_args(&args)?;
    if !nix::unistd::geteuid().is_root() {
        bail!("wharf bench p2p needs root (network namespaces, tc, tmpfs)");
    }
    let image_bytes = args.size << 20;
    let layer_bytes = image_bytes / args.layers;
    let scratch = Scratch::mount(scratch_size(&args))?;
    let lab = LabNetwork::create(LabSpec::wpp(args.peers, Some(args.rate)))
        .await
        .context("creating the lab network (prefix wpp, 10.123.0.0/16)")?;
    let server = Server::start(&lab, &scratch.dir).await?;
    eprintln!(
        "pushing {} MiB in {} layers of {} MiB",
        args.size,
        args.layers,
        layer_bytes >> 20
    );
    let size_bytes = server.push_image(args.layers, layer_bytes).await?;
    let mut outcomes = Vec::new();
    for &side in SIDES {
        eprintln!("{}: {} peers pulling", side.name(), args.peers);
        outcomes.push(measure(&server, &lab, &scratch.dir, side).await?);
    }
    let piece = wharf_p2p::piece_size_for(layer_bytes);
    let report = report(&args, size_bytes, piece, &outcomes);
    match args.output.format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Yaml => print!("{}", serde_norway::to_string(&report)?),
        OutputFormat::Table => print!("{}", table(&report)),
    }
    Ok(())
}

fn check_args(args: &P2pBenchArgs) -> Result<()> {
    if args.peers == 0 || args.peers > 1000 {
        bail!("--peers must be 1 to 1000, not {}", args.peers);
    }
    if args.layers == 0 || args.size == 0 || args.size < args.layers {
        bail!(
            "--size {} MiB cannot be split into --layers {} of at least 1 MiB",
            args.size,
            args.layers
        );
    }
    if args.rate == 0 {
        bail!("--rate must be above 0 bytes/s");
    }
    Ok(())
}

/// The tmpfs holds the server's copy and every peer's cache while it
/// unpacks (blob and layer at once), plus room for the manifests.
fn scratch_size(args: &P2pBenchArgs) -> u64 {
    let image = args.size << 20;
    image + args.peers as u64 * image * 2 + (256 << 20)
}

/// One side: fresh caches, every peer started and its cache opened, then
/// all told to pull at once.
async fn measure(server: &Server, lab: &LabNetwork, scratch: &Path, side: Side) -> Result<Outcome> {
    let before = server.origin_bytes().await?;
    let mut peers = Vec::new();
    for machine in lab.machines() {
        let dir = scratch.join(format!("{}-{}", side.name(), machine.index));
        peers.push(Peer::start(server, machine, &dir, side).await?);
    }
    let mut lines = Vec::new();
    for peer in &mut peers {
        lines.push(peer.ready().await?);
    }
    let started = Instant::now();
    for peer in &mut peers {
        peer.go().await?;
    }
    let mut waiting = tokio::task::JoinSet::new();
    for (index, mut out) in lines.into_iter().enumerate() {
        waiting.spawn(async move {
            let line = out.next_line().await?;
            anyhow::Ok((index, started.elapsed(), line))
        });
    }
    let mut times = Vec::new();
    while let Some(done) = waiting.join_next().await {
        let (index, elapsed, line) = done??;
        let answer: Value = serde_json::from_str(line.as_deref().unwrap_or("{}"))
            .with_context(|| format!("peer {index} answered {line:?}"))?;
        if answer["pulled"].is_null() {
            bail!(
                "peer {index} ({}): {}",
                side.name(),
                answer["failed"]
                    .as_str()
                    .unwrap_or("exited without a result")
            );
        }
        times.push(elapsed);
    }
    let origin_bytes = server.origin_bytes().await? - before;
    drop(peers);
    std::fs::read_dir(scratch)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(side.name()))
        .try_for_each(|e| std::fs::remove_dir_all(e.path()))?;
    times.sort();
    Ok(Outcome {
        side,
        origin_bytes,
        times,
    })
}

/// The figures as JSON (what `-o json` prints and the table reads).
fn report(args: &P2pBenchArgs, size_bytes: u64, piece: u64, outcomes: &[Outcome]) -> Value {
    let rate = args.rate as f64;
    let bound = size_bytes as f64 / rate + (args.peers as f64).log2() * piece as f64 / rate;
    let sides: Vec<Value> = outcomes
        .iter()
        .map(|outcome| {
            let p50 = super::pods::percentile(&outcome.times, 50.0).as_secs_f64();
            let p99 = super::pods::percentile(&outcome.times, 99.0).as_secs_f64();
            json!({
                "side": outcome.side.name(),
                "originBytes": outcome.origin_bytes,
                "originRatio": outcome.origin_bytes as f64 / size_bytes as f64,
                "completionSeconds": outcome.times.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
                "p50Seconds": p50,
                "p99Seconds": p99,
                "etaP50": bound / p50,
                "etaP99": bound / p99,
            })
        })
        .collect();
    json!({
        "peers": args.peers,
        "sizeBytes": size_bytes,
        "layers": args.layers,
        "rateBytesPerSecond": args.rate,
        "pieceBytes": piece,
        "boundSeconds": bound,
        "sides": sides,
    })
}

fn table(report: &Value) -> String {
    let mib = |v: &Value| v.as_f64().unwrap_or_default() / f64::from(1 << 20);
    let mut out = format!(
        "{} peers, image {:.0} MiB in {} layers, links {:.1} MiB/s each way, piece {:.0} MiB: T* = {:.2} s\n",
        report["peers"],
        mib(&report["sizeBytes"]),
        report["layers"],
        mib(&report["rateBytesPerSecond"]),
        mib(&report["pieceBytes"]),
        report["boundSeconds"].as_f64().unwrap_or_default(),
    );
    let mut rows = Table::new(&[
        "SIDE",
        "ORIGIN MiB",
        "ORIGIN/B",
        "T P50 s",
        "T P99 s",
        "ETA P50",
        "ETA P99",
    ]);
    for side in report["sides"].as_array().into_iter().flatten() {
        let name = side["side"].as_str().unwrap_or_default().to_string();
        let number = |key: &str, digits: usize| {
            format!("{:.*}", digits, side[key].as_f64().unwrap_or_default())
        };
        rows.row([
            name,
            format!("{:.1}", mib(&side["originBytes"])),
            number("originRatio", 2),
            number("p50Seconds", 2),
            number("p99Seconds", 2),
            number("etaP50", 2),
            number("etaP99", 2),
        ]);
    }
    out.push_str(&rows.render());
    out
}

/// `wharf server` listening on the lab's host address, its data on the
/// scratch tmpfs, with project `bench` and a pull-only robot for the peers.
struct Server {
    _child: Child,
    url: String,
    http: reqwest::Client,
    token: String,
    password: String,
}

/// The peers' cluster (one IDC) and pool.
const POOL: &str = "wpp-peers";

impl Server {
    async fn start(lab: &LabNetwork, scratch: &Path) -> Result<Server> {
        let password = format!("bench-{:016x}", rand::random::<u64>());
        let listen = format!("{}:0", lab.host_address());
        let mut command = super::server_command_on(&listen, &password)?;
        command.arg("--data-dir").arg(scratch.join("server"));
        let (child, url, mut lines) =
            super::spawn_listening(command, Duration::from_secs(60)).await?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let http = reqwest::Client::new();
        let token = super::admin_token(&http, &url, &password).await?;
        let server = Server {
            _child: child,
            url,
            http,
            token,
            password,
        };
        server
            .api(reqwest::Method::POST, "projects", json!({"name": "bench"}))
            .await?;
        let inventory = format!(
            "apiVersion: wharf.io/v1\nkind: Cluster\nmetadata: {{name: wpp-lab}}\nspec: {{kind: physical, idc: wpp-idc}}\n---\n\
             apiVersion: wharf.io/v1\nkind: Pool\nmetadata: {{name: {POOL}}}\nspec: {{cluster: wpp-lab}}\n"
        );
        server.apply(&inventory).await?;
        Ok(server)
    }

    /// `POST /api/v1/apply` of `yaml`.
    async fn apply(&self, yaml: &str) -> Result<()> {
        let response = self
            .http
            .post(format!("{}/api/v1/apply", self.url))
            .bearer_auth(&self.token)
            .header("content-type", "application/yaml")
            .body(yaml.to_string())
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            bail!("apply: {status}: {}", response.text().await?);
        }
        Ok(())
    }

    /// A single-use token to join the peers' pool.
    async fn join_token(&self) -> Result<String> {
        let path = format!("pools/{POOL}/join-tokens");
        let answer = self
            .api(reqwest::Method::POST, &path, json!({"ttlSeconds": 3600}))
            .await?;
        Ok(answer["token"]
            .as_str()
            .context("the join token answer has no token")?
            .to_string())
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let response = self
            .http
            .request(method, format!("{}/api/v1/{path}", self.url))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `host:port/bench/p2p:1`, the image the peers pull.
    fn image(&self) -> String {
        format!("{}/bench/p2p:1", self.url.trim_start_matches("http://"))
    }

    /// Pushes `layers` uncompressed layers of `layer_bytes` random bytes;
    /// returns the bytes a pull downloads (layers and config).
    async fn push_image(&self, layers: u64, layer_bytes: u64) -> Result<u64> {
        let blobs = tokio::task::spawn_blocking(move || random_image(layers, layer_bytes)).await?;
        let (layers, config, manifest) = blobs?;
        let mut all: Vec<&Blob> = layers.iter().collect();
        all.push(&config);
        let target = PushTarget {
            registry: &self.url,
            repo: "bench/p2p",
            tag: "1",
            user: "admin",
            password: &self.password,
        };
        push_image(&target, &all, &manifest).await?;
        Ok(all.iter().map(|b| b.bytes.len() as u64).sum())
    }

    /// The registry's `wharf_registry_blob_bytes_sent_total`.
    async fn origin_bytes(&self) -> Result<u64> {
        let text = self
            .http
            .get(format!("{}/metrics", self.url))
            .bearer_auth(&self.token)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        blob_bytes_sent(&text)
    }
}

/// The value of `wharf_registry_blob_bytes_sent_total` in an exposition.
fn blob_bytes_sent(exposition: &str) -> Result<u64> {
    let value = exposition
        .lines()
        .find_map(|line| line.strip_prefix("wharf_registry_blob_bytes_sent_total "))
        .context("the server's /metrics has no wharf_registry_blob_bytes_sent_total")?;
    let value: f64 = value
        .trim()
        .parse()
        .with_context(|| format!("wharf_registry_blob_bytes_sent_total {value:?}"))?;
    Ok(value as u64)
}

/// Layers of one random file each (an uncompressed tar: incompressible
/// either way, and no CPU spent on gzip at either end), the config and the
/// manifest.
fn random_image(layers: u64, layer_bytes: u64) -> Result<(Vec<Blob>, Blob, Blob)> {
    const LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    let mut blobs = Vec::new();
    let mut diff_ids = Vec::new();
    for index in 0..layers {
        // The tar's headers and end blocks take 2.5 KiB of the layer.
        let content = layer_bytes.saturating_sub(3 << 10);
        let mut data = vec![0u8; content as usize];
        rand::rng().fill_bytes(&mut data);
        let mut tar = tar::Builder::new(Vec::with_capacity(layer_bytes as usize));
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(content);
        header.set_mtime(0);
        tar.append_data(&mut header, format!("data-{index}"), &data[..])?;
        let bytes = tar.into_inner()?;
        let blob = Blob::new(LAYER, bytes);
        diff_ids.push(blob.digest.to_string());
        blobs.push(blob);
    }
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        serde_json::to_vec(&json!({
            "architecture": wharf_image::Platform::host().architecture,
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))?,
    );
    let manifest = Blob::new(
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config.descriptor(),
            "layers": blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }))?,
    );
    Ok((blobs, config, manifest))
}

/// One `wharf p2p-peer` inside a lab machine.
struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>>,
    index: usize,
}

impl Peer {
    async fn start(server: &Server, machine: &LabMachine, dir: &Path, side: Side) -> Result<Peer> {
        let token = server.join_token().await?;
        let name = format!("wpp-{}-{}", side.name(), machine.index);
        let mut command = machine.command(std::env::current_exe()?);
        command
            .args([
                "p2p-peer",
                "--server",
                &server.url,
                "--image",
                &server.image(),
            ])
            .args(["--name", &name, "--address", &machine.address.to_string()])
            .arg("--dir")
            .arg(dir)
            .args(["--disk-reserve", "16MiB"])
            .args(side.peer_args())
            .env("WHARF_JOIN_TOKEN", token)
            // WHARF_BENCH_PEER_LOG (a RUST_LOG filter) shows what the peers do.
            .env(
                "RUST_LOG",
                std::env::var("WHARF_BENCH_PEER_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        // WHARF_BENCH_PEER_LOG_DIR keeps each peer's log apart, named as
        // the peer, to follow pieces from node to node.
        if let Ok(logs) = std::env::var("WHARF_BENCH_PEER_LOG_DIR") {
            let path = Path::new(&logs).join(format!("{name}.log"));
            let log = std::fs::File::create(&path)
                .with_context(|| format!("creating {}", path.display()))?;
            command.stderr(log);
        }
        let mut child = command
            .spawn()
            .context("starting a peer under nsenter (apt-get install util-linux)")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().map(|s| BufReader::new(s).lines());
        Ok(Peer {
            child,
            stdin,
            stdout,
            index: machine.index,
        })
    }

    /// Waits for the peer's `ready` line; hands over its stdout.
    async fn ready(&mut self) -> Result<tokio::io::Lines<BufReader<tokio::process::ChildStdout>>> {
        let mut lines = self.stdout.take().context("a peer's stdout")?;
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .with_context(|| format!("peer {} did not open its cache in 60 s", self.index))??;
        if line.as_deref() != Some(r#"{"ready":true}"#) {
            bail!("peer {} did not start: {line:?}", self.index);
        }
        Ok(lines)
    }

    async fn go(&mut self) -> Result<()> {
        let stdin = self.stdin.as_mut().context("a peer's stdin")?;
        stdin.write_all(b"go\n").await?;
        stdin.flush().await?;
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        // Closing stdin ends the peer; the kill is for one that hangs.
        self.stdin.take();
        let _ = self.child.start_kill();
    }
}

/// A tmpfs mounted on a fresh directory for the run; unmounted on drop.
struct Scratch {
    dir: PathBuf,
    _holder: tempfile::TempDir,
}

impl Scratch {
    fn mount(size: u64) -> Result<Scratch> {
        let available = mem_available()?;
        if size + (1 << 30) > available {
            bail!(
                "the run needs a {} MiB tmpfs (the server's copy and every peer's cache) and 1 GiB \
                 to spare, but only {} MiB of memory are available: lower --peers or --size",
                size >> 20,
                available >> 20
            );
        }
        let holder = tempfile::Builder::new().prefix("wharf-p2p-").tempdir()?;
        let dir = holder.path().to_path_buf();
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .context("running mount")?;
        if !status.success() {
            bail!("mounting a tmpfs on {} failed ({status})", dir.display());
        }
        Ok(Scratch {
            dir,
            _holder: holder,
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.dir)
            .status();
    }
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available() -> Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("/proc/meminfo has no MemAvailable")?;
    Ok(kib << 10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_bytes_are_read_from_the_exposition() {
        let text = "# TYPE wharf_registry_blob_bytes_sent_total counter\nwharf_registry_blob_bytes_sent_total 1342177280\nwharf_registry_blob_bytes_received_total 10\n";
        assert_eq!(blob_bytes_sent(text).unwrap(), 1342177280);
        assert!(blob_bytes_sent("other 1\n").is_err());
    }

    #[test]
    fn the_bound_and_eta_follow_the_issue() {
        let args = P2pBenchArgs {
            peers: 16,
            size: 512,
            rate: 64 << 20,
            layers: 4,
            output: OutputOption {
                format: OutputFormat::Json,
            },
        };
        let outcome = Outcome {
            side: Side::Registry,
            origin_bytes: 16 * (512 << 20),
            times: vec![Duration::from_secs(9); 16],
        };
        let p2p = Outcome {
            side: Side::P2p,
            origin_bytes: 512 << 20,
            times: vec![Duration::from_secs(11); 16],
        };
        let piece = wharf_p2p::piece_size_for(128 << 20);
        let report = report(&args, 512 << 20, piece, &[outcome, p2p]);
        // B/W = 8 s, log2(16)·4 MiB/64 MiB/s = 0.25 s.
        assert_eq!(report["boundSeconds"], 8.25);
        let side = &report["sides"][0];
        assert_eq!(side["originRatio"], 16.0);
        assert!((side["etaP50"].as_f64().unwrap() - 8.25 / 9.0).abs() < 1e-9);
        assert_eq!(report["sides"][1]["side"], "p2p");
        assert_eq!(report["sides"][1]["originRatio"], 1.0);
        let text = table(&report);
        assert!(text.contains("T* = 8.25 s"), "{text}");
        assert!(text.contains("p2p"), "{text}");
    }

    #[test]
    fn impossible_runs_are_refused_naming_the_option() {
        let mut args = P2pBenchArgs {
            peers: 0,
            size: 128,
            rate: 1,
            layers: 4,
            output: OutputOption {
                format: OutputFormat::Table,
            },
        };
        assert!(
            check_args(&args)
                .unwrap_err()
                .to_string()
                .contains("--peers")
        );
        args.peers = 2;
        args.layers = 200;
        assert!(
            check_args(&args)
                .unwrap_err()
                .to_string()
                .contains("--layers")
        );
        args.layers = 4;
        args.rate = 0;
        assert!(
            check_args(&args)
                .unwrap_err()
                .to_string()
                .contains("--rate")
        );
    }
}
