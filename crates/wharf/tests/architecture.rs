//! Architecture invariants about what links what (see ARCHITECTURE.md),
//! read from `cargo metadata`: the closure of a crate's normal dependencies
//! (dev- and build-dependencies do not ship) must not contain the packages
//! its [`RULES`] entry forbids.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// A crate, the packages it must never link, and why.
struct Rule {
    root: &'static str,
    forbidden: &'static [&'static str],
    why: &'static str,
}

const RULES: &[Rule] = &[
    Rule {
        root: "wharf-agent",
        forbidden: &[
            "wharf-control",
            "wharf-store",
            "wharf-store-etcd",
            "wharf-server",
            "wharf-registry",
            "wharf-replication",
            "wharf-auth",
            "redb",
        ],
        why: "the agent reaches the control plane only through NodeApi (HTTP in production), \
              so a change on the server side cannot reach into a node",
    },
    Rule {
        root: "wharf-server",
        forbidden: &["wharf-image", "tar", "zstd", "xattr", "flate2"],
        why: "the server stores and copies blobs as they are; unpacking layers is the node's",
    },
    Rule {
        root: "wharf-distribution",
        forbidden: &["wharf-image", "tar", "zstd", "xattr", "flate2", "redb"],
        why: "the registry client is network only: no archives, no disk",
    },
    Rule {
        root: "wharf-api",
        forbidden: &["tokio", "reqwest", "axum", "redb", "wharf-store"],
        why: "object and wire types do no IO, so the CLI and every service can share them",
    },
    Rule {
        root: "wharf-dashboard",
        forbidden: &[
            "wharf-auth",
            "wharf-store",
            "wharf-registry",
            "wharf-control",
            "wharf-server",
            "redb",
            "reqwest",
        ],
        why: "the dashboard serves its files and nothing else: the app is a client of the \
              public API, so it can neither read state nor decide access",
    },
    Rule {
        root: "wharf-oci",
        forbidden: &["tokio", "reqwest", "axum", "redb", "wharf-store"],
        why: "OCI types do no IO",
    },
    Rule {
        root: "wharf-tsdb",
        forbidden: &["tokio", "reqwest", "axum", "redb", "wharf-store"],
        why: "the metrics store is synchronous file and memory work that callers put off \
              their async workers, and metrics never go to the Store (etcd)",
    },
    Rule {
        root: "wharf-provider",
        forbidden: &[
            "axum",
            "redb",
            "wharf-store",
            "wharf-control",
            "wharf-server",
        ],
        why: "machine drivers are API clients: no server types and no Store, so the control \
              plane decides what to make and the drivers only make it",
    },
    Rule {
        root: "wharf-image",
        forbidden: &["wharf-p2p"],
        why: "the image cache gets blobs through its BlobFetcher; the agent plugs P2P in, \
              so the cache works the same with or without it",
    },
    Rule {
        root: "wharf-p2p",
        forbidden: &["wharf-store", "wharf-store-etcd", "redb", "wharf-image"],
        why: "who holds which piece is hot state kept in memory, never in the Store; \
              pieces are bytes, unpacking them is the image cache's",
    },
    Rule {
        root: "wharf",
        forbidden: &["wharf-testkit"],
        why: "test support is never shipped",
    },
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

/// `root -> a -> b` for a package reached as `normal_closure` says.
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
fn crates_link_only_what_their_layer_allows() {
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
    let mut broken = Vec::new();
    for rule in RULES {
        let root = names
            .iter()
            .find_map(|(id, name)| (*name == rule.root).then_some(*id))
            .unwrap_or_else(|| panic!("{} is a workspace member", rule.root));
        let reached = normal_closure(&nodes, root);
        assert!(
            reached.len() > 3,
            "the graph of {} was read: {} packages",
            rule.root,
            reached.len()
        );
        for id in reached.keys() {
            if rule.forbidden.contains(&names[id]) {
                broken.push(format!("{} ({})", path_to(&names, &reached, id), rule.why));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that break the architecture (through normal dependencies):\n  {}",
        broken.join("\n  ")
    );
}
