//! The `wharf` binary: server, client commands and benchmarks.

mod bench;
mod client;
mod cmd;
mod demo;
mod local_node;
mod output;
mod password;
mod units;

use std::io::IsTerminal;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use cmd::{
    agent, alert, apply, audit, autoscale, commit, cost, create, delete, describe, down, exec, gc,
    get, image, inventory, ippool, login, logs, metrics, node, p2p_peer, port_forward, project,
    replication, robot, rollout, scale, server, settings, top, up, user,
};

/// Wharf: a private image registry and container platform in one binary.
///
/// Client commands act for the login stored by `wharf login` (in
/// $XDG_CONFIG_HOME/wharf/config.json or ~/.config/wharf/config.json).
#[derive(Parser)]
#[command(name = "wharf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process and matched at once: the size of its largest
// variants (the server's and the agent's flags) costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the server (registry at /v2/, API at /api/v1/).
    Server(server::ServerArgs),
    /// Run the server and a node agent on this machine, with a demo.
    Up(Box<up::UpArgs>),
    /// Stop what `wharf up` started and remove its containers, mounts,
    /// namespaces and bridge (--purge: and its data).
    Down(down::DownArgs),
    /// Run the node agent on this machine (or a simulated fleet).
    Agent(agent::AgentArgs),
    /// Log in to a server and store the session.
    Login(login::LoginArgs),
    /// Forget the stored session.
    Logout,
    /// Manage users.
    User(user::UserArgs),
    /// Manage projects and their members.
    Project(project::ProjectArgs),
    /// Manage robot accounts.
    Robot(robot::RobotArgs),
    /// Query the audit log.
    Audit(audit::AuditArgs),
    /// Show or change system settings.
    Settings(settings::SettingsArgs),
    /// Run garbage collection on the server now.
    Gc(gc::GcArgs),
    /// Create or update the objects of a Kubernetes manifest.
    Apply(apply::ApplyArgs),
    /// Create a configmap or secret from literals and files.
    Create(create::CreateArgs),
    /// List nodes, deployments, pods, configmaps or secrets, or show one;
    /// -w follows changes.
    Get(get::GetArgs),
    /// Show a node, deployment, pod, configmap or secret in detail, with
    /// its events.
    Describe(describe::DescribeArgs),
    /// Delete deployments, pods, nodes, configmaps or secrets, or the
    /// objects of a manifest.
    ///
    /// A pod stays Terminating until its node has stopped it (SIGTERM, then
    /// SIGKILL after the grace period) and freed its address; a deleted
    /// deployment's pods go the same way. The command waits until the
    /// objects are gone unless --wait=false.
    Delete(delete::DeleteArgs),
    /// Change the number of replicas of a deployment.
    Scale(scale::ScaleArgs),
    /// Scale a deployment with its pods' CPU: creates or updates the
    /// HorizontalPodAutoscaler named like it (which overrides a manual
    /// scale at its next sync).
    Autoscale(autoscale::AutoscaleArgs),
    /// Follow, pause, resume, restart or undo a deployment's rollout, or
    /// list its revisions.
    Rollout(rollout::RolloutArgs),
    /// Change a deployment's template (set image deployment/NAME C=IMAGE).
    Set(rollout::SetArgs),
    /// Cordon, uncordon or taint nodes.
    Node(node::NodeArgs),
    /// Show pods' CPU (millicores) and memory as their nodes measure them.
    Top(top::TopArgs),
    /// Query node and container metrics (falcon samples) as a table, JSON,
    /// CSV or a terminal chart.
    Metrics(metrics::MetricsArgs),
    /// Alert rules over the metrics, their alerts and history, silences,
    /// and the webhooks notified.
    Alert(alert::AlertArgs),
    /// Cost of the nodes by project, pool, cluster, deployment or class.
    Cost(cost::CostArgs),
    /// Print a container's log (-f follows it, --previous shows the run before).
    Logs(logs::LogsArgs),
    /// Run a command in a container (-it for an interactive shell).
    Exec(exec::ExecArgs),
    /// Forward local ports to a pod's ports.
    PortForward(port_forward::PortForwardArgs),
    /// Push a running container's changes as a new image (docker commit).
    Commit(commit::CommitArgs),
    /// Import, list, show or delete IP pools.
    Ippool(ippool::IpPoolArgs),
    /// Clusters of machines (physical, vm, cloud): create, list, describe, delete.
    Cluster(inventory::ClusterArgs),
    /// Service pools of a cluster: create, list, describe, delete; grant,
    /// revoke and list which projects may use them.
    Pool(inventory::PoolArgs),
    /// Machine classes (capacity, price, tier): create, list, describe, delete.
    Machineclass(inventory::MachineClassArgs),
    /// List, inspect or delete images in the registry.
    Image(image::ImageArgs),
    /// Copy images to and from other registries: endpoints, policies, jobs.
    Replication(replication::ReplicationArgs),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Write the demo image (busybox httpd) as an OCI image layout.
    #[command(hide = true)]
    DemoImage {
        /// The layout directory to create.
        #[arg(long)]
        output: std::path::PathBuf,
        /// Its tag in the layout.
        #[arg(long, default_value = "1")]
        tag: String,
    },
    /// Supervise one container (started by the agent, not by people).
    #[command(hide = true)]
    Shim(wharf_runc::ShimArgs),
    /// One lightweight peer of `wharf bench p2p`: pulls an image into a
    /// cache of its own when told to (started by the benchmark).
    #[command(hide = true)]
    P2pPeer(p2p_peer::P2pPeerArgs),
}

fn main() {
    let cli = Cli::parse();
    // Before any thread exists: the shim changes its signal mask.
    if let Command::Shim(args) = cli.command {
        std::process::exit(wharf_runc::shim_main(args));
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for people: logs sent to a file or journald
        // stay plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Err(err) = run(cli) {
        // One line with the whole chain: "creating user bob: access denied: ...".
        eprintln!("error: {err:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Server(args) => server::run(args).await,
            Command::Up(args) => up::run(*args).await,
            Command::Down(args) => down::run(args),
            Command::Agent(args) => agent::run(args).await,
            Command::Login(args) => login::login(args).await,
            Command::Logout => login::logout(),
            Command::User(args) => user::run(args).await,
            Command::Project(args) => project::run(args).await,
            Command::Robot(args) => robot::run(args).await,
            Command::Audit(args) => audit::run(args).await,
            Command::Settings(args) => settings::run(args).await,
            Command::Gc(args) => gc::run(args).await,
            Command::Apply(args) => apply::run(args).await,
            Command::Create(args) => create::run(args).await,
            Command::Get(args) => get::run(args).await,
            Command::Describe(args) => describe::run(args).await,
            Command::Delete(args) => delete::run(args).await,
            Command::Scale(args) => scale::run(args).await,
            Command::Autoscale(args) => autoscale::run(args).await,
            Command::Rollout(args) => rollout::run(args).await,
            Command::Set(args) => rollout::run_set(args).await,
            Command::Node(args) => node::run(args).await,
            Command::Ippool(args) => ippool::run(args).await,
            Command::Cluster(args) => inventory::run_cluster(args).await,
            Command::Pool(args) => inventory::run_pool(args).await,
            Command::Machineclass(args) => inventory::run_machine_class(args).await,
            Command::Image(args) => image::run(args).await,
            Command::Replication(args) => replication::run(args).await,
            Command::Top(args) => top::run(args).await,
            Command::Cost(args) => cost::run(args).await,
            Command::Metrics(args) => metrics::run(args).await,
            Command::Alert(args) => alert::run(args).await,
            Command::Logs(args) => logs::run(args).await,
            Command::Exec(args) => exec::run(args).await,
            Command::PortForward(args) => port_forward::run(args).await,
            Command::Commit(args) => commit::run(args).await,
            Command::Bench(command) => bench::run(command).await,
            Command::P2pPeer(args) => p2p_peer::run(args).await,
            Command::DemoImage { output, tag } => {
                let image = demo::build(std::path::Path::new(demo::BUSYBOX))?;
                image.write_layout(&output, &tag)?;
                println!("{}", image.manifest.digest);
                Ok(())
            }
            Command::Shim(_) => unreachable!("handled before the runtime starts"),
        }
    })
}
