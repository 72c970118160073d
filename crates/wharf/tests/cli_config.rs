//! ConfigMaps and Secrets through the CLI against a real server: create,
//! apply, get, describe, delete, immutability, and who may read a Secret's
//! values (`--show-secrets`: maintainers and above).

mod common;

use std::path::Path;

use common::TestServer;
use common::cli::{fails, ok, run as wharf};
use common::server::ADMIN_PASSWORD;
use serde_json::Value;

/// The value no listing, description or store file may show.
const SECRET_VALUE: &str = "s3cret-v4lue-9f2c";

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn log_in(home: &Path, url: &str, user: &str, password: &str) {
    ok(wharf(
        home,
        &["login", url, "-u", user, "--password-stdin"],
        &format!("{password}\n"),
    ));
}

/// The administrator logged in (in the home returned), with project `shop`.
fn admin_with_shop(url: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    log_in(home.path(), url, "admin", ADMIN_PASSWORD);
    ok(wharf(home.path(), &["project", "create", "shop"], ""));
    home
}

/// A user `name` with `role` in project `shop`, logged in in their own home.
fn member(admin: &Path, url: &str, name: &str, role: &str) -> tempfile::TempDir {
    let password = format!("{name}-password");
    ok(wharf(
        admin,
        &["user", "create", name, "--password-stdin"],
        &format!("{password}\n"),
    ));
    ok(wharf(
        admin,
        &["project", "member", "add", "shop", name, "--role", role],
        "",
    ));
    let home = tempfile::tempdir().unwrap();
    log_in(home.path(), url, name, &password);
    home
}

#[test]
fn config_maps_from_literals_files_and_manifests() {
    let server = TestServer::start();
    let url = server.url();
    let admin_home = admin_with_shop(&url);
    let home = admin_home.path();
    let file = home.join("app.conf");
    std::fs::write(&file, "listen=80\n").unwrap();
    let from_file = format!("--from-file={}", file.display());
    let out = ok(wharf(
        home,
        &[
            "create",
            "configmap",
            "web",
            "-p",
            "shop",
            "--from-literal",
            "mode=prod",
            &from_file,
        ],
        "",
    ));
    assert!(out.contains("configmap/web created"), "{out}");
    let err = fails(wharf(
        home,
        &["create", "cm", "web", "-p", "shop", "--from-literal", "a=b"],
        "",
    ));
    assert!(err.contains("already exists"), "{err}");

    let table = ok(wharf(home, &["get", "configmaps", "-p", "shop"], ""));
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("NAME") && header.contains("DATA"),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("web") && l.contains(" 2 ")),
        "{table}"
    );
    let shown = json(&ok(wharf(
        home,
        &["get", "cm", "web", "-p", "shop", "-o", "json"],
        "",
    )));
    assert_eq!(shown["data"]["mode"], "prod");
    assert_eq!(shown["data"]["app.conf"], "listen=80\n");
    let described = ok(wharf(home, &["describe", "cm", "web", "-p", "shop"], ""));
    assert!(
        described.contains("mode:") && described.contains("prod"),
        "{described}"
    );

    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen, namespace: shop}\n\
                    data: {k: one}\nimmutable: true\n";
    let out = ok(wharf(home, &["apply", "-f", "-"], manifest));
    assert!(out.contains("configmap/frozen created"), "{out}");
    let err = fails(wharf(
        home,
        &["apply", "-f", "-"],
        &manifest.replace("one", "two"),
    ));
    assert!(err.contains("immutable"), "{err}");
    let shown = json(&ok(wharf(
        home,
        &["get", "cm", "frozen", "-p", "shop", "-o", "json"],
        "",
    )));
    assert_eq!(shown["data"]["k"], "one");

    let out = ok(wharf(home, &["delete", "-f", "-"], manifest));
    assert!(out.contains("configmap/frozen deleted"), "{out}");
    ok(wharf(
        home,
        &["delete", "configmap", "web", "-p", "shop"],
        "",
    ));
    let err = fails(wharf(home, &["get", "cm", "web", "-p", "shop"], ""));
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn secret_values_are_shown_only_to_maintainers_who_ask() {
    let server = TestServer::start();
    let url = server.url();
    let admin_home = admin_with_shop(&url);
    let admin = admin_home.path();
    let developer = member(admin, &url, "dev", "developer");
    let maintainer = member(admin, &url, "maint", "maintainer");
    let guest = member(admin, &url, "guest", "guest");
    let dev = developer.path();

    let literal = format!("password={SECRET_VALUE}");
    let out = ok(wharf(
        dev,
        &[
            "create",
            "secret",
            "generic",
            "db",
            "-p",
            "shop",
            "--from-literal",
            &literal,
            "--from-literal",
            "user=app",
        ],
        "",
    ));
    assert!(out.contains("secret/db created"), "{out}");
    let err = fails(wharf(
        guest.path(),
        &[
            "create",
            "secret",
            "generic",
            "other",
            "-p",
            "shop",
            "--from-literal",
            "a=b",
        ],
        "",
    ));
    assert!(
        err.contains("denied") || err.contains("not allowed") || err.contains("403"),
        "{err}"
    );

    // Listings and descriptions name keys and sizes, never values.
    let table = ok(wharf(
        dev,
        &["get", "secrets", "-p", "shop", "-o", "wide"],
        "",
    ));
    assert!(
        table.contains("Opaque") && table.contains("password,user"),
        "{table}"
    );
    let described = ok(wharf(dev, &["describe", "secret", "db", "-p", "shop"], ""));
    assert!(
        described.contains(&format!("password:  {} bytes", SECRET_VALUE.len())),
        "{described}"
    );
    let plain = ok(wharf(
        dev,
        &["get", "secret", "db", "-p", "shop", "-o", "yaml"],
        "",
    ));
    assert!(plain.contains("dataSizes"), "{plain}");
    for text in [&table, &described, &plain] {
        assert!(!text.contains(SECRET_VALUE), "{text}");
        assert!(!text.contains(&base64(SECRET_VALUE)), "{text}");
    }

    // Values: only with --show-secrets, only as YAML or JSON, only for a maintainer.
    let err = fails(wharf(
        dev,
        &["get", "secret", "db", "-p", "shop", "--show-secrets"],
        "",
    ));
    assert!(err.contains("-o yaml"), "{err}");
    let err = fails(wharf(
        dev,
        &[
            "get",
            "secret",
            "db",
            "-p",
            "shop",
            "-o",
            "yaml",
            "--show-secrets",
        ],
        "",
    ));
    assert!(err.contains("maintainer"), "{err}");
    let shown = json(&ok(wharf(
        maintainer.path(),
        &[
            "get",
            "secret",
            "db",
            "-p",
            "shop",
            "-o",
            "json",
            "--show-secrets",
        ],
        "",
    )));
    assert_eq!(shown["data"]["password"], base64(SECRET_VALUE));
    assert_eq!(shown["type"], "Opaque");
    let audit = ok(wharf(admin, &["audit", "-o", "json"], ""));
    assert!(audit.contains("secret.read"), "{audit}");

    // Sealed at rest: the store file holds no value in the clear.
    let store = std::fs::read(server.data_dir().join("state.redb")).unwrap();
    let holds = |needle: &[u8]| store.windows(needle.len()).any(|w| w == needle);
    assert!(holds(b"sealedData"), "the Secret is in the file");
    for needle in [SECRET_VALUE.to_string(), base64(SECRET_VALUE)] {
        assert!(!holds(needle.as_bytes()), "{needle} in state.redb");
    }

    let err = fails(wharf(dev, &["delete", "secret", "db", "-p", "shop"], ""));
    assert!(
        err.contains("denied") || err.contains("not allowed") || err.contains("403"),
        "{err}"
    );
    ok(wharf(
        maintainer.path(),
        &["delete", "secret", "db", "-p", "shop"],
        "",
    ));
    let err = fails(wharf(dev, &["get", "secret", "db", "-p", "shop"], ""));
    assert!(err.contains("not found"), "{err}");
}

fn base64(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}
