//! The server's data directory (store, token and replication keys, blobs)
//! is root's alone: created so, and narrowed at start on older installs.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use wharf_server::{App, ServerConfig};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Opens a server on `data` and shuts it down again (its own runtime, so
/// that every task holding the store ends with it).
fn open(data: &Path) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(open_app(data));
}

async fn open_app(data: &Path) {
    let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), data.to_path_buf());
    config.admin_password = Some("admin-password-for-tests".into());
    config.gc_interval = None;
    let app = App::open(&config).await.unwrap();
    app.audit.flush().await.unwrap();
}

/// The entries directly in the data directory (what a start narrows).
fn entries(data: &Path) -> Vec<std::path::PathBuf> {
    let mut all: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    all.sort();
    all
}

#[test]
fn data_directory_is_private_and_old_installs_are_fixed_at_start() {
    let parent = tempfile::tempdir().unwrap();
    // Only the server's own modes may protect its data.
    std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let data = parent.path().join("data");
    open(&data);
    let check = |data: &Path| {
        assert_eq!(mode(data), 0o700);
        let names: Vec<String> = entries(data)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in ["state.redb", "token.key", "replication.key", "registry"] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        for entry in entries(data) {
            let wanted = if entry.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode(&entry), wanted, "{}", entry.display());
        }
    };
    check(&data);

    // An install from before the rule: everything readable by all.
    for entry in entries(&data) {
        let open = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(open)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    open(&data);
    check(&data);

    // Another local user reads nothing of it.
    if !wharf_testkit::prereq::require_root("the check as user nobody") {
        return;
    }
    for target in [
        data.clone(),
        data.join("state.redb"),
        data.join("token.key"),
    ] {
        let read = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["head", "-c", "1"])
            .arg(&target)
            .output()
            .unwrap();
        let error = String::from_utf8_lossy(&read.stderr);
        assert!(
            !read.status.success() && error.contains("Permission denied"),
            "nobody read {}: {read:?}",
            target.display()
        );
    }
}
