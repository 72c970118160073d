//! `wharf up`: the whole platform on one machine — the server and a node
//! agent running containers — with the CLI logged in as admin and, unless
//! `--no-demo`, a demo image, IP pool and deployment.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use serde_json::json;
use tokio::sync::Mutex;
use tokio_util::task::AbortOnDropHandle;
use wharf_agent::{Agent, AgentConfig, HttpNodeApi, NodeApi};
use wharf_image::RegistryCredentials;
use wharf_server::Server;

use super::agent::{NodeOptions, StoredLogin, node_runtime, with_service_rules};
use super::down::UpState;
use super::server::{ServerArgs, shutdown_signal};
use crate::client::ApiClient;
use crate::demo;

/// Options of `wharf up`.
#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    node: NodeOptions,
    /// Name of this machine's node [default: the host name].
    #[arg(long)]
    name: Option<String>,
    /// Start without the demo image, pool and deployment.
    #[arg(long)]
    no_demo: bool,
}

/// The file `wharf up` keeps a generated admin password in (mode 0600), so
/// later starts can show it again.
const PASSWORD_FILE: &str = "admin-password";

/// The demo's pool: its own subnet, apart from the node-local range.
const DEMO_POOL: &str = "apiVersion: wharf.io/v1
kind: IpPool
metadata: {name: demo-pool}
spec:
  cidr: 10.89.0.0/24
  gateway: 10.89.0.1
  ranges: [{start: 10.89.0.10, end: 10.89.0.99}]
";

const DEMO_DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  namespace: demo
  annotations: {wharf.io/ip-pool: demo-pool}
spec:
  replicas: 2
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
        - name: web
          image: demo/hello:1
          ports: [{containerPort: 80}]
          resources:
            requests: {cpu: 50m, memory: 16Mi}
            limits: {memory: 64Mi}
";

/// This machine's host name as a node name (a DNS label).
pub(crate) fn host_node_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let label: String = raw
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(63)
        .collect();
    let label = label.trim_matches('-').to_string();
    if label.is_empty() {
        "local".into()
    } else {
        label
    }
}

fn save_password(path: &Path, password: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("saving the admin password in {}", path.display()))?;
    std::io::Write::write_all(&mut file, password.as_bytes())?;
    Ok(())
}

/// What `wharf up` says about the admin password: the password itself only
/// on the start that generated it (as `wharf server` does); on later starts
/// where it is read back from its file, only where it is kept; nothing when
/// the operator chose it.
fn password_notice(
    generated: Option<&str>,
    chosen_by_operator: bool,
    file: &Path,
) -> Option<String> {
    match generated {
        Some(password) => Some(format!(
            "admin password: {password} (kept in {}, mode 0600)",
            file.display()
        )),
        None if chosen_by_operator => None,
        None => Some(format!("admin password: kept in {}", file.display())),
    }
}

/// Runs server and agent until SIGINT or SIGTERM.
pub async fn run(args: UpArgs) -> Result<()> {
    let stop = shutdown_signal();
    let data_dir = args.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let password_file = data_dir.join(PASSWORD_FILE);
    let mut config = args.server.config();
    let chosen_by_operator = config.admin_password.is_some();
    if config.admin_password.is_none() {
        config.admin_password = std::fs::read_to_string(&password_file)
            .ok()
            .map(|p| p.trim().to_string());
    }
    let known_password = config.admin_password.clone();
    let server = Server::bind(config)
        .await
        .with_context(|| format!("starting the server with data in {}", data_dir.display()))?;
    let url = format!("http://{}", server.local_addr());
    let generated = server.generated_admin_password().map(str::to_string);
    if let Some(generated) = &generated {
        save_password(&password_file, generated)?;
    }
    println!("listening on {url}");
    let Some(password) = generated.clone().or(known_password) else {
        anyhow::bail!(
            "the admin password of this data directory is unknown to wharf up: set WHARF_ADMIN_PASSWORD"
        );
    };
    println!("admin user: admin");
    if let Some(line) = password_notice(generated.as_deref(), chosen_by_operator, &password_file) {
        println!("{line}");
    }
    let (stop_server, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = server_stopped.await;
    }));

    let mut client = ApiClient::anonymous(&url)?;
    client
        .login("admin", &password, None)
        .await
        .context("logging the CLI in as admin")?;
    println!("the wharf CLI is logged in to {url} as admin");
    println!("dashboard: {url}/ (log in as admin)");
    let name = args.name.clone().unwrap_or_else(host_node_name);
    let api: Arc<dyn NodeApi> = Arc::new(HttpNodeApi::new(
        &url,
        Arc::new(StoredLogin(Mutex::new(client))),
    )?);
    let mut node = args.node;
    node.node_dir.get_or_insert_with(|| data_dir.join("node"));
    // For `wharf down`: this process, and where its containers, mounts,
    // namespaces and bridge are.
    UpState::of(&node, &name, &data_dir).save(&data_dir)?;
    // One machine, one operator: the node pulls as admin. Agents on other
    // machines pull with a robot account (--registry-user).
    let admin = RegistryCredentials::new("admin", &password);
    let mut agent_config = AgentConfig::new(&name);
    let latest = agent_config.latest_samples.clone();
    let (runtime, logs, dns) =
        node_runtime(&node, &name, &url, None, api.clone(), Some(admin), latest).await?;
    agent_config.heartbeat_ttl = args.server.node_lease_ttl;
    agent_config.metrics_interval = node.metrics_interval;
    agent_config.endpoint = logs.as_ref().map(|(_, endpoint)| endpoint.clone());
    let _serving_logs = logs.map(|(task, _)| AbortOnDropHandle::new(task));
    let agent = Agent::new(api, runtime, agent_config);
    if let Some(dns) = &dns {
        dns.follow(agent.services());
    }
    let agent = with_service_rules(agent, &node, &name).await;
    let agent = AbortOnDropHandle::new(tokio::spawn(agent.run()));
    println!("node {name} runs containers with {}", node.runtime);

    if !args.no_demo {
        match start_demo(&url, &password).await {
            Ok(()) => println!(
                "demo: deployment demo/hello (2 pods on pool demo-pool): wharf get pods -p demo, then curl http://POD_IP/cgi-bin/hostname"
            ),
            Err(err) => eprintln!("warning: the demo did not start: {err:#}"),
        }
    }
    stop.await;
    drop(agent);
    let _ = stop_server.send(());
    tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .ok();
    println!(
        "stopped; containers keep running and are adopted at the next start \
         (wharf down removes them)"
    );
    Ok(())
}

/// Pushes the demo image, imports its pool and applies its deployment.
async fn start_demo(url: &str, password: &str) -> Result<()> {
    let mut client = ApiClient::for_stored_login(Some(url))?;
    if client.get(&["projects", "demo"]).await.is_err() {
        client
            .post(&["projects"], &json!({"name": "demo", "public": false}))
            .await
            .context("creating project demo")?;
    }
    let image = tokio::task::spawn_blocking(|| demo::build(Path::new(demo::BUSYBOX)))
        .await
        .context("building the demo image")??;
    image
        .push(url, "demo/hello", "1", "admin", password)
        .await
        .context("pushing the demo image")?;
    client
        .post_text(&["ippools"], &[], "application/yaml", DEMO_POOL)
        .await
        .context("importing the demo pool")?;
    client
        .post_text(&["apply"], &[], "application/yaml", DEMO_DEPLOYMENT)
        .await
        .context("applying the demo deployment")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_printed_only_when_generated() {
        let file = Path::new("/data/admin-password");
        let first = password_notice(Some("s3cret"), false, file).unwrap();
        assert_eq!(
            first,
            "admin password: s3cret (kept in /data/admin-password, mode 0600)"
        );
        let restart = password_notice(None, false, file).unwrap();
        assert_eq!(restart, "admin password: kept in /data/admin-password");
        assert_eq!(password_notice(None, true, file), None);
    }
}
