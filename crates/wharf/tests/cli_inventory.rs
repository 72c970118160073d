//! The inventory through the CLI against a real server: clusters, machine
//! classes and pools created from flags and applied as YAML, listed as
//! tables and JSON, described, refused with the reason (an unknown class,
//! a delete that would orphan a pool), deleted; inventory roles set by the
//! administrator.

mod common;

use common::TestServer;
use common::cli::{fails, ok, run as wharf};
use common::server::ADMIN_PASSWORD;

const POOL: &str = "apiVersion: wharf.io/v1
kind: Pool
metadata: {name: batch}
spec:
  cluster: bj
  machineClasses: [legacy-12c16g]
  taints: [{key: tier, value: batch, effect: NoSchedule}]
  init: {sysctls: {net.ipv4.ip_forward: '1'}}
";

#[test]
fn the_inventory_is_managed_through_the_cli() {
    let server = TestServer::start();
    let home = tempfile::tempdir().unwrap();
    let home = home.path();
    ok(wharf(
        home,
        &["login", &server.url(), "-u", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    ));
    let out = ok(wharf(
        home,
        &[
            "cluster",
            "create",
            "bj",
            "--kind",
            "vm",
            "--idc",
            "bj-1",
            "--price-per-hour",
            "0.05",
        ],
        "",
    ));
    assert_eq!(out, "cluster/bj created\n");
    ok(wharf(
        home,
        &[
            "machineclass",
            "create",
            "legacy-12c16g",
            "--cpu-max",
            "12",
            "--memory-max",
            "16Gi",
            "--price-per-hour",
            "0.12",
            "--tier",
            "batch",
        ],
        "",
    ));
    let create_core = |classes: &str, more: &[&str]| {
        let mut args = vec![
            "pool",
            "create",
            "core",
            "--cluster",
            "bj",
            "--classes",
            classes,
        ];
        args.extend(more);
        wharf(home, &args, "")
    };
    let refused = fails(create_core("std-32c32g", &[]));
    assert!(
        refused.contains("unknown machine class std-32c32g"),
        "{refused}"
    );
    let pricing = ["--labels", "team=web", "--price-per-hour", "0.2"];
    ok(create_core("legacy-12c16g", &pricing));
    let out = ok(wharf(home, &["apply", "-f", "-"], POOL));
    assert_eq!(out, "pool/batch created\n");

    let table = ok(wharf(home, &["pool", "list"], ""));
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["NAME", "CLUSTER", "CLASSES", "NODES", "PRICE/H", "AGE"]
    );
    assert_eq!(
        rows[1][..5],
        ["batch", "bj", "legacy-12c16g", "0/0", "<none>"],
        "{table}"
    );
    assert_eq!(
        rows[2][..5],
        ["core", "bj", "legacy-12c16g", "0/0", "0.2"],
        "{table}"
    );
    let table = ok(wharf(home, &["machineclass", "list"], ""));
    assert!(
        table.contains("legacy-12c16g  ..12  ..16Gi  batch  0.12"),
        "{table}"
    );
    let json = ok(wharf(home, &["cluster", "list", "-o", "json"], ""));
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list["items"][0]["spec"]["idc"], "bj-1");
    let described = ok(wharf(home, &["pool", "describe", "batch"], ""));
    for line in [
        "Cluster:",
        "Taints:",
        "tier=batch:NoSchedule",
        "0 packages, 0 modules, 1 sysctls",
    ] {
        assert!(described.contains(line), "{line}: {described}");
    }
    let yaml = ok(wharf(
        home,
        &["machineclass", "describe", "legacy-12c16g", "-o", "yaml"],
        "",
    ));
    assert!(yaml.contains("tier: batch"), "{yaml}");

    let refused = fails(wharf(home, &["cluster", "delete", "bj"], ""));
    assert!(
        refused.contains("cluster bj still has pools batch, core"),
        "{refused}"
    );

    // Roles: a viewer reads but does not write.
    ok(wharf(
        home,
        &["user", "create", "eve", "--password-stdin"],
        "eve-password-1\n",
    ));
    let out = ok(wharf(home, &["user", "set-role", "eve", "viewer"], ""));
    assert!(out.contains("viewer"), "{out}");
    let eve = tempfile::tempdir().unwrap();
    ok(wharf(
        eve.path(),
        &["login", &server.url(), "-u", "eve", "--password-stdin"],
        "eve-password-1\n",
    ));
    ok(wharf(eve.path(), &["pool", "list"], ""));
    let refused = fails(wharf(eve.path(), &["pool", "delete", "batch"], ""));
    assert!(refused.contains("clusterAdmin"), "{refused}");

    for (kind, name) in [
        ("pool", "batch"),
        ("pool", "core"),
        ("machineclass", "legacy-12c16g"),
        ("cluster", "bj"),
    ] {
        let out = ok(wharf(home, &[kind, "delete", name], ""));
        assert_eq!(out, format!("{kind}/{name} deleted\n"));
    }
    let table = ok(wharf(home, &["cluster", "list"], ""));
    assert_eq!(table.lines().count(), 1, "{table}");
}
