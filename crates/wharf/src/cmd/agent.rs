//! `wharf agent`: runs the node agent for this machine, or a simulated
//! fleet (`--simulate N`), against a server, as the logged-in user.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

use anyhow::{Context, Result, bail};
use async_trait::async_trait;
use clap::Args;
use tokio::sync::Mutex;
use wharf_agent::containers::NodeSetup;
use wharf_agent::dns::DnsServer;
use wharf_agent::metrics::LatestSamples;
use wharf_agent::p2p::P2pSettings;
use wharf_agent::{
    Agent, AgentConfig, AgentError, HttpNodeApi, InitSettings, NoRuntime, NodeApi, Runtime,
    Simulation, SimulationConfig, TokenSource,
};
use wharf_api::{LABEL_MACHINE_CLASS, LABEL_POOL, STANDARD_NODE_LABELS};
use wharf_image::{ImageGcPolicy, ImageStoreOptions, RegistryCredentials};
use wharf_net::BridgeConfig;
use wharf_net::services::NftServices;
use wharf_runc::ShimCommand;

use super::node_credential::{CredentialLogin, NodeCredential};
use crate::client::ApiClient;
use crate::units;

/// The agent's node dir when `--node-dir` names none.
const DEFAULT_NODE_DIR: &str = "/var/lib/wharf/node";

/// `wharf agent` arguments.
#[derive(Args)]
pub struct AgentArgs {
    /// Server URL [default: the one you logged in to; the login must be a system administrator's].
    #[arg(long, env = "WHARF_SERVER")]
    server: Option<String>,
    /// Node name (with --simulate: the prefix of the simulated nodes' names).
    #[arg(long)]
    name: String,
    /// Node labels, e.g. wharf.io/pool=web,wharf.io/idc=bj1,wharf.io/cluster-kind=vm,wharf.io/machine-class=3.
    #[arg(long, value_delimiter = ',')]
    labels: Vec<String>,
    /// The inventory pool the node joins; the server refuses a pool that
    /// does not exist, and a node of another pool.
    #[arg(long)]
    pool: Option<String>,
    /// The node's machine class, which its pool must allow [default: the
    /// pool's class whose CPU and memory ranges hold the machine's].
    #[arg(long = "class", requires = "pool")]
    machine_class: Option<String>,
    /// What an hour of this machine costs (a pool's node is priced by its
    /// pool, class or cluster instead).
    #[arg(long)]
    cost_per_hour: Option<f64>,
    /// Address the node is reached at.
    #[arg(long)]
    address: Option<String>,
    /// Pod slots.
    #[arg(long, default_value_t = wharf_agent::machine::DEFAULT_MAX_PODS)]
    max_pods: u32,
    /// How long after the agent stops its node is declared not ready (the
    /// heartbeat lease); pods with pool addresses stop a quarter of it
    /// earlier when the lease cannot be renewed [default: 2s; with
    /// --simulate: 120s].
    #[arg(long, alias = "heartbeat-ttl", value_parser = units::parse_duration)]
    lease_ttl: Option<Duration>,
    /// How often the lease is renewed [default: 500ms; with --simulate: a
    /// third of the lease].
    #[arg(long, value_parser = units::parse_duration)]
    heartbeat_interval: Option<Duration>,
    /// How often the running containers' CPU and memory are measured and
    /// reported (what `wharf top pods` and autoscaling read).
    #[arg(long, default_value = "10s", value_parser = units::parse_duration)]
    usage_interval: Duration,
    /// How often the node's status is reported, with the load summary the
    /// scheduler's load and image-locality scores read (CPU busy over the
    /// last minute, load average, available memory, cached layers).
    #[arg(long, default_value = "30s", value_parser = units::parse_duration)]
    status_interval: Duration,
    /// How often the agent asks for its pool's init profile, which it runs
    /// (before its node takes pods) whenever the profile's hash differs
    /// from the last one applied on this machine.
    #[arg(long, default_value = "30s", value_parser = units::parse_duration)]
    init_interval: Duration,
    /// Where the load summary's CPU and memory come from: `host` (this
    /// machine's /proc) or `pods` (the sum of this node's pods' cgroup
    /// usage over its capacity: for several agents on one machine, which
    /// share /proc).
    #[arg(long, default_value = "host", value_parser = clap::value_parser!(wharf_agent::LoadSource))]
    load_source: wharf_agent::LoadSource,
    /// Register this many hollow nodes instead, which report their pods as
    /// running without containers.
    #[arg(long)]
    simulate: Option<usize>,
    /// With --simulate: the CPU busy (0 to 1) the hollow nodes report,
    /// assigned round-robin (`--load 0.9,0.1`), to model loaded nodes;
    /// without it they report no load (the scheduler scores it neutral).
    #[arg(long, value_delimiter = ',', requires = "simulate")]
    load: Vec<f32>,
    /// A single-use join token (`wharf node join-command`): traded once
    /// for this node's own credential, kept in the node dir (0600) and
    /// used from then on instead of a login; the node joins the token's
    /// pool. Without it, a credential already in the node dir is used.
    #[arg(
        long,
        env = "WHARF_JOIN_TOKEN",
        hide_env_values = true,
        conflicts_with = "simulate"
    )]
    join_token: Option<String>,
    /// With --simulate: the CPU of each hollow node, in cores or millicores
    /// (`12`, `31500m`) [default: 16].
    #[arg(long, requires = "simulate")]
    cpu: Option<String>,
    /// With --simulate: the memory of each hollow node (`16Gi`) [default: 64Gi].
    #[arg(long, requires = "simulate")]
    memory: Option<String>,
    #[command(flatten)]
    node: NodeOptions,
}

/// How the agent runs containers (all but `--runtime` need root).
#[derive(Args, Clone, Debug)]
pub struct NodeOptions {
    /// `runc` runs containers; `none` only reports pods as pending.
    #[arg(long, default_value = "runc", value_parser = ["runc", "none"])]
    pub runtime: String,
    /// Pod records, container files and the image cache [default:
    /// /var/lib/wharf/node; with `wharf up`, DATA_DIR/node].
    #[arg(long = "node-dir", env = "WHARF_NODE_DIR")]
    pub node_dir: Option<PathBuf>,
    /// The runc binary.
    #[arg(long, default_value = "runc")]
    pub runc: PathBuf,
    /// runc's state directory [default: /run/wharf/NAME/runc].
    #[arg(long)]
    pub runc_root: Option<PathBuf>,
    /// The node bridge pods attach to.
    #[arg(long, default_value = "wharf0")]
    pub bridge: String,
    /// Prefix of the pods' network namespace names (unique per agent on a machine).
    #[arg(long, default_value = "wharf-")]
    pub netns_prefix: String,
    /// Put the bridge in this network namespace instead of the agent's own
    /// (lets one machine play several hosts).
    #[arg(long)]
    pub host_netns: Option<String>,
    /// The resolv.conf whose name servers the pods' name server forwards
    /// other names to, and which pods with `dnsPolicy: Default` get.
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Node-local range for pods that ask for no IP pool; its first address
    /// is the gateway, on the bridge.
    #[arg(long, default_value = "10.88.0.0/24")]
    pub pod_cidr: String,
    /// Registry user for pulls (a robot account); its password comes from
    /// WHARF_REGISTRY_PASSWORD.
    #[arg(long, env = "WHARF_REGISTRY_USER")]
    pub registry_user: Option<String>,
    /// Registries reached over plain HTTP besides loopback ones (the
    /// server's own is added when it is plain HTTP).
    #[arg(long, value_delimiter = ',')]
    pub insecure_registry: Vec<String>,
    /// Where to serve the agent's endpoint: container logs, exec and
    /// port-forward (the server proxies `wharf logs`, `exec` and
    /// `port-forward` here).
    #[arg(long = "logs-listen", default_value = "127.0.0.1:7701")]
    pub logs_listen: SocketAddr,
    /// How often the node's and its containers' metrics (falcon's names)
    /// are collected and pushed to the server; 0 turns collection off.
    /// Simulated nodes collect none.
    #[arg(long, default_value = "10s", value_parser = units::parse_duration)]
    pub metrics_interval: Duration,
    /// A layer may unpack to this many times its compressed size (or to
    /// --min-layer-limit, whichever is more): decompression bombs fail.
    #[arg(long, default_value_t = 20)]
    pub max_layer_expansion: u64,
    /// Size every layer may unpack to, whatever its compressed size.
    #[arg(long, default_value = "1GiB", value_parser = units::parse_size)]
    pub min_layer_limit: u64,
    /// Most an image may unpack to, all its layers together.
    #[arg(long, default_value = "64GiB", value_parser = units::parse_size)]
    pub max_image_size: u64,
    /// Disk space kept free under the image cache: pulls fail below it.
    #[arg(long, default_value = "1GiB", value_parser = units::parse_size)]
    pub image_disk_reserve: u64,
    /// Disk use (percent) at which unused images are removed...
    #[arg(long, default_value_t = 85, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub image_gc_high: u8,
    /// ...until it is below this.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub image_gc_low: u8,
    /// Images used more recently than this are never removed.
    #[arg(long, default_value = "2m", value_parser = units::parse_duration)]
    pub image_gc_min_age: Duration,
    /// Remove images unused for this long whatever the disk [default: never].
    #[arg(long, value_parser = units::parse_duration)]
    pub image_gc_max_age: Option<Duration>,
    /// How often the image garbage collection runs.
    #[arg(long, default_value = "5m", value_parser = units::parse_duration)]
    pub image_gc_interval: Duration,
    /// Fetch layers of the server's registry from other nodes too (P2P,
    /// through the server's tracker) and serve this node's to them;
    /// `--p2p=false` pulls from the registry only.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub p2p: bool,
    /// Bytes per second this node sends to peers (e.g. 50MiB); 0 = unlimited.
    #[arg(long, default_value = "0", value_parser = units::parse_size)]
    pub p2p_upload_rate: u64,
    /// Bytes per second this node takes from peers; 0 = unlimited.
    #[arg(long, default_value = "0", value_parser = units::parse_size)]
    pub p2p_download_rate: u64,
    /// Pieces this node sends to peers at once at most (more get 429).
    #[arg(long, default_value_t = wharf_agent::p2p::DEFAULT_UPLOAD_SLOTS, value_parser = clap::value_parser!(u32).range(1..))]
    pub p2p_upload_slots: u32,
}

impl NodeOptions {
    /// The node dir: `--node-dir`, else `/var/lib/wharf/node`.
    pub fn data_dir_of(&self) -> PathBuf {
        self.node_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_NODE_DIR))
    }

    /// runc's state directory for node `name`: `--runc-root`, else
    /// `/run/wharf/NAME/runc`.
    pub fn runc_root_of(&self, name: &str) -> PathBuf {
        self.runc_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("/run/wharf/{name}/runc")))
    }

    /// The runtime setup for node `name` talking to `server`.
    pub fn setup(&self, name: &str, server: &str, host_ip: Option<String>) -> Result<NodeSetup> {
        if self.image_gc_low > self.image_gc_high {
            bail!(
                "--image-gc-low {} is above --image-gc-high {}: collection would never stop",
                self.image_gc_low,
                self.image_gc_high
            );
        }
        if self.image_gc_interval.is_zero() {
            bail!("--image-gc-interval must be longer than 0");
        }
        let credentials = match &self.registry_user {
            Some(user) => {
                let password = std::env::var("WHARF_REGISTRY_PASSWORD").map_err(|_| {
                    anyhow::anyhow!(
                        "--registry-user {user} needs its password in WHARF_REGISTRY_PASSWORD"
                    )
                })?;
                Some(RegistryCredentials::new(user.clone(), password))
            }
            None => None,
        };
        let url = crate::client::parse_server_url(server)?;
        let server_host = match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => Some(format!("{host}:{port}")),
            _ => None,
        };
        let mut plain_http = self.insecure_registry.clone();
        if url.scheme() == "http" {
            plain_http.extend(server_host.clone());
        }
        Ok(NodeSetup {
            node: name.to_string(),
            data_dir: self.data_dir_of(),
            runc: self.runc.clone(),
            runc_root: self.runc_root_of(name),
            shim: ShimCommand::current_exe(&["shim"]).context("locating the wharf binary")?,
            bridge: BridgeConfig {
                bridge: self.bridge.clone(),
                netns_prefix: self.netns_prefix.clone(),
                mtu: None,
                host_netns: self.host_netns.clone(),
            },
            local_cidr: self.pod_cidr.clone(),
            host_ip,
            credentials,
            default_registry: server_host,
            plain_http,
            images: ImageStoreOptions {
                max_expansion: self.max_layer_expansion,
                expansion_floor: self.min_layer_limit,
                max_image_bytes: self.max_image_size,
                reserve_bytes: self.image_disk_reserve,
                ..ImageStoreOptions::default()
            },
            image_gc: ImageGcPolicy {
                high_percent: self.image_gc_high,
                low_percent: self.image_gc_low,
                min_age: self.image_gc_min_age,
                max_unused_age: self.image_gc_max_age,
            },
            image_gc_interval: self.image_gc_interval,
            resolv_conf: self.resolv_conf.clone(),
            p2p: self.p2p.then_some(P2pSettings {
                upload_rate: self.p2p_upload_rate,
                download_rate: self.p2p_download_rate,
                upload_slots: self.p2p_upload_slots,
            }),
        })
    }
}

/// Parses `k=v` labels. Kubernetes' standard node labels are refused: the
/// agent sets them from the machine, and a value that silently lost to
/// the agent's would make selectors written against it match the wrong
/// nodes.
fn parse_labels(items: &[String]) -> Result<BTreeMap<String, String>> {
    let mut labels = BTreeMap::new();
    for item in items.iter().filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            bail!("invalid label {item:?}: use key=value");
        };
        let key = key.trim();
        if STANDARD_NODE_LABELS.contains(&key) {
            bail!(
                "label {key} is set by the agent (node name, os, arch): leave it out of --labels"
            );
        }
        labels.insert(key.to_string(), value.trim().to_string());
    }
    Ok(labels)
}

/// A simulated fleet's labels: `--labels` with `--pool` and `--class` as
/// the labels a node is placed by; the flags win over the same keys.
fn node_labels(args: &AgentArgs) -> Result<BTreeMap<String, String>> {
    let mut labels = parse_labels(&args.labels)?;
    if let Some(pool) = &args.pool {
        labels.insert(LABEL_POOL.to_string(), pool.clone());
    }
    if let Some(class) = &args.machine_class {
        labels.insert(LABEL_MACHINE_CLASS.to_string(), class.clone());
    }
    Ok(labels)
}

/// Access tokens from the stored login, refreshed as needed.
pub struct StoredLogin(pub Mutex<ApiClient>);

#[async_trait]
impl TokenSource for StoredLogin {
    async fn token(&self) -> Result<String, AgentError> {
        self.0
            .lock()
            .await
            .access_token()
            .await
            .map_err(|e| AgentError::Api(format!("{e:#}")))
    }

    async fn refresh(&self) -> Result<String, AgentError> {
        self.0
            .lock()
            .await
            .refreshed_token()
            .await
            .map_err(|e| AgentError::Api(format!("{e:#}")))
    }
}

/// How the agent authenticates: its node's own credential (from a join)
/// or the stored login of an administrator.
struct AgentLogin {
    server: String,
    tokens: Arc<dyn TokenSource>,
    /// Registry credentials for pulls, replacing `--registry-user`.
    registry: Option<RegistryCredentials>,
    /// Labels the join gave the node (its pool's).
    labels: BTreeMap<String, String>,
}

async fn agent_login(args: &AgentArgs) -> Result<AgentLogin> {
    let node_dir = args.node.data_dir_of();
    let joined = match args.simulate {
        Some(_) => None,
        None => {
            let token = args.join_token.as_deref();
            NodeCredential::obtain(args.server.as_deref(), &args.name, &node_dir, token).await?
        }
    };
    if let Some(credential) = joined {
        return Ok(AgentLogin {
            server: credential.server.clone(),
            registry: Some(RegistryCredentials::new(
                credential.name.clone(),
                credential.secret.clone(),
            )),
            labels: credential.labels.clone(),
            tokens: Arc::new(CredentialLogin::new(credential)),
        });
    }
    let client = ApiClient::for_stored_login(args.server.as_deref())?;
    let server = client.server().to_string();
    if client.user().is_none() {
        bail!(
            "not logged in to {server}: run wharf login {server} -u admin (agents act as an administrator), or join with --join-token"
        );
    }
    Ok(AgentLogin {
        server,
        tokens: Arc::new(StoredLogin(Mutex::new(client))),
        registry: None,
        labels: BTreeMap::new(),
    })
}

/// Runs until interrupted.
pub async fn run(args: AgentArgs) -> Result<()> {
    let login = agent_login(&args).await?;
    let server = login.server;
    // The join's labels (its pool), then the flags'. A real agent's
    // `--pool`/`--class` are its config's (labels and the join-pool
    // annotation: `AgentConfig::node`); a hollow fleet's are labels only.
    let mut labels = login.labels;
    labels.extend(match args.simulate {
        Some(_) => node_labels(&args)?,
        None => parse_labels(&args.labels)?,
    });
    let registry_login = login.registry;
    let api = Arc::new(HttpNodeApi::new(&server, login.tokens)?);
    let work = async move {
        match args.simulate {
            Some(count) => {
                let mut fleet = SimulationConfig::new(count);
                fleet.prefix = args.name.clone();
                if let Some(ttl) = args.lease_ttl {
                    fleet.heartbeat_ttl = ttl;
                }
                fleet.heartbeat_interval = args.heartbeat_interval;
                fleet.loads = args.load.clone();
                fleet.labels = labels;
                if let Some(cpu) = &args.cpu {
                    fleet.capacity.cpu_millis = wharf_api::parse_cpu_millis("--cpu", cpu)?;
                }
                if let Some(memory) = &args.memory {
                    fleet.capacity.memory_bytes =
                        wharf_api::parse_memory_bytes("--memory", memory)?;
                }
                eprintln!(
                    "simulating {count} nodes named {}-00001.. against {server}",
                    args.name
                );
                Simulation::new(api, fleet)
                    .run()
                    .await
                    .context("simulated fleet")
            }
            None => {
                let mut config = AgentConfig::new(&args.name);
                config.labels = labels;
                config.pool = args.pool.clone();
                config.machine_class = args.machine_class.clone();
                config.cost_per_hour = args.cost_per_hour;
                config.address = args.address.clone();
                config.max_pods = args.max_pods;
                config.heartbeat_ttl = args.lease_ttl.unwrap_or(config.heartbeat_ttl);
                config.heartbeat_interval =
                    args.heartbeat_interval.unwrap_or(config.heartbeat_interval);
                config.usage_interval = args.usage_interval;
                config.metrics_interval = args.node.metrics_interval;
                config.status_interval = args.status_interval;
                config.load_source = args.load_source;
                let mut init = InitSettings::new(&args.node.data_dir_of());
                init.interval = args.init_interval;
                config.init = Some(init);
                let api: Arc<dyn NodeApi> = api;
                let (runtime, logs, dns) = node_runtime(
                    &args.node,
                    &args.name,
                    &server,
                    args.address.clone(),
                    api.clone(),
                    registry_login,
                    config.latest_samples.clone(),
                )
                .await?;
                config.endpoint = logs.as_ref().map(|(_, endpoint)| endpoint.clone());
                let _serving = logs.map(|(task, _)| AbortOnDropHandle::new(task));
                eprintln!("agent for node {} serving {server}", args.name);
                let agent = Agent::new(api, runtime, config);
                if let Some(dns) = &dns {
                    dns.follow(agent.services());
                }
                with_service_rules(agent, &args.node, &args.name)
                    .await
                    .run()
                    .await;
                Ok(())
            }
        }
    };
    tokio::select! {
        result = work => result,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// `agent`, forwarding services with nftables if it runs containers and
/// `nft` is installed (without it, service addresses do not answer on
/// this node: said once, at start).
pub async fn with_service_rules(agent: Agent, options: &NodeOptions, name: &str) -> Agent {
    if options.runtime == "none" {
        return agent;
    }
    let nft = tokio::process::Command::new("nft")
        .arg("-V")
        .output()
        .await
        .is_ok();
    if !nft {
        tracing::warn!(
            "nft not found (apt-get install nftables): service addresses do not answer on this node"
        );
        return agent;
    }
    agent.with_service_rules(Arc::new(NftServices::new(name, options.host_netns.clone())))
}

/// A node's runtime, for runc the log endpoint's task and URL, and the
/// pods' name server (to follow the agent's services once it exists).
pub type NodeRuntime = (
    Arc<dyn Runtime>,
    Option<(tokio::task::JoinHandle<()>, String)>,
    Option<DnsServer>,
);

/// The runtime `options` ask for; `credentials`, when given, replace the
/// registry login of `--registry-user`.
pub async fn node_runtime(
    options: &NodeOptions,
    name: &str,
    server: &str,
    host_ip: Option<String>,
    api: Arc<dyn NodeApi>,
    credentials: Option<RegistryCredentials>,
    latest: LatestSamples,
) -> Result<NodeRuntime> {
    if options.runtime == "none" {
        return Ok((
            Arc::new(NoRuntime {
                node: name.to_string(),
            }),
            None,
            None,
        ));
    }
    let mut setup = options.setup(name, server, host_ip.clone())?;
    if credentials.is_some() {
        setup.credentials = credentials;
    }
    let runtime = setup
        .open(api.clone())
        .await
        .context("setting up the container runtime")?;
    let listener = tokio::net::TcpListener::bind(options.logs_listen)
        .await
        .with_context(|| format!("listening for log requests on {}", options.logs_listen))?;
    let bound = listener.local_addr()?;
    let host = if bound.ip().is_unspecified() {
        host_ip.unwrap_or_else(|| "127.0.0.1".into())
    } else {
        bound.ip().to_string()
    };
    let endpoint = format!("http://{host}:{}", bound.port());
    let dns = runtime.dns().cloned();
    let serving = runtime.clone();
    let node = name.to_owned();
    let task = tokio::spawn(async move {
        if let Err(err) = wharf_agent::serve_endpoint(listener, &node, api, serving, latest).await {
            tracing::error!(error = %err, "the agent endpoint stopped");
        }
    });
    Ok((runtime, Some((task, endpoint)), dns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Command {
        #[command(flatten)]
        agent: AgentArgs,
    }

    #[test]
    fn pool_and_class_flags_become_the_labels_placement_reads() {
        use clap::Parser;
        let command = Command::try_parse_from([
            "agent",
            "--name",
            "old",
            "--simulate",
            "2",
            "--labels",
            "wharf.io/pool=x,disk=hdd",
            "--pool",
            "batch",
            "--class",
            "legacy-12c16g",
            "--cpu",
            "12",
            "--memory",
            "16Gi",
        ])
        .unwrap();
        let labels = node_labels(&command.agent).unwrap();
        assert_eq!(labels[LABEL_POOL], "batch");
        assert_eq!(labels[LABEL_MACHINE_CLASS], "legacy-12c16g");
        assert_eq!(labels["disk"], "hdd");
        let sized_without_simulate =
            Command::try_parse_from(["agent", "--name", "n", "--cpu", "12"]);
        assert!(sized_without_simulate.is_err());
    }

    #[test]
    fn p2p_is_on_by_default_and_its_flags_reach_the_node_setup() {
        use clap::Parser;
        let setup = |flags: &[&str]| {
            let mut argv = vec!["agent", "--name", "n1", "--server", "http://127.0.0.1:7700"];
            argv.extend_from_slice(flags);
            let command = Command::try_parse_from(argv).unwrap();
            let options = &command.agent.node;
            options.setup("n1", "http://127.0.0.1:7700", None).unwrap()
        };
        assert_eq!(setup(&[]).p2p, Some(P2pSettings::default()));
        let tuned = setup(&[
            "--p2p-upload-rate",
            "50MiB",
            "--p2p-download-rate",
            "1000",
            "--p2p-upload-slots",
            "2",
        ]);
        assert_eq!(
            tuned.p2p,
            Some(P2pSettings {
                upload_rate: 50 << 20,
                download_rate: 1000,
                upload_slots: 2,
            })
        );
        assert_eq!(setup(&["--p2p=false"]).p2p, None);
        assert!(
            Command::try_parse_from(["agent", "--name", "n1", "--p2p-upload-slots", "0"]).is_err()
        );
    }

    #[test]
    fn labels() {
        let parsed =
            parse_labels(&["wharf.io/pool=web".into(), "a = b".into(), String::new()]).unwrap();
        assert_eq!(parsed["wharf.io/pool"], "web");
        assert_eq!(parsed["a"], "b");
        assert!(parse_labels(&["novalue".into()]).is_err());
        let clash = parse_labels(&["kubernetes.io/arch=s390x".into()]).unwrap_err();
        assert!(
            clash
                .to_string()
                .contains("kubernetes.io/arch is set by the agent"),
            "{clash}"
        );
    }
}
