//! `wharf node cordon|uncordon|taint`: what the scheduler may place on a
//! node (administrators only); `drain`, `decommission` and `join-command`
//! are in [`super::node_lifecycle`].

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use serde_json::json;
use wharf_api::{Node, Taint, TaintEffect};

use super::ServerOption;
use super::node_lifecycle::{self, DrainArgs, JoinCommandArgs};
use super::objects::{Kind, ObjectName, effect_name, taint_text};
use crate::client::ApiClient;

/// `wharf node`: the server option and a subcommand.
#[derive(Args)]
pub struct NodeArgs {
    #[command(flatten)]
    server: ServerOption,
    #[command(subcommand)]
    command: NodeCommand,
}

/// Changing nodes.
#[derive(Subcommand)]
pub enum NodeCommand {
    /// Mark a node unschedulable: no new pods are placed on it; running
    /// ones stay.
    Cordon {
        /// Node name.
        name: String,
    },
    /// Let new pods be placed on a node again.
    Uncordon {
        /// Node name.
        name: String,
    },
    /// Add taints (key=value:Effect or key:Effect) or remove them
    /// (key:Effect- or key-), as kubectl taint does.
    ///
    /// Effects: NoSchedule, PreferNoSchedule, NoExecute. Pods without a
    /// matching toleration are kept off a tainted node.
    Taint {
        /// Node name.
        name: String,
        /// Taints to add or remove.
        #[arg(required = true, value_name = "TAINT", value_parser = parse_taint_change)]
        changes: Vec<TaintChange>,
        /// Replace the value of a taint with the same key and effect.
        #[arg(long)]
        overwrite: bool,
    },
    /// Cordon a node and move its pods off: each Deployment's pods one at
    /// a time, gracefully (grace period, preStop), each waited for until
    /// its Deployment is available again elsewhere. Pods no Deployment
    /// owns are refused unless --force.
    Drain(DrainArgs),
    /// Drain a node, revoke its credential (its agent stops) and remove it.
    Decommission(DrainArgs),
    /// Print the one line that, run as root on a fresh Debian machine,
    /// installs the agent and joins the machine to a pool with a
    /// single-use token.
    JoinCommand(JoinCommandArgs),
}

/// One taint argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaintChange {
    /// `key=value:Effect`: add this taint.
    Add(Taint),
    /// `key:Effect-`, or `key-` for every effect: remove.
    Remove {
        /// The taint key.
        key: String,
        /// Only this effect; every effect when absent.
        effect: Option<TaintEffect>,
    },
}

/// Reads a taint argument in kubectl's syntax.
fn parse_taint_change(text: &str) -> Result<TaintChange, String> {
    let (body, remove) = match text.strip_suffix('-') {
        Some(body) => (body, true),
        None => (text, false),
    };
    let (key_value, effect) = match body.rsplit_once(':') {
        Some((key_value, effect)) => (key_value, Some(parse_effect(effect)?)),
        None => (body, None),
    };
    let (key, value) = key_value.split_once('=').unwrap_or((key_value, ""));
    if !is_taint_key(key) {
        return Err(format!(
            "invalid taint key {key:?} in {text:?}: use letters, digits, '-', '_', '.', and one '/' for a prefix"
        ));
    }
    if remove {
        // kubectl matches removals by key and effect; a value is ignored.
        return Ok(TaintChange::Remove {
            key: key.to_string(),
            effect,
        });
    }
    let Some(effect) = effect else {
        return Err(format!(
            "taint {text:?} has no effect: write key=value:NoSchedule (or PreferNoSchedule, NoExecute), or end it in '-' to remove"
        ));
    };
    if !is_taint_value(value) {
        return Err(format!(
            "invalid taint value {value:?} in {text:?}: use at most 63 letters, digits, '-', '_' and '.'"
        ));
    }
    Ok(TaintChange::Add(Taint {
        key: key.to_string(),
        value: value.to_string(),
        effect,
        time_added: None,
    }))
}

fn parse_effect(text: &str) -> Result<TaintEffect, String> {
    match text {
        "NoSchedule" => Ok(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Ok(TaintEffect::PreferNoSchedule),
        "NoExecute" => Ok(TaintEffect::NoExecute),
        _ => Err(format!(
            "unknown taint effect {text:?}: use NoSchedule, PreferNoSchedule or NoExecute"
        )),
    }
}

/// A label-like key: `[prefix/]name`.
fn is_taint_key(key: &str) -> bool {
    let name = match key.split_once('/') {
        Some((prefix, name)) => {
            let prefix_ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
            if !prefix_ok {
                return false;
            }
            name
        }
        None => key,
    };
    !name.is_empty() && name.len() <= 63 && name.chars().all(is_label_char) && edges_alnum(name)
}

/// A label-like value, possibly empty.
fn is_taint_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63 && value.chars().all(is_label_char) && edges_alnum(value))
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

fn edges_alnum(text: &str) -> bool {
    text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The taints after `changes`, in order: removals must find something,
/// and an added taint may replace another's value only with `overwrite`.
fn change_taints(
    mut taints: Vec<Taint>,
    changes: &[TaintChange],
    overwrite: bool,
) -> Result<Vec<Taint>, String> {
    for change in changes {
        match change {
            TaintChange::Remove { key, effect } => {
                let before = taints.len();
                taints.retain(|t| !(&t.key == key && effect.is_none_or(|e| e == t.effect)));
                if taints.len() == before {
                    let effect = effect.map_or(String::new(), |e| format!(":{}", effect_name(e)));
                    return Err(format!("taint {key}{effect} not found"));
                }
            }
            TaintChange::Add(taint) => {
                match taints
                    .iter_mut()
                    .find(|t| t.key == taint.key && t.effect == taint.effect)
                {
                    Some(existing) if existing.value == taint.value => {}
                    Some(existing) if overwrite => existing.value = taint.value.clone(),
                    Some(existing) => {
                        return Err(format!(
                            "the node already has {}: give --overwrite to make it {}",
                            taint_text(existing),
                            taint_text(taint)
                        ));
                    }
                    None => taints.push(taint.clone()),
                }
            }
        }
    }
    Ok(taints)
}

/// Runs a `wharf node` subcommand.
pub async fn run(args: NodeArgs) -> Result<()> {
    let mut client = args.server.client()?;
    match args.command {
        NodeCommand::Cordon { name } => set_unschedulable(&mut client, &name, true).await,
        NodeCommand::Uncordon { name } => set_unschedulable(&mut client, &name, false).await,
        NodeCommand::Taint {
            name,
            changes,
            overwrite,
        } => taint(&mut client, &name, &changes, overwrite).await,
        NodeCommand::Drain(args) => node_lifecycle::drain(&mut client, "drain", &args).await,
        NodeCommand::Decommission(args) => {
            node_lifecycle::drain(&mut client, "decommission", &args).await
        }
        NodeCommand::JoinCommand(args) => node_lifecycle::join_command(&mut client, &args).await,
    }
}

async fn read_node(client: &mut ApiClient, name: &str) -> Result<Node> {
    let answer = client
        .get(&["nodes", name])
        .await
        .with_context(|| format!("reading node {name}"))?;
    serde_json::from_value(answer).context("the server's node is not what wharf expects")
}

async fn set_unschedulable(client: &mut ApiClient, name: &str, unschedulable: bool) -> Result<()> {
    let object = ObjectName(Kind::Node, name);
    let (verb, doing) = if unschedulable {
        ("cordoned", "cordoning")
    } else {
        ("uncordoned", "uncordoning")
    };
    let node = read_node(client, name).await?;
    if node.spec.unschedulable == unschedulable {
        println!("{object} already {verb}");
        return Ok(());
    }
    client
        .patch(&["nodes", name], &json!({ "unschedulable": unschedulable }))
        .await
        .with_context(|| format!("{doing} node {name}"))?;
    println!("{object} {verb}");
    Ok(())
}

async fn taint(
    client: &mut ApiClient,
    name: &str,
    changes: &[TaintChange],
    overwrite: bool,
) -> Result<()> {
    let node = read_node(client, name).await?;
    let taints = match change_taints(node.spec.taints, changes, overwrite) {
        Ok(taints) => taints,
        Err(why) => bail!("tainting node {name}: {why}"),
    };
    // The API replaces the whole list.
    client
        .patch(&["nodes", name], &json!({ "taints": taints }))
        .await
        .with_context(|| format!("tainting node {name}"))?;
    let adds = changes.iter().any(|c| matches!(c, TaintChange::Add(_)));
    let verb = if adds { "tainted" } else { "untainted" };
    println!("{} {verb}", ObjectName(Kind::Node, name));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taint(key: &str, value: &str, effect: TaintEffect) -> Taint {
        Taint {
            key: key.into(),
            value: value.into(),
            effect,
            time_added: None,
        }
    }

    #[test]
    fn taint_arguments_use_kubectl_syntax() {
        assert_eq!(
            parse_taint_change("dedicated=web:NoSchedule"),
            Ok(TaintChange::Add(taint(
                "dedicated",
                "web",
                TaintEffect::NoSchedule
            )))
        );
        assert_eq!(
            parse_taint_change("example.com/gpu:NoExecute"),
            Ok(TaintChange::Add(taint(
                "example.com/gpu",
                "",
                TaintEffect::NoExecute
            )))
        );
        assert_eq!(
            parse_taint_change("dedicated:NoSchedule-"),
            Ok(TaintChange::Remove {
                key: "dedicated".into(),
                effect: Some(TaintEffect::NoSchedule)
            })
        );
        assert_eq!(
            parse_taint_change("dedicated=web:PreferNoSchedule-"),
            Ok(TaintChange::Remove {
                key: "dedicated".into(),
                effect: Some(TaintEffect::PreferNoSchedule)
            })
        );
        assert_eq!(
            parse_taint_change("dedicated-"),
            Ok(TaintChange::Remove {
                key: "dedicated".into(),
                effect: None
            })
        );
        for (bad, says) in [
            ("dedicated=web", "has no effect"),
            ("dedicated=web:Sometimes", "unknown taint effect"),
            (":NoSchedule", "invalid taint key"),
            ("bad key=x:NoSchedule", "invalid taint key"),
            ("k=bad value:NoSchedule", "invalid taint value"),
            ("-k:NoSchedule", "invalid taint key"),
        ] {
            let err = parse_taint_change(bad).unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn taints_are_added_replaced_and_removed() {
        let start = vec![
            taint("dedicated", "web", TaintEffect::NoSchedule),
            taint("gpu", "", TaintEffect::NoExecute),
        ];
        let add = |text| parse_taint_change(text).unwrap();
        assert_eq!(
            change_taints(start.clone(), &[add("zone=a:PreferNoSchedule")], false).unwrap(),
            [
                start[0].clone(),
                start[1].clone(),
                taint("zone", "a", TaintEffect::PreferNoSchedule)
            ]
        );
        assert_eq!(
            change_taints(start.clone(), &[add("dedicated=web:NoSchedule")], false).unwrap(),
            start,
            "the same taint again changes nothing"
        );
        let err =
            change_taints(start.clone(), &[add("dedicated=api:NoSchedule")], false).unwrap_err();
        assert!(err.contains("--overwrite"), "{err}");
        assert_eq!(
            change_taints(start.clone(), &[add("dedicated=api:NoSchedule")], true).unwrap()[0],
            taint("dedicated", "api", TaintEffect::NoSchedule)
        );
        assert_eq!(
            change_taints(start.clone(), &[add("dedicated:NoSchedule-")], false).unwrap(),
            [start[1].clone()]
        );
        assert_eq!(
            change_taints(start.clone(), &[add("gpu-"), add("dedicated-")], false).unwrap(),
            []
        );
        let err = change_taints(start.clone(), &[add("dedicated:NoExecute-")], false).unwrap_err();
        assert_eq!(err, "taint dedicated:NoExecute not found");
    }
}
