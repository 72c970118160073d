//! Architecture invariant: the node agent links no control plane, store,
//! server, registry, replication or identity code. It reaches the control
//! plane only through `NodeApi` (HTTP in production), so an agent binary
//! stays small and a change on the server side cannot reach into a node.
//!
//! Read from `cargo metadata`: the closure of `wharf-agent`'s normal
//! dependencies (dev- and build-dependencies do not ship) must not contain
//! any of [`FORBIDDEN`].

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Packages the agent must never link.
const FORBIDDEN: &[&str] = &[
    "wharf-control",
    "wharf-store",
    "wharf-store-etcd",
    "wharf-server",
    "wharf-registry",
    "wharf-replication",
    "wharf-auth",
    "redb",
];

/// This machine's target triple: metadata filtered to it needs only the
/// packages a build here has already downloaded (no network).
fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let output = Command::new(&rustc)
        .arg("-vV")
        .output()
        .unwrap_or_else(|e| panic!("running {rustc} -vV: {e}"));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .find_map(|line| line.strip_prefix("host: "))
        .unwrap_or_else(|| panic!("{rustc} -vV names no host"))
        .to_string()
}

fn workspace_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../Cargo.toml");
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--offline"])
        .arg("--filter-platform")
        .arg(host_triple())
        .arg("--manifest-path")
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("running {cargo} metadata: {e}"));
    assert!(
        output.status.success(),
        "cargo metadata failed (run `cargo fetch` first if a package is missing): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON")
}

/// Whether a dependency edge is a normal one (not only dev or build).
fn is_normal(dep: &Value) -> bool {
    dep["dep_kinds"]
        .as_array()
        .is_some_and(|kinds| kinds.iter().any(|k| k["kind"].is_null()))
}

/// Every package reachable from `root` over normal edges, each with the
/// package it was first reached from (breadth first: shortest paths).
fn normal_closure<'m>(
    nodes: &BTreeMap<&'m str, &'m Value>,
    root: &'m str,
) -> BTreeMap<&'m str, Option<&'m str>> {
    let mut reached = BTreeMap::from([(root, None)]);
    let mut queue = VecDeque::from([root]);
    while let Some(id) = queue.pop_front() {
        let node: &'m Value = nodes[id];
        let deps = node["deps"].as_array().into_iter().flatten();
        for dep in deps.filter(|d| is_normal(d)) {
            let next = dep["pkg"].as_str().expect("dependency ids are strings");
            if !reached.contains_key(next) {
                reached.insert(next, Some(id));
                queue.push_back(next);
            }
        }
    }
    reached
}

/// `wharf-agent -> a -> b` for a package reached as `normal_closure` says.
fn path_to<'m>(
    names: &BTreeMap<&'m str, &'m str>,
    reached: &BTreeMap<&'m str, Option<&'m str>>,
    mut id: &'m str,
) -> String {
    let mut path = vec![names[id]];
    while let Some(Some(from)) = reached.get(id) {
        path.push(names[from]);
        id = from;
    }
    path.reverse();
    path.join(" -> ")
}

#[test]
fn the_agent_links_no_control_plane_store_or_server() {
    let metadata = workspace_metadata();
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .expect("packages")
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: BTreeMap<&str, &Value> = metadata["resolve"]["nodes"]
        .as_array()
        .expect("a resolved graph")
        .iter()
        .map(|n| (n["id"].as_str().unwrap(), n))
        .collect();
    let agent = names
        .iter()
        .find_map(|(id, name)| (*name == "wharf-agent").then_some(*id))
        .expect("wharf-agent is a workspace member");
    let reached = normal_closure(&nodes, agent);
    assert!(
        reached.len() > 10,
        "the graph was read: {} packages",
        reached.len()
    );

    let offending: Vec<String> = reached
        .keys()
        .filter(|id| FORBIDDEN.iter().any(|f| *f == names[*id]))
        .map(|id| path_to(&names, &reached, id))
        .collect();
    assert!(
        offending.is_empty(),
        "wharf-agent must not link these (through normal dependencies):\n  {}",
        offending.join("\n  ")
    );
}
