//! `wharf pool grant|revoke|grants`: pool grants, a project's right to
//! place pods on a managed pool, with an optional quota of CPU, memory
//! and pods.

use anyhow::{Context, Result};
use clap::Args;
use serde::Deserialize;
use wharf_api::{GrantQuota, PoolGrant, parse_cpu_millis, parse_memory_bytes};

use crate::client::{ApiClient, unix_now};
use crate::output::{self, OutputOption, Table, age};

/// `wharf pool grant POOL PROJECT [--cpu Q --memory Q --pods N]`
#[derive(Args)]
pub struct GrantArgs {
    /// The pool.
    pool: String,
    /// The project.
    project: String,
    /// Most CPU the project's pods may request on the pool (`16`, `500m`).
    #[arg(long)]
    cpu: Option<String>,
    /// Most memory they may request (`64Gi`).
    #[arg(long)]
    memory: Option<String>,
    /// Most pods.
    #[arg(long)]
    pods: Option<u32>,
}

/// `wharf pool revoke POOL PROJECT`
#[derive(Args)]
pub struct RevokeArgs {
    /// The pool.
    pool: String,
    /// The project.
    project: String,
}

/// `wharf pool grants [POOL]`
#[derive(Args)]
pub struct GrantsArgs {
    /// Only this pool's grants.
    pool: Option<String>,
    #[command(flatten)]
    output: OutputOption,
}

#[derive(Deserialize)]
struct GrantList {
    items: Vec<PoolGrant>,
}

/// The quota the flags ask for, checked before anything is sent.
fn quota(args: &GrantArgs) -> Result<Option<GrantQuota>> {
    if let Some(cpu) = &args.cpu {
        parse_cpu_millis("--cpu", cpu)?;
    }
    if let Some(memory) = &args.memory {
        parse_memory_bytes("--memory", memory)?;
    }
    let quota = GrantQuota {
        cpu: args.cpu.clone(),
        memory: args.memory.clone(),
        pods: args.pods,
    };
    Ok((quota != GrantQuota::default()).then_some(quota))
}

/// Creates the grant; an existing one for the pair is refused by the server.
pub async fn grant(client: &mut ApiClient, args: GrantArgs) -> Result<()> {
    let grant = PoolGrant::new(&args.pool, &args.project, quota(&args)?);
    let body = serde_json::to_value(&grant)?;
    client
        .post(&["poolgrants"], &body)
        .await
        .with_context(|| format!("granting pool {} to project {}", args.pool, args.project))?;
    println!("poolgrant/{} created", grant.metadata.name);
    Ok(())
}

/// Deletes the grant.
pub async fn revoke(client: &mut ApiClient, args: RevokeArgs) -> Result<()> {
    let name = PoolGrant::name_for(&args.pool, &args.project);
    client
        .delete(&["poolgrants", &name])
        .await
        .with_context(|| {
            format!(
                "revoking project {}'s grant on pool {}",
                args.project, args.pool
            )
        })?;
    println!("poolgrant/{name} deleted");
    Ok(())
}

/// Lists grants as a table (or JSON/YAML).
pub async fn list(client: &mut ApiClient, args: GrantsArgs) -> Result<()> {
    let query: Vec<(&str, String)> = args.pool.iter().map(|p| ("pool", p.clone())).collect();
    let answer = client
        .get_with_query(&["poolgrants"], &query)
        .await
        .context("listing pool grants")?;
    output::print(args.output.format, answer, |list: GrantList| {
        let now = unix_now() * 1000;
        let mut table = Table::new(&["POOL", "PROJECT", "CPU", "MEMORY", "PODS", "AGE"]);
        for grant in list.items {
            let quota = grant.spec.quota.unwrap_or_default();
            let or_any = |value: Option<String>| value.unwrap_or_else(|| "-".into());
            table.row([
                grant.spec.pool,
                grant.spec.project,
                or_any(quota.cpu),
                or_any(quota.memory),
                or_any(quota.pods.map(|p| p.to_string())),
                age(now, grant.metadata.created_at),
            ]);
        }
        table.render()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(cpu: Option<&str>, memory: Option<&str>, pods: Option<u32>) -> GrantArgs {
        GrantArgs {
            pool: "core".into(),
            project: "b".into(),
            cpu: cpu.map(Into::into),
            memory: memory.map(Into::into),
            pods,
        }
    }

    #[test]
    fn flags_make_the_quota_and_bad_ones_are_refused_here() {
        assert_eq!(quota(&args(None, None, None)).unwrap(), None);
        let asked = quota(&args(Some("4"), Some("8Gi"), Some(10)))
            .unwrap()
            .unwrap();
        assert_eq!(asked.cpu.as_deref(), Some("4"));
        assert_eq!(asked.pods, Some(10));
        assert!(quota(&args(Some("four"), None, None)).is_err());
        assert!(quota(&args(None, Some("lots"), None)).is_err());
    }
}
