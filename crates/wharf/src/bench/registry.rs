//! Registry benchmark: the same client drives `wharf server` and the
//! reference registry (CNCF distribution, Debian's `docker-registry`) in one
//! run, on loopback, each with its data on the same disk.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use clap::Args;
use tokio::process::{Child, Command};
use wharf_oci::{Digest, DigestAlgorithm};

use crate::units;

#[derive(Args)]
pub struct RegistryBenchArgs {
    /// Size of the blob pushed and pulled.
    #[arg(long, default_value = "512MiB", value_parser = units::parse_size)]
    size: u64,
    /// Rounds of blob PUT and GET; the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// wrk connections for manifest GETs.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// wrk run time for manifest GETs.
    #[arg(long, default_value = "10s", value_parser = units::parse_duration)]
    duration: Duration,
    /// The reference registry binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    reference: PathBuf,
    /// Where both registries keep their data (a temporary directory by default).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Memory to touch once before measuring (0 to skip). In a VM whose guest
    /// memory is backed lazily (Firecracker here), the first touch of a page
    /// costs a hypervisor fault, about 0.5 GB/s; whichever registry runs first
    /// would pay it for its page cache. Touching it once up front lets both
    /// measure their own work.
    #[arg(long, default_value = "8GiB", value_parser = units::parse_size)]
    warm_memory: u64,
}

struct Figures {
    put_mbps: f64,
    get_mbps: f64,
    manifest_rps: f64,
}

pub async fn run(args: RegistryBenchArgs) -> Result<()> {
    let temp = tempfile::tempdir()?;
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    warm_memory(args.warm_memory);
    let blobs = BlobSet::generate(&work.join("blobs"), args.size, args.rounds)?;

    let mut wharf = start_wharf(&work.join("wharf")).await?;
    let wharf_figures = measure("wharf", &wharf, &blobs, &args).await;
    wharf.stop().await;
    let mut reference = start_reference(&args.reference, &work.join("reference")).await?;
    let reference_figures = measure("docker-registry", &reference, &blobs, &args).await;
    reference.stop().await;
    let (ours, theirs) = (wharf_figures?, reference_figures?);

    let size_mib = args.size >> 20;
    println!();
    println!("| metric | wharf | docker-registry 2.8.2 | ratio |");
    println!("|---|---:|---:|---:|");
    let row = |name: String, a: f64, b: f64, unit: &str| {
        println!("| {name} | {a:.0} {unit} | {b:.0} {unit} | {:.2}x |", a / b);
    };
    row(
        format!("blob PUT {size_mib} MiB, monolithic"),
        ours.put_mbps,
        theirs.put_mbps,
        "MB/s",
    );
    row(
        format!("blob GET {size_mib} MiB"),
        ours.get_mbps,
        theirs.get_mbps,
        "MB/s",
    );
    row(
        format!("manifest GET, {} connections", args.connections),
        ours.manifest_rps,
        theirs.manifest_rps,
        "req/s",
    );
    Ok(())
}

/// Touches `bytes` of fresh memory and gives it back to the kernel.
fn warm_memory(bytes: u64) {
    if bytes == 0 {
        return;
    }
    let started = Instant::now();
    let mut pages = Vec::<u8>::with_capacity(bytes as usize);
    pages.resize(bytes as usize, 1);
    // Keep the optimizer from eliding the writes.
    drop(std::hint::black_box(pages));
    eprintln!(
        "warmed {} MiB of memory in {:.1} s",
        bytes >> 20,
        started.elapsed().as_secs_f64()
    );
}

/// Distinct blobs of the same size, one per round, so that no round is
/// served by deduplication of an earlier one. They live in files because
/// curl, the HTTP client for the byte-moving part, reads them from there.
struct BlobSet {
    size: u64,
    blobs: Vec<(Digest, PathBuf)>,
}

impl BlobSet {
    fn generate(dir: &Path, size: u64, rounds: usize) -> Result<BlobSet> {
        std::fs::create_dir_all(dir)?;
        let mut data = vec![0u8; size as usize];
        rand::fill(&mut data[..]);
        let mut blobs = Vec::new();
        for round in 0..rounds.max(1) {
            let stamp = (round as u64).to_le_bytes();
            let n = stamp.len().min(data.len());
            data[..n].copy_from_slice(&stamp[..n]);
            let digest = Digest::of(DigestAlgorithm::Sha256, &data);
            let path = dir.join(format!("blob-{round}"));
            std::fs::write(&path, &data)?;
            blobs.push((digest, path));
        }
        // Flush the fixtures now: their writeback must not compete with the
        // registries' own writes and fsyncs during the measurement.
        std::process::Command::new("sync").status()?;
        Ok(BlobSet { size, blobs })
    }
}

async fn measure(
    name: &str,
    registry: &Running,
    blobs: &BlobSet,
    args: &RegistryBenchArgs,
) -> Result<Figures> {
    let url = registry.url.as_str();
    let auth = registry.authorization.as_deref();
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(auth) = auth {
        headers.insert(reqwest::header::AUTHORIZATION, auth.parse()?);
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4)
        .default_headers(headers)
        .build()?;
    let repo = "bench/blob";
    let mut puts = Vec::new();
    for (digest, path) in &blobs.blobs {
        let elapsed = push_monolithic(&client, registry, repo, digest, path).await?;
        puts.push(rate(blobs.size, elapsed));
    }
    let mut gets = Vec::new();
    for (digest, _) in &blobs.blobs {
        let (received, elapsed) = curl(
            auth,
            &[
                "-o",
                "/dev/null",
                &format!("{url}/v2/{repo}/blobs/{digest}"),
            ],
        )
        .await?;
        ensure!(
            received == blobs.size,
            "{name}: GET returned {received} bytes"
        );
        gets.push(rate(blobs.size, elapsed));
    }
    let manifest_url = push_manifest(&client, url, repo, &blobs.blobs[0].0, blobs.size).await?;
    let manifest_rps = wrk(&manifest_url, auth, args.connections, args.duration).await?;
    let figures = Figures {
        put_mbps: median(&mut puts),
        get_mbps: median(&mut gets),
        manifest_rps,
    };
    eprintln!(
        "{name}: PUT {:.0} MB/s (rounds {:?}), GET {:.0} MB/s (rounds {:?}), manifest GET {:.0} req/s",
        figures.put_mbps,
        puts.iter().map(|r| r.round()).collect::<Vec<_>>(),
        figures.get_mbps,
        gets.iter().map(|r| r.round()).collect::<Vec<_>>(),
        figures.manifest_rps
    );
    Ok(figures)
}

fn rate(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// POST to open a session, then one PUT with the whole blob and its digest;
/// returns the time both took.
async fn push_monolithic(
    client: &reqwest::Client,
    registry: &Running,
    repo: &str,
    digest: &Digest,
    path: &Path,
) -> Result<Duration> {
    let started = Instant::now();
    let location = start_upload(client, &registry.url, repo).await?;
    let opened = started.elapsed();
    let target = with_digest(&location, digest);
    let file = path.to_string_lossy();
    let (_, elapsed) = curl(
        registry.authorization.as_deref(),
        &[
            "-X",
            "PUT",
            "-T",
            &file,
            "-H",
            "Content-Type: application/octet-stream",
            "-o",
            "/dev/null",
            &target,
        ],
    )
    .await?;
    Ok(opened + elapsed)
}

/// An upload location with `digest=` appended to its query.
fn with_digest(location: &str, digest: &Digest) -> String {
    let separator = if location.contains('?') { '&' } else { '?' };
    format!("{location}{separator}digest={digest}")
}

async fn start_upload(client: &reqwest::Client, url: &str, repo: &str) -> Result<String> {
    let response = client
        .post(format!("{url}/v2/{repo}/blobs/uploads/"))
        .send()
        .await?;
    ensure!(
        response.status() == 202,
        "upload start: {}",
        response.status()
    );
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| anyhow!("upload start: no Location"))?;
    Ok(if location.starts_with("http") {
        location.to_string()
    } else {
        format!("{url}{location}")
    })
}

/// Runs curl, failing on HTTP errors; returns bytes downloaded and curl's own
/// measure of the transfer time (process start-up excluded).
async fn curl(authorization: Option<&str>, args: &[&str]) -> Result<(u64, Duration)> {
    let output = Command::new("curl")
        .args(["-sS", "--fail", "-w", "%{size_download} %{time_total}"])
        .args(
            authorization
                .map(|auth| format!("Authorization: {auth}"))
                .iter()
                .flat_map(|h| ["-H", h.as_str()]),
        )
        .args(args)
        .output()
        .await
        .context("running curl (apt-get install curl)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut fields = text.split_whitespace();
    let size = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("curl output {text:?}"))?;
    let seconds: f64 = fields
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("curl output {text:?}"))?;
    Ok((size, Duration::from_secs_f64(seconds)))
}

/// Pushes a small image manifest (config + the first blob as layer) tagged `bench`.
async fn push_manifest(
    client: &reqwest::Client,
    url: &str,
    repo: &str,
    layer: &Digest,
    layer_size: u64,
) -> Result<String> {
    let config = Bytes::from_static(
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let config_digest = Digest::of(DigestAlgorithm::Sha256, &config);
    let response = client
        .post(format!(
            "{url}/v2/{repo}/blobs/uploads/?digest={config_digest}"
        ))
        .body(config.clone())
        .send()
        .await?;
    if response.status() != 201 {
        // Registries without single-POST pushes get the two-step form.
        let location = start_upload(client, url, repo).await?;
        let response = client
            .put(with_digest(&location, &config_digest))
            .body(config.clone())
            .send()
            .await?;
        ensure!(
            response.status() == 201,
            "config PUT: {}",
            response.status()
        );
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": layer_size}],
    });
    let response = client
        .put(format!("{url}/v2/{repo}/manifests/bench"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(serde_json::to_vec(&manifest)?)
        .send()
        .await?;
    ensure!(
        response.status() == 201,
        "manifest PUT: {} {}",
        response.status(),
        response.text().await?
    );
    Ok(format!("{url}/v2/{repo}/manifests/bench"))
}

/// Runs `wrk` against `url` and returns its requests per second.
async fn wrk(
    url: &str,
    authorization: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Result<f64> {
    let output = Command::new("wrk")
        .args(
            authorization
                .map(|auth| format!("Authorization: {auth}"))
                .iter()
                .flat_map(|h| ["-H", h.as_str()]),
        )
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{}s", duration.as_secs().max(1)),
        ])
        .args([
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
            url,
        ])
        .output()
        .await
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    ensure!(output.status.success(), "wrk failed: {text}");
    ensure!(!text.contains("Non-2xx"), "wrk saw errors: {text}");
    text.lines()
        .find_map(|line| line.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("no Requests/sec in wrk output: {text}"))
}

struct Running {
    url: String,
    /// `Authorization` header value the registry wants, if any.
    authorization: Option<String>,
    child: Child,
}

impl Running {
    async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Starts `wharf server` with authentication on, as deployed: the bench
/// logs in, creates its project and carries a registry token on every
/// request (a long-lived one, so that the measurement never re-logs in).
async fn start_wharf(dir: &Path) -> Result<Running> {
    let password = format!("bench-{:016x}", rand::random::<u64>());
    let mut command = super::server_command(&password)?;
    command.args(["--token-ttl", "2h", "--data-dir"]).arg(dir);
    let (child, url, _) = super::spawn_listening(command, Duration::from_secs(30)).await?;
    let token = bench_token(&url, &password).await?;
    Ok(Running {
        url,
        authorization: Some(format!("Bearer {token}")),
        child,
    })
}

/// Creates the `bench` project and returns a registry token for it.
async fn bench_token(url: &str, password: &str) -> Result<String> {
    let client = reqwest::Client::new();
    let api_token = super::admin_token(&client, url, password).await?;
    client
        .post(format!("{url}/api/v1/projects"))
        .bearer_auth(&api_token)
        .json(&serde_json::json!({"name": "bench"}))
        .send()
        .await?
        .error_for_status()?;
    let token: serde_json::Value = client
        .get(format!(
            "{url}/service/token?service=wharf&scope=repository:bench/blob:pull,push"
        ))
        .basic_auth("admin", Some(password))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    token["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no registry token"))
}

async fn start_reference(binary: &Path, dir: &Path) -> Result<Running> {
    ensure!(
        binary.exists(),
        "{} not found (apt-get install docker-registry)",
        binary.display()
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::create_dir_all(dir)?;
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )?;
    let child = Command::new(binary)
        .arg("serve")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client.get(format!("{url}/v2/")).send().await.is_ok() {
            return Ok(Running {
                url,
                authorization: None,
                child,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("docker-registry did not answer on {url}")
}
