//! `wharf image list|inspect|delete` and `wharf project delete [--force]`
//! against a real server: what the registry holds is listed with tags,
//! sizes and platforms, deletes follow project roles and reach the
//! registry itself, and a project with images is deleted only on request.

mod common;

use common::Image;
use common::ImageIndex;
use common::TestServer;
use common::cli::{run_with_stdin, wharf};
use common::registry::Credentials;
use common::server::ADMIN_PASSWORD;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// A CLI session of `user` on `server`.
struct Session {
    home: tempfile::TempDir,
}

impl Session {
    fn login(server: &TestServer, user: &Credentials) -> Session {
        let session = Session {
            home: tempfile::tempdir().unwrap(),
        };
        let (ok, out) = session.run_stdin(
            &["login", &server.url(), "-u", &user.user, "--password-stdin"],
            &format!("{}\n", user.password),
        );
        assert!(ok, "login as {}: {out}", user.user);
        session
    }

    fn run_stdin(&self, args: &[&str], stdin: &str) -> (bool, String) {
        let mut command = wharf(self.home.path());
        command.args(args);
        let output = run_with_stdin(command, stdin);
        let text = match output.status.success() {
            true => &output.stdout,
            false => &output.stderr,
        };
        (
            output.status.success(),
            String::from_utf8_lossy(text).into_owned(),
        )
    }

    /// Runs `wharf ARGS`; its output, or a panic naming the failure.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.run_stdin(args, "");
        assert!(ok, "wharf {}: {out}", args.join(" "));
        out
    }

    /// Runs `wharf ARGS`, which must fail; its error output.
    fn refused(&self, args: &[&str]) -> String {
        let (ok, out) = self.run_stdin(args, "");
        assert!(!ok, "wharf {} should have failed: {out}", args.join(" "));
        out
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&args)).unwrap()
    }
}

async fn push(server: &TestServer, repo: &str, tag: &str, image: &Image) {
    let (status, body) = server
        .registry()
        .push_image(&server.url(), repo, tag, image)
        .await;
    assert_eq!(status, StatusCode::CREATED, "push {repo}:{tag}: {body}");
}

/// Pushes the images of `index`, then the index itself as `repo:tag`.
async fn push_index(server: &TestServer, repo: &str, tag: &str, index: &ImageIndex) {
    for image in &index.images {
        push(server, repo, &image.manifest.digest.to_string(), image).await;
    }
    let response = server
        .request(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
        .header("Content-Type", index.index.media_type.as_str())
        .body(index.index.bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn manifest_status(server: &TestServer, repo: &str, reference: &str) -> StatusCode {
    server
        .request(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
        .header("Accept", common::registry::ACCEPT_MANIFESTS)
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn images_are_listed_inspected_and_deleted_by_project_role() {
    let server = TestServer::start();
    let api = server.admin().await;
    api.create_project("shop", false, None).await;
    let guest = api.create_member("shop", "gina", "guest").await;
    let developer = api.create_member("shop", "dave", "developer").await;
    let maintainer = api.create_member("shop", "mia", "maintainer").await;
    let first = Image::sample();
    let second = Image::new("arm64", &common::image::sample_layers());
    push(&server, "shop/web", "1", &first).await;
    push(&server, "shop/web", "latest", &first).await;
    push(&server, "shop/web", "2", &second).await;
    let index = ImageIndex::multi_arch();
    push_index(&server, "shop/team/api", "1", &index).await;

    let admin = Session::login(&server, &Credentials::new("admin", ADMIN_PASSWORD));
    // The project's repositories.
    let repositories = admin.json(&["image", "list", "shop"]);
    let names: Vec<&str> = repositories
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shop/team/api", "shop/web"]);
    let web = &repositories[1];
    assert_eq!(web["artifactCount"], 2);
    assert_eq!(web["tagCount"], 3);
    let table = admin.ok(&["image", "list", "shop"]);
    assert!(table.starts_with("REPOSITORY"), "{table}");
    assert!(table.contains("shop/team/api"), "{table}");

    // A repository's artifacts: tags, sizes, platforms; the index's
    // images are under it, not beside it.
    let artifacts = admin.json(&["image", "list", "shop/web"]);
    let by_digest = |digest: &str| -> Value {
        artifacts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["digest"] == digest)
            .cloned()
            .unwrap_or_else(|| panic!("{digest} in {artifacts}"))
    };
    let listed = by_digest(first.manifest.digest.as_str());
    assert_eq!(listed["tags"], serde_json::json!(["1", "latest"]));
    assert_eq!(listed["platforms"], serde_json::json!(["linux/amd64"]));
    let expected_size: u64 = first.blobs().iter().map(|b| b.size()).sum();
    assert_eq!(listed["sizeBytes"], expected_size);
    let listed = by_digest(second.manifest.digest.as_str());
    assert_eq!(listed["platforms"], serde_json::json!(["linux/arm64"]));
    let api_artifacts = admin.json(&["image", "list", "shop/team/api"]);
    assert_eq!(
        api_artifacts.as_array().unwrap().len(),
        1,
        "{api_artifacts}"
    );
    assert_eq!(
        api_artifacts[0]["platforms"],
        serde_json::json!(["linux/amd64", "linux/arm64"])
    );
    let table = admin.ok(&["image", "list", "shop/web"]);
    assert!(table.contains("1,latest"), "{table}");

    // One artifact in detail, by tag, with a registry host in front.
    let reference = format!("{}/shop/web:1", server.host());
    let detail = admin.json(&["image", "inspect", &reference]);
    assert_eq!(detail["digest"], first.manifest.digest.as_str());
    assert_eq!(
        detail["layers"].as_array().unwrap().len(),
        first.layers.len()
    );
    assert_eq!(
        detail["imageConfig"]["Cmd"],
        serde_json::json!(["/app/run"])
    );
    assert_eq!(detail["created"], "2023-11-14T22:13:20Z");
    let text = admin.ok(&["image", "inspect", "shop/web:1"]);
    assert!(
        text.contains("Layers:") && text.contains("/app/run"),
        "{text}"
    );
    let detail = admin.json(&["image", "inspect", "shop/team/api:1"]);
    assert_eq!(detail["manifests"].as_array().unwrap().len(), 2, "{detail}");
    let missing = admin.refused(&["image", "inspect", "shop/web:nope"]);
    assert!(missing.contains("shop/web:nope"), "{missing}");

    // Guests and developers read but do not delete (as in Harbor);
    // maintainers delete.
    let guest = Session::login(&server, &guest);
    assert_eq!(
        guest
            .json(&["image", "list", "shop/web"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let denied = guest.refused(&["image", "delete", "shop/web:2"]);
    assert!(
        denied.to_lowercase().contains("denied") || denied.contains("403"),
        "{denied}"
    );
    assert_eq!(
        manifest_status(&server, "shop/web", "2").await,
        StatusCode::OK
    );
    let developer = Session::login(&server, &developer);
    developer.refused(&["image", "delete", "shop/web:2"]);
    let maintainer = Session::login(&server, &maintainer);
    assert_eq!(
        maintainer.ok(&["image", "delete", "shop/web:latest"]),
        "deleted shop/web:latest\n"
    );
    assert_eq!(
        manifest_status(&server, "shop/web", "latest").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        manifest_status(&server, "shop/web", "1").await,
        StatusCode::OK
    );
    let by_digest_ref = format!("shop/web@{}", second.manifest.digest);
    maintainer.ok(&["image", "delete", &by_digest_ref]);
    assert_eq!(
        manifest_status(&server, "shop/web", "2").await,
        StatusCode::NOT_FOUND
    );
    // The registry's audit trail has the deletes, by whom.
    let audit = api.audit(&[("action", "artifact.delete")]).await;
    let deletes: Vec<(String, String)> = audit
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap_or_default().to_string(),
                e["resource"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        deletes.contains(&("mia".to_string(), "shop/web:latest".to_string())),
        "{deletes:?}"
    );

    // A project with repositories is deleted only with --force.
    let refused = admin.refused(&["project", "delete", "shop"]);
    assert!(
        refused.contains("shop/team/api") && refused.contains("--force"),
        "{refused}"
    );
    admin.ok(&["project", "delete", "shop", "--force"]);
    assert_eq!(
        manifest_status(&server, "shop/web", "1").await,
        StatusCode::NOT_FOUND
    );
    let gone = admin.refused(&["project", "show", "shop"]);
    assert!(gone.contains("shop"), "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_repository_is_deleted_and_bad_references_are_refused() {
    let server = TestServer::start();
    let api = server.admin().await;
    api.create_project("lab", false, None).await;
    let image = Image::sample();
    push(&server, "lab/tool", "1", &image).await;
    push(&server, "lab/tool", "2", &image).await;
    push(&server, "lab/keep", "1", &image).await;
    let admin = Session::login(&server, &Credentials::new("admin", ADMIN_PASSWORD));
    for bad in ["tool:1", "lab/tool:", "lab/Tool:1"] {
        admin.refused(&["image", "delete", bad]);
    }
    assert_eq!(
        admin.ok(&["image", "delete", "lab/tool"]),
        "deleted repository lab/tool (1 artifacts)\n"
    );
    assert_eq!(
        manifest_status(&server, "lab/tool", "1").await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        manifest_status(&server, "lab/keep", "1").await,
        StatusCode::OK
    );
    let names: Vec<String> = admin
        .json(&["image", "list", "lab"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["lab/keep"]);
    let unknown = admin.refused(&["image", "list", "lab/tool"]);
    assert!(unknown.contains("lab/tool"), "{unknown}");
    // Without a project and without a default one, list says what to do.
    let no_default = admin.refused(&["image", "list"]);
    assert!(no_default.contains("wharf project use"), "{no_default}");
    admin.ok(&["project", "use", "lab"]);
    assert!(admin.ok(&["image", "list"]).contains("lab/keep"));
}
