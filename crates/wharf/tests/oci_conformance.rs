//! The OCI distribution-spec conformance suite against the real server:
//! every check must pass, with the suite's token caching on and off, on the
//! embedded store and on etcd.
//!
//! The suite's source is the one CI keeps beside the repository
//! (`../shared/tools/oci-conformance`, or `WHARF_OCI_CONFORMANCE_SRC`);
//! `scripts/oci-conformance/build` builds it offline from Debian's Go.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::etcd::Etcd;
use common::server::ADMIN_PASSWORD;
use common::{TestServer, require, require_tool};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn suite_source() -> PathBuf {
    std::env::var_os("WHARF_OCI_CONFORMANCE_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/tools/oci-conformance"))
}

/// Builds the suite into the target directory; its path.
fn build_suite(out_dir: &Path) -> PathBuf {
    let binary = out_dir.join("oci-conformance");
    let built = Command::new(workspace().join("scripts/oci-conformance/build"))
        .arg(suite_source())
        .arg(&binary)
        .output()
        .expect("running scripts/oci-conformance/build");
    assert!(
        built.status.success(),
        "building the conformance suite failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    binary
}

/// Counts from the suite's `junit.xml` (a count of zero is left out).
#[derive(Debug)]
struct Outcome {
    tests: u64,
    failures: u64,
    errors: u64,
}

fn junit_outcome(results: &Path) -> Outcome {
    let xml = std::fs::read_to_string(results.join("junit.xml")).expect("junit.xml written");
    let suites = xml
        .lines()
        .find(|l| l.trim_start().starts_with("<testsuites"))
        .expect("a <testsuites> element")
        .to_string();
    let count = |name: &str| -> u64 {
        let key = format!(" {name}=\"");
        suites
            .split_once(&key)
            .and_then(|(_, rest)| rest.split('"').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    Outcome {
        tests: count("tests"),
        failures: count("failures"),
        errors: count("errors"),
    }
}

/// Runs the suite once against `server`.
async fn run_suite(suite: &Path, server: &TestServer, cache_auth: bool, what: &str) {
    let results = tempfile::tempdir().unwrap();
    let output = tokio::process::Command::new(suite)
        .current_dir(results.path())
        .env("OCI_REGISTRY", server.host())
        .env("OCI_TLS", "disabled")
        .env("OCI_REPO1", "conformance/repo1")
        .env("OCI_REPO2", "conformance/repo2")
        .env("OCI_USERNAME", "admin")
        .env("OCI_PASSWORD", ADMIN_PASSWORD)
        .env("OCI_CACHE_AUTH", cache_auth.to_string())
        .env("OCI_RESULTS_DIR", results.path())
        .output()
        .await
        .expect("running the conformance suite");
    let outcome = junit_outcome(results.path());
    let log = String::from_utf8_lossy(&output.stdout);
    let failed: Vec<&str> = log.lines().filter(|l| l.contains("failed test")).collect();
    assert!(
        outcome.tests > 800 && outcome.failures == 0 && outcome.errors == 0,
        "{what}: {outcome:?}\n{}",
        failed.join("\n")
    );
    eprintln!("{what}: {} checks, 0 failures", outcome.tests);
}

async fn check_server(suite: &Path, server: TestServer, store: &str) {
    server
        .admin()
        .await
        .create_project("conformance", false, None)
        .await;
    for cache_auth in [true, false] {
        let what = format!("{store} store, OCI_CACHE_AUTH={cache_auth}");
        run_suite(suite, &server, cache_auth, &what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oci_conformance_suite_passes_on_both_stores_with_and_without_token_caching() {
    let source = suite_source();
    if !require(
        source.join("go.mod").exists(),
        &format!(
            "the OCI conformance suite's source is not at {} (set WHARF_OCI_CONFORMANCE_SRC)",
            source.display()
        ),
    ) || !require_tool("etcd", "apt-get install etcd-server")
    {
        return;
    }
    let out = tempfile::tempdir().unwrap();
    let suite = build_suite(out.path());

    check_server(&suite, TestServer::start(), "embedded").await;

    let etcd = Etcd::start();
    let server = TestServer::start_with(&["--store", &etcd.store_arg()]);
    check_server(&suite, server, "etcd").await;
}
