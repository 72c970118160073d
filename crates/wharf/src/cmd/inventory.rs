//! `wharf cluster|pool|machineclass create|list|describe|delete`: the
//! inventory above nodes. `create` takes the common fields as flags; the
//! rest (taints, init profiles, providers, autoscaling) come with
//! `wharf apply -f`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use wharf_api::{Cluster, MachineClass, ObjectMeta, Pool, QuantityRange};

use super::ServerOption;
use super::pool_grant::{self, GrantArgs, GrantsArgs, RevokeArgs};
use crate::client::{ApiClient, unix_now};
use crate::output::{self, OutputOption, Table, age, render_fields};

/// `wharf cluster`: clusters of machines (physical, vm or cloud).
#[derive(Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: ClusterCommand,
}

/// Managing clusters (writes: clusterAdmin).
#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Create a cluster.
    Create {
        /// Cluster name.
        name: String,
        /// What its machines are.
        #[arg(long, value_parser = ["physical", "vm", "cloud"], default_value = "physical")]
        kind: String,
        /// Its data centre (`wharf.io/idc` on its nodes).
        #[arg(long)]
        idc: Option<String>,
        /// The price of a node per hour when neither pool nor class sets one.
        #[arg(long)]
        price_per_hour: Option<f64>,
    },
    #[command(flatten)]
    Common(CommonCommand),
}

/// `wharf pool`: service pools of a cluster.
#[derive(Args)]
pub struct PoolArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: PoolCommand,
}

/// Managing pools and who may use them (writes: clusterAdmin).
#[derive(Subcommand)]
pub enum PoolCommand {
    /// Create a pool in a cluster.
    Create {
        /// Pool name (`wharf.io/pool` on its nodes).
        name: String,
        /// The cluster it belongs to.
        #[arg(long)]
        cluster: String,
        /// Machine classes its nodes may be [default: any].
        #[arg(long = "classes", value_delimiter = ',')]
        classes: Vec<String>,
        /// Labels its nodes get, `key=value,...`.
        #[arg(long, value_delimiter = ',')]
        labels: Vec<String>,
        /// Overrides the class's and cluster's price per hour.
        #[arg(long)]
        price_per_hour: Option<f64>,
    },
    #[command(flatten)]
    Common(CommonCommand),
    /// Let a project place pods on a pool, within an optional quota.
    Grant(GrantArgs),
    /// Take a project's grant on a pool away (running pods stay).
    Revoke(RevokeArgs),
    /// List grants, of one pool or of all.
    Grants(GrantsArgs),
}

/// `wharf machineclass`: kinds of machines.
#[derive(Args)]
pub struct MachineClassArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: MachineClassCommand,
}

/// Managing machine classes (writes: clusterAdmin).
#[derive(Subcommand)]
pub enum MachineClassCommand {
    /// Create a machine class.
    Create {
        /// Class name, e.g. std-32c32g.
        name: String,
        /// Least CPUs of its machines (`16`, `15500m`).
        #[arg(long)]
        cpu_min: Option<String>,
        /// Most CPUs.
        #[arg(long)]
        cpu_max: Option<String>,
        /// Least memory (`24Gi`).
        #[arg(long)]
        memory_min: Option<String>,
        /// Most memory.
        #[arg(long)]
        memory_max: Option<String>,
        /// The price of one machine per hour.
        #[arg(long)]
        price_per_hour: f64,
        /// What its machines are for.
        #[arg(long, value_parser = ["core", "general", "batch"], default_value = "general")]
        tier: String,
    },
    #[command(flatten)]
    Common(CommonCommand),
}

/// What every inventory kind has besides `create`.
#[derive(Subcommand)]
pub enum CommonCommand {
    /// List them.
    List {
        #[command(flatten)]
        output: OutputOption,
    },
    /// Show one.
    Describe {
        /// Name.
        name: String,
        #[command(flatten)]
        output: OutputOption,
    },
    /// Delete one nothing uses any more.
    Delete {
        /// Name.
        name: String,
    },
}

/// An inventory kind as the commands show it.
trait Shown: DeserializeOwned {
    /// API collection (`clusters`) and singular (`cluster`).
    const PLURAL: &'static str;
    const SINGULAR: &'static str;
    const HEADERS: &'static [&'static str];
    fn metadata(&self) -> &ObjectMeta;
    /// The cells after NAME, before AGE.
    fn cells(&self) -> Vec<String>;
    /// Fields `describe` shows after the name.
    fn fields(&self) -> Vec<(&'static str, String)>;
}

fn none() -> String {
    "<none>".into()
}

fn price(price: Option<f64>) -> String {
    price.map_or_else(none, |p| p.to_string())
}

fn list_text(items: &[String]) -> String {
    if items.is_empty() {
        none()
    } else {
        items.join(",")
    }
}

fn range(range: Option<&QuantityRange>) -> String {
    match range {
        None => "any".into(),
        Some(r) => format!(
            "{}..{}",
            r.min.as_deref().unwrap_or(""),
            r.max.as_deref().unwrap_or("")
        ),
    }
}

impl Shown for Cluster {
    const PLURAL: &'static str = "clusters";
    const SINGULAR: &'static str = "cluster";
    const HEADERS: &'static [&'static str] = &["NAME", "KIND", "IDC", "PRICE/H", "AGE"];
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.spec.kind.as_str().into(),
            self.spec.idc.clone().unwrap_or_else(none),
            price(self.spec.price_per_hour),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let provider = self.spec.provider.as_ref();
        let mut fields: Vec<(&'static str, String)> = ["Kind", "IDC", "Price/h"]
            .into_iter()
            .zip(self.cells())
            .collect();
        fields.push(("Provider", provider.map_or_else(none, |p| p.driver.clone())));
        fields
    }
}

impl Shown for Pool {
    const PLURAL: &'static str = "pools";
    const SINGULAR: &'static str = "pool";
    const HEADERS: &'static [&'static str] =
        &["NAME", "CLUSTER", "CLASSES", "NODES", "PRICE/H", "AGE"];
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn cells(&self) -> Vec<String> {
        vec![
            self.spec.cluster.clone(),
            list_text(&self.spec.machine_classes),
            format!("{}/{}", self.status.ready_nodes, self.status.nodes),
            price(self.spec.price_per_hour),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let spec = &self.spec;
        let labels: Vec<String> = spec
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let taints: Vec<String> = spec
            .taints
            .iter()
            .map(|t| format!("{}={}:{:?}", t.key, t.value, t.effect))
            .collect();
        let mut fields: Vec<(&'static str, String)> =
            ["Cluster", "Classes", "Nodes (ready/all)", "Price/h"]
                .into_iter()
                .zip(self.cells())
                .collect();
        fields.push(("Labels", list_text(&labels)));
        fields.push(("Taints", list_text(&taints)));
        fields.push((
            "Init",
            spec.init.as_ref().map_or_else(none, |init| {
                format!(
                    "{} packages, {} modules, {} sysctls, {} files{}",
                    init.packages.len(),
                    init.kernel_modules.len(),
                    init.sysctls.len(),
                    init.files.len(),
                    if init.script.is_some() {
                        ", a script"
                    } else {
                        ""
                    }
                )
            }),
        ));
        fields.push((
            "Autoscale",
            spec.autoscale.as_ref().map_or_else(none, |a| {
                format!("{}..{} of {}", a.min, a.max, a.machine_class)
            }),
        ));
        fields
    }
}

impl Shown for MachineClass {
    const PLURAL: &'static str = "machineclasses";
    const SINGULAR: &'static str = "machineclass";
    const HEADERS: &'static [&'static str] = &["NAME", "CPU", "MEMORY", "TIER", "PRICE/H", "AGE"];
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn cells(&self) -> Vec<String> {
        vec![
            range(self.spec.cpu.as_ref()),
            range(self.spec.memory.as_ref()),
            self.spec.tier.as_str().into(),
            self.spec.price_per_hour.to_string(),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        ["CPU", "Memory", "Tier", "Price/h"]
            .into_iter()
            .zip(self.cells())
            .collect()
    }
}

#[derive(serde::Deserialize)]
#[serde(bound = "T: DeserializeOwned")]
struct List<T> {
    items: Vec<T>,
}

fn table<T: Shown>(items: Vec<T>) -> String {
    let now = unix_now() * 1000;
    let mut table = Table::new(T::HEADERS);
    for item in items {
        let mut row = vec![item.metadata().name.clone()];
        row.extend(item.cells());
        row.push(age(now, item.metadata().created_at));
        table.row(row);
    }
    table.render()
}

async fn run_common<T: Shown>(client: &mut ApiClient, command: CommonCommand) -> Result<()> {
    match command {
        CommonCommand::List { output } => {
            let answer = client
                .get(&[T::PLURAL])
                .await
                .with_context(|| format!("listing {}", T::PLURAL))?;
            output::print(output.format, answer, |list: List<T>| table(list.items))
        }
        CommonCommand::Describe { name, output } => {
            let answer = client
                .get(&[T::PLURAL, &name])
                .await
                .with_context(|| format!("reading {} {name}", T::SINGULAR))?;
            output::print(output.format, answer, |item: T| {
                let mut fields = vec![("Name", item.metadata().name.clone())];
                fields.extend(item.fields());
                render_fields(&fields)
            })
        }
        CommonCommand::Delete { name } => {
            client
                .delete(&[T::PLURAL, &name])
                .await
                .with_context(|| format!("deleting {} {name}", T::SINGULAR))?;
            println!("{}/{name} deleted", T::SINGULAR);
            Ok(())
        }
    }
}

async fn create<T: Shown>(client: &mut ApiClient, name: &str, body: Value) -> Result<()> {
    client
        .post(&[T::PLURAL], &body)
        .await
        .with_context(|| format!("creating {} {name}", T::SINGULAR))?;
    println!("{}/{name} created", T::SINGULAR);
    Ok(())
}

/// Runs a `wharf cluster` subcommand.
pub async fn run_cluster(args: ClusterArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        ClusterCommand::Create {
            name,
            kind,
            idc,
            price_per_hour,
        } => {
            let body = json!({"metadata": {"name": name},
                "spec": {"kind": kind, "idc": idc, "pricePerHour": price_per_hour}});
            create::<Cluster>(&mut client, &name, body).await
        }
        ClusterCommand::Common(command) => run_common::<Cluster>(&mut client, command).await,
    }
}

/// Runs a `wharf pool` subcommand.
pub async fn run_pool(args: PoolArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        PoolCommand::Create {
            name,
            cluster,
            classes,
            labels,
            price_per_hour,
        } => {
            let mut label_map = serde_json::Map::new();
            for item in labels.iter().filter(|l| !l.is_empty()) {
                let (key, value) = item
                    .split_once('=')
                    .with_context(|| format!("invalid label {item:?}: use key=value"))?;
                label_map.insert(key.trim().into(), value.trim().into());
            }
            let body = json!({"metadata": {"name": name},
                "spec": {"cluster": cluster, "machineClasses": classes, "labels": label_map,
                         "pricePerHour": price_per_hour}});
            create::<Pool>(&mut client, &name, body).await
        }
        PoolCommand::Common(command) => run_common::<Pool>(&mut client, command).await,
        PoolCommand::Grant(grant) => pool_grant::grant(&mut client, grant).await,
        PoolCommand::Revoke(revoke) => pool_grant::revoke(&mut client, revoke).await,
        PoolCommand::Grants(list) => pool_grant::list(&mut client, list).await,
    }
}

/// Runs a `wharf machineclass` subcommand.
pub async fn run_machine_class(args: MachineClassArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        MachineClassCommand::Create {
            name,
            cpu_min,
            cpu_max,
            memory_min,
            memory_max,
            price_per_hour,
            tier,
        } => {
            let mut spec = json!({"pricePerHour": price_per_hour, "tier": tier});
            // A range left out entirely matches by name only.
            if cpu_min.is_some() || cpu_max.is_some() {
                spec["cpu"] = json!({"min": cpu_min, "max": cpu_max});
            }
            if memory_min.is_some() || memory_max.is_some() {
                spec["memory"] = json!({"min": memory_min, "max": memory_max});
            }
            let body = json!({"metadata": {"name": name}, "spec": spec});
            create::<MachineClass>(&mut client, &name, body).await
        }
        MachineClassCommand::Common(command) => {
            run_common::<MachineClass>(&mut client, command).await
        }
    }
}
