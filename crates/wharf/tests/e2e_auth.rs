//! End to end authentication and authorization with real clients (skopeo,
//! docker, podman, the oras Python SDK) and raw token-scheme requests:
//! project roles decide who pushes and pulls, the catalog shows only what
//! the caller may pull, anonymous pulls need a public project and the
//! setting, robot accounts pull but never push, die with their deletion and
//! lose their tokens at once when `wharf robot disable` disables them,
//! tampered, foreign and expired tokens are refused, disabling a user cuts
//! off their tokens at once, quotas refuse layers beyond them, wrong
//! passwords are throttled, and the audit log records who did what while the
//! server log never shows a secret.
//!
//! Tests needing a tool skip (or fail under `CI=true`) when it is missing.

mod common;

use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::api::{ApiClient, random_suffix};
use common::command::{all_output, stdout_text};
use common::docker::DockerDaemon;
use common::image::sha256;
use common::podman::Podman;
use common::registry::{ACCEPT_MANIFESTS, Challenge, Credentials, TokenResponse};
use common::server::{ADMIN_PASSWORD, admin_credentials};
use common::skopeo::Skopeo;
use common::{Image, Layer, OciLayout, TestServer, require, require_root, require_tool};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn skopeo_available() -> bool {
    require_tool("skopeo", "apt-get install skopeo")
}

fn docker_available() -> bool {
    require_root("running a private dockerd")
        && require_tool("dockerd", "apt-get install docker.io")
        && require_tool("skopeo", "apt-get install skopeo")
}

/// A temporary directory holding an OCI layout with `image` as `v1`.
fn layout_with(image: &Image) -> (tempfile::TempDir, OciLayout) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = OciLayout::create(&dir.path().join("src"));
    layout.add_image(image, "v1");
    (dir, layout)
}

/// A private project with one member of each role and a user who is not a
/// member.
struct Team {
    project: String,
    project_admin: Credentials,
    maintainer: Credentials,
    developer: Credentials,
    guest: Credentials,
    outsider: Credentials,
}

impl Team {
    async fn create(server: &TestServer, project: &str) -> Team {
        let admin = server.admin().await;
        admin.create_project(project, false, None).await;
        Team {
            project: project.to_string(),
            project_admin: admin.create_member(project, "padmin", "projectAdmin").await,
            maintainer: admin.create_member(project, "maint", "maintainer").await,
            developer: admin.create_member(project, "dev", "developer").await,
            guest: admin.create_member(project, "guest", "guest").await,
            outsider: admin
                .create_user("outsider", &format!("outsider-pw-{}", random_suffix()))
                .await,
        }
    }

    /// Everyone who may push, with the tag each pushes.
    fn pushers(&self) -> Vec<(&'static str, Credentials)> {
        vec![
            ("admin", admin_credentials()),
            ("projectadmin", self.project_admin.clone()),
            ("maintainer", self.maintainer.clone()),
            ("developer", self.developer.clone()),
        ]
    }

    fn repo(&self) -> String {
        format!("{}/app", self.project)
    }
}

/// The digest the registry serves for `repo:reference` (asked as admin), or
/// `None` when it has no such manifest.
async fn served_digest(server: &TestServer, repo: &str, reference: &str) -> Option<String> {
    let response = server
        .request(Method::HEAD, &format!("/v2/{repo}/manifests/{reference}"))
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .expect("manifest HEAD");
    match response.status() {
        StatusCode::OK => Some(
            response
                .headers()
                .get("docker-content-digest")
                .and_then(|v| v.to_str().ok())
                .expect("Docker-Content-Digest on a manifest HEAD")
                .to_string(),
        ),
        StatusCode::NOT_FOUND => None,
        status => panic!("HEAD {repo}:{reference} as admin: {status}"),
    }
}

/// Pushes `image` as `repo:tag` over HTTP as admin; panics unless it works.
async fn push_as_admin(server: &TestServer, repo: &str, tag: &str, image: &Image) {
    let (status, body) = server
        .registry()
        .push_image(&server.url(), repo, tag, image)
        .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "admin push of {repo}:{tag}: {body}"
    );
}

/// A registry token for `scopes`, asked with `credentials` (or none).
async fn token_response(
    server: &TestServer,
    credentials: Option<&Credentials>,
    scopes: &[&str],
) -> TokenResponse {
    server
        .registry_as(credentials)
        .fetch_token(&server.realm(), "wharf", scopes)
        .await
}

/// A registry request with exactly `token` (no challenge answering).
async fn with_token(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = server
        .client()
        .request(method.clone(), format!("{}{path}", server.url()))
        .header("Accept", ACCEPT_MANIFESTS);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Asserts a `401` whose challenge says `error="invalid_token"`.
fn assert_invalid_token(response: &reqwest::Response, what: &str) {
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{what}");
    let challenge = Challenge::of(response.headers())
        .unwrap_or_else(|| panic!("{what}: 401 without a Bearer challenge"));
    assert_eq!(
        challenge.error.as_deref(),
        Some("invalid_token"),
        "{what}: {challenge:?}"
    );
}

/// Whether a client's output says it was refused access (`denied` and
/// `unauthorized` are the OCI error codes; skopeo reports a 403 to a blob
/// HEAD, which has no body, as `403 (Forbidden)`).
fn says_refused(output: &str) -> bool {
    let output = output.to_lowercase();
    ["denied", "unauthorized", "forbidden"]
        .iter()
        .any(|word| output.contains(word))
}

/// The `sha256:...` after `marker` in a docker client's output.
fn digest_after(output: &str, marker: &str) -> String {
    let start = output
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in docker output:\n{output}"))
        + marker.len();
    output[start..]
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("nothing after {marker:?} in docker output:\n{output}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_push_and_pull_follow_project_roles() {
    if !skopeo_available() {
        return;
    }
    let server = TestServer::start();
    let team = Team::create(&server, "team").await;
    let repo = team.repo();
    let image = Image::sample();
    let (dir, layout) = layout_with(&image);

    for (tag, credentials) in team.pushers() {
        Skopeo::as_user(&server, &credentials)
            .copy(
                &layout.reference("v1"),
                &format!("docker://{}/{repo}:{tag}", server.host()),
                &[],
            )
            .await;
        assert_eq!(
            served_digest(&server, &repo, tag).await.as_deref(),
            Some(image.manifest.digest.as_str()),
            "{} pushed {repo}:{tag}",
            credentials.user
        );
    }

    // A guest pulls, but does not push.
    let guest = Skopeo::as_user(&server, &team.guest);
    let pulled = OciLayout::create(&dir.path().join("guest-pull"));
    guest
        .copy(
            &guest.image(&format!("{repo}:developer")),
            &pulled.reference("v1"),
            &[],
        )
        .await;
    assert_eq!(
        pulled.resolve("v1").digest,
        image.manifest.digest,
        "guest pull"
    );
    let push = guest
        .try_copy(
            &layout.reference("v1"),
            &guest.image(&format!("{repo}:guest")),
            &[],
        )
        .await;
    assert!(
        !push.status.success(),
        "a guest pushed:\n{}",
        all_output(&push)
    );
    assert!(
        says_refused(&all_output(&push)),
        "the guest's push failed for another reason than access:\n{}",
        all_output(&push)
    );
    assert_eq!(
        served_digest(&server, &repo, "guest").await,
        None,
        "guest tag"
    );

    // Someone outside the project neither pulls nor pushes.
    let outsider = Skopeo::as_user(&server, &team.outsider);
    let pull = outsider
        .try_copy(
            &outsider.image(&format!("{repo}:developer")),
            &OciLayout::create(&dir.path().join("outsider-pull")).reference("v1"),
            &[],
        )
        .await;
    assert!(
        !pull.status.success(),
        "an outsider pulled:\n{}",
        all_output(&pull)
    );
    assert!(says_refused(&all_output(&pull)), "{}", all_output(&pull));
    let push = outsider
        .try_copy(
            &layout.reference("v1"),
            &outsider.image(&format!("{repo}:outsider")),
            &[],
        )
        .await;
    assert!(
        !push.status.success(),
        "an outsider pushed:\n{}",
        all_output(&push)
    );
    assert!(says_refused(&all_output(&push)), "{}", all_output(&push));
    assert_eq!(served_digest(&server, &repo, "outsider").await, None);

    // Without credentials, nothing.
    let anonymous = Skopeo::anonymous(&server);
    let inspect = anonymous
        .try_inspect_raw(&format!("{repo}:developer"))
        .await;
    assert!(
        !inspect.status.success(),
        "anonymous inspect of a private project worked:\n{}",
        all_output(&inspect)
    );
    assert!(
        says_refused(&all_output(&inspect)),
        "{}",
        all_output(&inspect)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_and_pull_follow_project_roles() {
    if !docker_available() {
        return;
    }
    let server = TestServer::start();
    let team = Team::create(&server, "team").await;
    let admin = server.admin().await;
    let repo = team.repo();
    let host = server.host();
    let image = Image::sample();
    let (_dir, layout) = layout_with(&image);
    let daemon = DockerDaemon::start().await;
    let base = format!("{host}/{repo}:base");
    Skopeo::new(&server)
        .copy(
            &layout.reference("v1"),
            &format!("docker-daemon:{base}"),
            &["--dest-daemon-host", &daemon.host()],
        )
        .await;
    let login = |credentials: Credentials| {
        let daemon = &daemon;
        let host = host.clone();
        async move {
            let output = daemon.login(&host, &credentials).await;
            assert!(
                output.status.success(),
                "docker login as {}: {}",
                credentials.user,
                all_output(&output)
            );
        }
    };

    for (tag, credentials) in team.pushers() {
        login(credentials.clone()).await;
        let name = format!("{host}/{repo}:{tag}");
        daemon.run(&["tag", &base, &name]).await;
        let push = stdout_text(&daemon.run(&["push", &name]).await);
        let digest = digest_after(&push, &format!("{tag}: digest: "));
        assert_eq!(
            served_digest(&server, &repo, tag).await,
            Some(digest),
            "docker push as {}",
            credentials.user
        );
    }
    let developer_image = format!("{host}/{repo}:developer");

    // A guest pulls, but does not push.
    login(team.guest.clone()).await;
    daemon.run(&["rmi", &developer_image]).await;
    daemon.run(&["pull", &developer_image]).await;
    let guest_image = format!("{host}/{repo}:guest");
    daemon.run(&["tag", &base, &guest_image]).await;
    let push = common::command::output(daemon.docker().args(["push", &guest_image])).await;
    assert!(
        !push.status.success(),
        "a guest pushed:\n{}",
        all_output(&push)
    );
    assert!(
        says_refused(&all_output(&push)),
        "docker does not say the guest was refused:\n{}",
        all_output(&push)
    );
    assert_eq!(
        served_digest(&server, &repo, "guest").await,
        None,
        "guest tag"
    );

    // Someone outside the project logs in, but neither pulls nor pushes.
    login(team.outsider.clone()).await;
    daemon.run(&["rmi", &developer_image]).await;
    let pull = common::command::output(daemon.docker().args(["pull", &developer_image])).await;
    assert!(
        !pull.status.success(),
        "an outsider pulled:\n{}",
        all_output(&pull)
    );
    assert!(says_refused(&all_output(&pull)), "{}", all_output(&pull));
    let outsider_image = format!("{host}/{repo}:outsider");
    daemon.run(&["tag", &base, &outsider_image]).await;
    let push = common::command::output(daemon.docker().args(["push", &outsider_image])).await;
    assert!(
        !push.status.success(),
        "an outsider pushed:\n{}",
        all_output(&push)
    );
    assert!(says_refused(&all_output(&push)), "{}", all_output(&push));
    assert_eq!(served_digest(&server, &repo, "outsider").await, None);

    // Logged out: no pull.
    daemon.logout(&host).await;
    let pull = common::command::output(daemon.docker().args(["pull", &developer_image])).await;
    assert!(
        !pull.status.success(),
        "anonymous pull:\n{}",
        all_output(&pull)
    );
    assert!(says_refused(&all_output(&pull)), "{}", all_output(&pull));

    // A disabled user cannot log in.
    admin.set_disabled(&team.developer.user, true).await;
    let refused = daemon.login(&host, &team.developer).await;
    assert!(
        !refused.status.success(),
        "docker login of a disabled user worked:\n{}",
        all_output(&refused)
    );
    assert!(
        says_refused(&all_output(&refused)),
        "{}",
        all_output(&refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalog_lists_only_repositories_the_caller_may_pull() {
    let server = TestServer::start();
    let admin = server.admin().await;
    for project in ["team", "other"] {
        admin.create_project(project, false, None).await;
    }
    let developer = admin.create_member("team", "dev", "developer").await;
    let other_guest = admin.create_member("other", "visitor", "guest").await;
    let nobody = admin.create_user("nobody", "nobody-password-1").await;
    let image = Image::new("amd64", &[Layer::random(&[("f", 1000)])]);
    for repo in ["team/app", "team/web", "other/tool"] {
        push_as_admin(&server, repo, "v1", &image).await;
    }

    let cases: [(Option<&Credentials>, &str, &[&str]); 4] = [
        (
            Some(&admin.credentials),
            "admin",
            &["other/tool", "team/app", "team/web"],
        ),
        (
            Some(&developer),
            "team developer",
            &["team/app", "team/web"],
        ),
        (Some(&other_guest), "guest of other", &["other/tool"]),
        (Some(&nobody), "non-member", &[]),
    ];
    for (credentials, who, expected) in cases {
        let token = token_response(&server, credentials, &["registry:catalog:*"])
            .await
            .token();
        let response = with_token(&server, Method::GET, "/v2/_catalog", Some(&token)).await;
        assert_eq!(response.status(), StatusCode::OK, "catalog of {who}");
        let body: Value = response.json().await.expect("catalog JSON");
        assert_eq!(body["repositories"], json!(expected), "catalog of {who}");
        // The same through the challenge, as clients do it.
        let (status, names) = server.registry_as(credentials).catalog(&server.url()).await;
        assert_eq!(status, StatusCode::OK, "catalog of {who} via challenge");
        assert_eq!(names, expected, "catalog of {who} via challenge");
    }

    // Anonymous callers may not list at all while anonymous pulls are off.
    let token = token_response(&server, None, &["registry:catalog:*"])
        .await
        .token();
    let response = with_token(&server, Method::GET, "/v2/_catalog", Some(&token)).await;
    assert!(
        matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ),
        "anonymous catalog: {}",
        response.status()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_pulls_need_a_public_project_and_the_setting() {
    if !skopeo_available() {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("pub", true, None).await;
    admin.create_project("priv", false, None).await;
    let image = Image::sample();
    let (dir, layout) = layout_with(&image);
    for repo in ["pub/app", "priv/app"] {
        push_as_admin(&server, repo, "v1", &image).await;
    }
    let anonymous = Skopeo::anonymous(&server);

    for repo in ["pub/app", "priv/app"] {
        let inspect = anonymous.try_inspect_raw(&format!("{repo}:v1")).await;
        assert!(
            !inspect.status.success(),
            "anonymous inspect of {repo} before anonymous pulls were allowed:\n{}",
            all_output(&inspect)
        );
        assert!(
            says_refused(&all_output(&inspect)),
            "{}",
            all_output(&inspect)
        );
    }
    // Any logged-in user may pull from a public project, and only from it.
    let reader = admin.create_user("reader", "reader-password-1").await;
    let as_reader = Skopeo::as_user(&server, &reader);
    assert_eq!(
        sha256(&as_reader.inspect_raw("pub/app:v1").await),
        image.manifest.digest,
        "a non-member reads a public project"
    );
    let inspect = as_reader.try_inspect_raw("priv/app:v1").await;
    assert!(
        !inspect.status.success(),
        "a non-member read a private project"
    );

    admin.set_anonymous_pull(true).await;
    assert_eq!(
        sha256(&anonymous.inspect_raw("pub/app:v1").await),
        image.manifest.digest,
        "anonymous inspect of the public project"
    );
    let pulled = OciLayout::create(&dir.path().join("anonymous-pull"));
    anonymous
        .copy(&anonymous.image("pub/app:v1"), &pulled.reference("v1"), &[])
        .await;
    assert_eq!(
        pulled.closure(&pulled.resolve("v1")),
        image.digests(),
        "anonymous pull of the public project"
    );
    let inspect = anonymous.try_inspect_raw("priv/app:v1").await;
    assert!(
        !inspect.status.success(),
        "anonymous inspect of a private project with anonymous pulls on:\n{}",
        all_output(&inspect)
    );
    let push = anonymous
        .try_copy(
            &layout.reference("v1"),
            &anonymous.image("pub/app:anon"),
            &[],
        )
        .await;
    assert!(
        !push.status.success(),
        "anonymous push:\n{}",
        all_output(&push)
    );
    assert_eq!(served_digest(&server, "pub/app", "anon").await, None);
    let (status, names) = server.registry_as(None).catalog(&server.url()).await;
    assert_eq!(status, StatusCode::OK, "anonymous catalog");
    assert_eq!(
        names,
        ["pub/app"],
        "the anonymous catalog shows public repositories only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_account_pulls_never_pushes_and_dies_with_its_deletion() {
    if !skopeo_available() {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("proj", false, None).await;
    let image = Image::sample();
    let (dir, layout) = layout_with(&image);
    push_as_admin(&server, "proj/app", "v1", &image).await;
    let robot = admin.create_robot("proj", "ci", "pull").await;
    assert_eq!(robot.user, "robot$proj+ci", "the robot's full name");

    let skopeo = Skopeo::as_user(&server, &robot);
    let pulled = OciLayout::create(&dir.path().join("robot-pull"));
    skopeo
        .copy(&skopeo.image("proj/app:v1"), &pulled.reference("v1"), &[])
        .await;
    assert_eq!(
        pulled.closure(&pulled.resolve("v1")),
        image.digests(),
        "the robot pulled the image"
    );
    let push = skopeo
        .try_copy(
            &layout.reference("v1"),
            &skopeo.image("proj/app:robot"),
            &[],
        )
        .await;
    assert!(
        !push.status.success(),
        "a pull-only robot pushed:\n{}",
        all_output(&push)
    );
    assert!(says_refused(&all_output(&push)), "{}", all_output(&push));
    assert_eq!(served_digest(&server, "proj/app", "robot").await, None);

    // The docker half needs root and docker.io; without them only it is skipped.
    if docker_available() {
        let host = server.host();
        let daemon = DockerDaemon::start().await;
        let login = daemon.login(&host, &robot).await;
        assert!(
            login.status.success(),
            "docker login as {}: {}",
            robot.user,
            all_output(&login)
        );
        let name = format!("{host}/proj/app:v1");
        let pull = stdout_text(&daemon.run(&["pull", &name]).await);
        assert!(
            pull.contains(image.manifest.digest.as_str()),
            "docker pull as the robot:\n{pull}"
        );
        let pushed_name = format!("{host}/proj/app:robot");
        daemon.run(&["tag", &name, &pushed_name]).await;
        let push = common::command::output(daemon.docker().args(["push", &pushed_name])).await;
        assert!(
            !push.status.success(),
            "docker push as a pull-only robot worked"
        );
        assert!(says_refused(&all_output(&push)), "{}", all_output(&push));
        assert_eq!(served_digest(&server, "proj/app", "robot").await, None);
    }

    let scope = ["repository:proj/app:pull"];
    assert_eq!(
        token_response(&server, Some(&robot), &scope).await.status,
        StatusCode::OK,
        "token for the robot before its deletion"
    );
    admin.delete_robot("proj", "ci").await;
    let refused = token_response(&server, Some(&robot), &scope).await;
    assert_eq!(
        refused.status,
        StatusCode::UNAUTHORIZED,
        "token for a deleted robot: {}",
        refused.body
    );
    let inspect = skopeo.try_inspect_raw("proj/app:v1").await;
    assert!(!inspect.status.success(), "skopeo as a deleted robot");
}

/// `wharf ARGS` with `home` as its home directory; its standard output, or
/// its standard error when it failed.
fn wharf_cli(home: &std::path::Path, args: &[&str], stdin: &str) -> (bool, String) {
    let mut command = common::cli::wharf(home);
    command.args(args);
    let output = common::cli::run_with_stdin(command, stdin);
    let text = if output.status.success() {
        &output.stdout
    } else {
        &output.stderr
    };
    (
        output.status.success(),
        String::from_utf8_lossy(text).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robot_disable_and_enable_from_the_cli_act_on_issued_tokens_at_once() {
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("proj", false, None).await;
    push_as_admin(&server, "proj/app", "v1", &Image::sample()).await;
    let robot = admin.create_robot("proj", "ci", "pull").await;
    let manifest = "/v2/proj/app/manifests/v1";
    let scope = ["repository:proj/app:pull"];
    let token = token_response(&server, Some(&robot), &scope).await.token();
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK, "before disabling");

    let home = tempfile::tempdir().unwrap();
    let (logged_in, out) = wharf_cli(
        home.path(),
        &["login", &server.url(), "-u", "admin", "--password-stdin"],
        &format!("{ADMIN_PASSWORD}\n"),
    );
    assert!(logged_in, "{out}");
    let (done, out) = wharf_cli(home.path(), &["robot", "disable", "proj", "ci"], "");
    assert!(done, "{out}");
    assert_eq!(out, "disabled robot robot$proj+ci\n");
    // No waiting: the very next request with the token it holds is refused.
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_invalid_token(&response, "the token of a disabled robot");
    let refused = token_response(&server, Some(&robot), &scope).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    let (listed, table) = wharf_cli(home.path(), &["robot", "list", "proj"], "");
    assert!(listed, "{table}");
    let row = table
        .lines()
        .find(|line| line.starts_with("robot$proj+ci"))
        .unwrap_or_else(|| panic!("no row for the robot:\n{table}"));
    assert!(row.contains(" yes "), "DISABLED shows yes: {row}");

    let (done, out) = wharf_cli(
        home.path(),
        &["robot", "enable", "proj", "robot$proj+ci", "-o", "json"],
        "",
    );
    assert!(done, "{out}");
    let enabled: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(enabled["disabled"], false, "{enabled}");
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_invalid_token(&response, "a token from before the robot was disabled");
    let fresh = token_response(&server, Some(&robot), &scope).await.token();
    let response = with_token(&server, Method::GET, manifest, Some(&fresh)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a new token after enabling"
    );

    // Bad names are refused with a message naming them, and change nothing.
    let (done, err) = wharf_cli(home.path(), &["robot", "disable", "proj", "nobody"], "");
    assert!(!done);
    assert!(err.contains("robot robot$proj+nobody not found"), "{err}");
    let (done, err) = wharf_cli(
        home.path(),
        &["robot", "disable", "proj", "robot$other+ci"],
        "",
    );
    assert!(!done);
    assert!(err.contains("in project proj"), "{err}");
    let response = with_token(&server, Method::GET, manifest, Some(&fresh)).await;
    assert_eq!(response.status(), StatusCode::OK, "still enabled");

    let events = admin.audit(&[("actor", "admin")]).await;
    let actions: Vec<&str> = events
        .iter()
        .filter_map(|e| e["action"].as_str())
        .filter(|a| a.starts_with("robot."))
        .collect();
    assert!(
        actions.contains(&"robot.disable") && actions.contains(&"robot.enable"),
        "{actions:?}"
    );
}

/// `token` with its payload (claims) replaced by `edit(claims)`, keeping
/// the original header and signature.
fn with_claims(token: &str, edit: impl FnOnce(&mut Value)) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts: {token}");
    let mut claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(parts[1])
            .expect("the payload is base64url"),
    )
    .expect("the payload is JSON");
    edit(&mut claims);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims JSON"));
    format!("{}.{payload}.{}", parts[0], parts[2])
}

/// `text` with the character at `index` replaced by another base64url one.
fn with_char_changed(text: &str, index: usize) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    chars[index] = if chars[index] == 'A' { 'B' } else { 'A' };
    chars.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_tokens_are_refused() {
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("proj", false, None).await;
    let guest = admin.create_member("proj", "guest", "guest").await;
    push_as_admin(&server, "proj/app", "v1", &Image::sample()).await;
    let manifest = "/v2/proj/app/manifests/v1";
    let uploads = "/v2/proj/app/blobs/uploads/";

    let token = token_response(&server, Some(&guest), &["repository:proj/app:pull,push"])
        .await
        .token();
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the untouched token pulls"
    );
    let response = with_token(&server, Method::POST, uploads, Some(&token)).await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "a guest's token does not push"
    );

    // A valid token for another repository: the registry names the scope needed.
    let elsewhere = token_response(&server, Some(&guest), &["repository:proj/other:pull"])
        .await
        .token();
    let response = with_token(&server, Method::GET, manifest, Some(&elsewhere)).await;
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "token for another repository"
    );
    let challenge = Challenge::of(response.headers()).expect("a Bearer challenge");
    assert_eq!(
        challenge.error.as_deref(),
        Some("insufficient_scope"),
        "{challenge:?}"
    );
    assert_eq!(
        challenge.scope.as_deref(),
        Some("repository:proj/app:pull"),
        "{challenge:?}"
    );
    assert_eq!(challenge.realm, server.realm(), "{challenge:?}");
    assert_eq!(challenge.service, "wharf", "{challenge:?}");

    let escalated = with_claims(&token, |claims| {
        claims["access"][0]["actions"] = json!(["pull", "push", "delete"]);
    });
    let response = with_token(&server, Method::POST, uploads, Some(&escalated)).await;
    assert_invalid_token(&response, "token with push added to its claims");
    let impersonating = with_claims(&token, |claims| claims["sub"] = json!("admin"));
    let response = with_token(&server, Method::GET, manifest, Some(&impersonating)).await;
    assert_invalid_token(&response, "token with its subject changed to admin");

    let parts: Vec<&str> = token.split('.').collect();
    let payload_changed = format!(
        "{}.{}.{}",
        parts[0],
        with_char_changed(parts[1], parts[1].len() / 2),
        parts[2]
    );
    let response = with_token(&server, Method::GET, manifest, Some(&payload_changed)).await;
    assert_invalid_token(&response, "token with one payload character changed");
    let signature_flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        with_char_changed(parts[2], parts[2].len() / 2)
    );
    let response = with_token(&server, Method::GET, manifest, Some(&signature_flipped)).await;
    assert_invalid_token(&response, "token with one signature character changed");
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let response = with_token(&server, Method::GET, manifest, Some(&unsigned)).await;
    assert_invalid_token(&response, "unsigned token (alg none)");
    let response = with_token(&server, Method::GET, manifest, Some("not-a-token")).await;
    assert_invalid_token(&response, "garbage token");

    let body: Value = response.json().await.expect("an OCI error body");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED", "{body}");
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "the original still works"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_for_another_service_are_refused() {
    let server = TestServer::start();
    server
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    push_as_admin(&server, "proj/app", "v1", &Image::sample()).await;
    let manifest = "/v2/proj/app/manifests/v1";
    let scope = ["repository:proj/app:pull"];
    let admin = admin_credentials();

    // Server B signs with the same key, but is service "other": only the
    // audience tells its tokens apart.
    let key = std::fs::read(server.data_dir().join("token.key")).expect("server A's token.key");
    let other = TestServer::options()
        .args(&["--service", "other"])
        .data_file("token.key", key)
        .start();
    other
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    let foreign = other
        .registry_as(Some(&admin))
        .fetch_token(&other.realm(), "other", &scope)
        .await
        .token();
    let own = token_response(&server, Some(&admin), &scope).await.token();
    let header = |token: &str| token.split('.').next().unwrap_or_default().to_string();
    assert_eq!(
        header(&foreign),
        header(&own),
        "both servers sign with the same key"
    );
    let response = with_token(&server, Method::GET, manifest, Some(&own)).await;
    assert_eq!(response.status(), StatusCode::OK, "server A's own token");
    let response = with_token(&server, Method::GET, manifest, Some(&foreign)).await;
    assert_invalid_token(&response, "token of service other on service wharf");

    // A server with its own key and the same service name.
    let stranger = TestServer::start();
    stranger
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    let foreign = stranger
        .registry_as(Some(&admin))
        .fetch_token(&stranger.realm(), "wharf", &scope)
        .await
        .token();
    let response = with_token(&server, Method::GET, manifest, Some(&foreign)).await;
    assert_invalid_token(&response, "token signed by another server's key");

    // Asking server A for a token of another service.
    let refused = server
        .registry_as(Some(&admin))
        .fetch_token(&server.realm(), "other", &scope)
        .await;
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    // API tokens are not registry tokens, and the other way round.
    let api_token = ApiClient::login(&server.url(), &admin)
        .await
        .expect("API login")
        .token()
        .to_string();
    let response = with_token(&server, Method::GET, manifest, Some(&api_token)).await;
    assert_invalid_token(&response, "API token on the registry");
    let response = server
        .client()
        .get(format!("{}/api/v1/me", server.url()))
        .bearer_auth(&own)
        .send()
        .await
        .expect("GET /api/v1/me");
    assert_eq!(
        response.status(),
        StatusCode::UNAUTHORIZED,
        "registry token on the API"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tokens_are_refused() {
    let server = TestServer::start_with(&["--token-ttl", "2s"]);
    server
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    push_as_admin(&server, "proj/app", "v1", &Image::sample()).await;
    let manifest = "/v2/proj/app/manifests/v1";
    let issued = Instant::now();
    let response = token_response(
        &server,
        Some(&admin_credentials()),
        &["repository:proj/app:pull"],
    )
    .await;
    assert_eq!(response.body["expires_in"], 2, "{}", response.body);
    let token = response.token();
    let ok = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_eq!(ok.status(), StatusCode::OK, "a fresh token");

    // Token lifetimes count whole seconds: 3 s is past any 2 s token.
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(issued.elapsed())).await;
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_invalid_token(&response, "a token past its lifetime");
    // A client that asks again gets a new one.
    let response = server
        .request(Method::GET, manifest)
        .header("Accept", ACCEPT_MANIFESTS)
        .send()
        .await
        .expect("manifest GET");
    assert_eq!(response.status(), StatusCode::OK, "with a new token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabling_a_user_revokes_their_tokens_and_logins_at_once() {
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("proj", false, None).await;
    let developer = admin.create_member("proj", "dev", "developer").await;
    push_as_admin(&server, "proj/app", "v1", &Image::sample()).await;
    let manifest = "/v2/proj/app/manifests/v1";
    let scope = ["repository:proj/app:pull"];
    let token = token_response(&server, Some(&developer), &scope)
        .await
        .token();
    let session = server.api_as(&developer).await;
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_eq!(response.status(), StatusCode::OK, "before disabling");
    session
        .expect(Method::GET, "/api/v1/me", None, StatusCode::OK)
        .await;

    let user = admin.set_disabled("dev", true).await;
    assert_eq!(user["disabled"], true, "{user}");
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_invalid_token(&response, "the registry token of a disabled user");
    session
        .expect(Method::GET, "/api/v1/me", None, StatusCode::UNAUTHORIZED)
        .await;
    let refused = token_response(&server, Some(&developer), &scope).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    let login = ApiClient::login(&server.url(), &developer).await;
    assert!(
        matches!(&login, Err((StatusCode::UNAUTHORIZED, _))),
        "API login of a disabled user: {:?}",
        login.as_ref().err()
    );
    if skopeo_available() {
        let inspect = Skopeo::as_user(&server, &developer)
            .try_inspect_raw("proj/app:v1")
            .await;
        assert!(
            !inspect.status.success(),
            "skopeo as a disabled user:\n{}",
            all_output(&inspect)
        );
        assert!(
            says_refused(&all_output(&inspect)),
            "{}",
            all_output(&inspect)
        );
    }

    // Enabling again lets them log in, but the old token stays dead.
    admin.set_disabled("dev", false).await;
    let response = with_token(&server, Method::GET, manifest, Some(&token)).await;
    assert_invalid_token(&response, "a token from before the user was disabled");
    let fresh = token_response(&server, Some(&developer), &scope)
        .await
        .token();
    let response = with_token(&server, Method::GET, manifest, Some(&fresh)).await;
    assert_eq!(
        response.status(),
        StatusCode::OK,
        "a new token after enabling"
    );
}

/// The sizes of the blobs and manifests of `images` that `repo` holds, by
/// digest, as the registry (asked as admin) reports them.
async fn stored_sizes(server: &TestServer, repo: &str, images: &[&Image]) -> Vec<(String, u64)> {
    let mut stored = Vec::new();
    for image in images {
        for (index, blob) in image.blobs().into_iter().enumerate() {
            let kind = if index == 0 { "manifests" } else { "blobs" };
            let response = server
                .request(Method::HEAD, &format!("/v2/{repo}/{kind}/{}", blob.digest))
                .header("Accept", ACCEPT_MANIFESTS)
                .send()
                .await
                .expect("HEAD");
            match response.status() {
                StatusCode::OK => stored.push((blob.digest.to_string(), blob.size())),
                StatusCode::NOT_FOUND => {}
                status => panic!("HEAD {repo} {kind}/{}: {status}", blob.digest),
            }
        }
    }
    stored.sort();
    stored.dedup();
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_refuses_layers_beyond_it() {
    if !skopeo_available() {
        return;
    }
    const QUOTA: u64 = 4 << 20;
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("small", false, Some(QUOTA)).await;
    let skopeo = Skopeo::new(&server);
    // Random content does not compress: the layer is over 5 MiB.
    let big = Image::new("amd64", &[Layer::random(&[("big.bin", 5 << 20)])]);
    let big_layer = &big.layers[0];
    assert!(
        big_layer.size() > QUOTA,
        "the big layer exceeds the quota alone"
    );
    let small = Image::sample();
    let small_total: u64 = small.blobs().iter().map(|b| b.size()).sum();
    assert!(small_total < QUOTA, "the sample image fits the quota");
    let (_dir, big_layout) = layout_with(&big);
    let (_small_dir, small_layout) = layout_with(&small);

    let push = skopeo
        .try_copy(
            &big_layout.reference("v1"),
            &skopeo.image("small/big:v1"),
            &[],
        )
        .await;
    assert!(!push.status.success(), "a push over the quota worked");
    assert!(
        all_output(&push).to_lowercase().contains("quota"),
        "skopeo's error does not mention the quota:\n{}",
        all_output(&push)
    );
    assert_eq!(served_digest(&server, "small/big", "v1").await, None);
    let usage = admin.project("small").await["usage_bytes"]
        .as_u64()
        .expect("usage_bytes");
    assert!(
        usage < big_layer.size(),
        "usage {usage} includes the refused layer of {} bytes",
        big_layer.size()
    );

    skopeo
        .copy(
            &small_layout.reference("v1"),
            &skopeo.image("small/app:v1"),
            &[],
        )
        .await;
    assert_eq!(
        served_digest(&server, "small/app", "v1").await.as_deref(),
        Some(small.manifest.digest.as_str())
    );
    let project = admin.project("small").await;
    let usage = project["usage_bytes"].as_u64().expect("usage_bytes");
    let layers: u64 = small.layers.iter().map(|l| l.size()).sum();
    assert!(
        usage >= layers,
        "usage {usage} below the pushed layers ({layers}): {project}"
    );
    assert!(usage <= QUOTA, "usage {usage} over the quota: {project}");
    // Exactly what the project stores: the small image, and whatever of the
    // refused push the registry kept (its config, maybe), never the big layer.
    let mut stored = stored_sizes(&server, "small/app", &[&small]).await;
    stored.extend(stored_sizes(&server, "small/big", &[&big]).await);
    assert!(
        !stored
            .iter()
            .any(|(digest, _)| *digest == big_layer.digest.to_string()),
        "the refused layer is stored: {stored:?}"
    );
    let stored_total: u64 = stored.iter().map(|(_, size)| size).sum();
    assert_eq!(
        usage, stored_total,
        "usage_bytes against what is stored: {stored:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_passwords_are_rate_limited() {
    let server = TestServer::start();
    let admin = server.admin().await;
    let victim = admin.create_user("victim", "victim-password-1").await;
    let bystander = admin.create_user("bystander", "bystander-password-1").await;
    let wrong = Credentials::new("victim", "not-the-password");
    for attempt in 1..=5 {
        let response = token_response(&server, Some(&wrong), &[]).await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "wrong password, attempt {attempt}: {}",
            response.body
        );
    }
    let limited = token_response(&server, Some(&victim), &[]).await;
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the right password after 5 wrong ones: {}",
        limited.body
    );
    let retry_after: u64 = limited
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("429 without a numeric Retry-After: {:?}", limited.headers));
    assert!(
        (1..=60).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    // The API login counts the same failures.
    let login = ApiClient::login(&server.url(), &victim).await;
    assert!(
        matches!(&login, Err((StatusCode::TOO_MANY_REQUESTS, _))),
        "API login while limited: {:?}",
        login.as_ref().err()
    );
    // Other accounts are not affected.
    let response = token_response(&server, Some(&bystander), &[]).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "another user: {}",
        response.body
    );
}

/// Polls the audit log until an event matches `wanted`; returns it.
async fn wait_for_event(
    admin: &ApiClient,
    query: &[(&str, &str)],
    what: &str,
    wanted: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = admin.audit(query).await;
        if let Some(event) = events.iter().find(|e| wanted(e)) {
            return event.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no audit event for {what} within 10 s; {query:?} gives:\n{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_records_who_did_what_and_no_secret_is_logged() {
    let server = TestServer::options().env("RUST_LOG", "debug").start();
    let admin = server.admin().await;
    admin.create_project("proj", false, None).await;
    let developer = admin.create_member("proj", "dev", "developer").await;
    let guest = admin.create_member("proj", "guest", "guest").await;
    let robot = admin.create_robot("proj", "ci", "pull").await;
    let image = Image::sample();
    let wrong = Credentials::new("dev", "wrong-password-for-dev");

    let (status, body) = server
        .registry_as(Some(&developer))
        .push_image(&server.url(), "proj/app", "v1", &image)
        .await;
    assert_eq!(status, StatusCode::CREATED, "developer push: {body}");
    for reader in [&guest, &robot] {
        let (status, _) = server
            .registry_as(Some(reader))
            .get_manifest(&server.url(), "proj/app", "v1")
            .await;
        assert_eq!(status, StatusCode::OK, "{} pulls", reader.user);
    }
    let (status, _) = server
        .registry_as(Some(&guest))
        .push_image(&server.url(), "proj/app", "guest", &image)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "guest push");
    let refused = token_response(&server, Some(&wrong), &[]).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let registry_token = token_response(&server, Some(&developer), &["repository:proj/app:pull"])
        .await
        .token();

    let from_loopback = |e: &Value| e["source"] == "127.0.0.1";
    let event = |e: &Value, outcome: &str| from_loopback(e) && e["outcome"] == outcome;
    wait_for_event(
        &admin,
        &[("actor", "admin"), ("action", "login")],
        "admin's API login",
        |e| event(e, "success") && e["resource"] == "api",
    )
    .await;
    wait_for_event(
        &admin,
        &[("actor", "dev"), ("action", "login")],
        "dev's registry login",
        |e| event(e, "success") && e["resource"] == "registry",
    )
    .await;
    let failed = wait_for_event(
        &admin,
        &[("actor", "dev"), ("action", "login")],
        "dev's failed login",
        |e| event(e, "failed") && e["resource"] == "registry",
    )
    .await;
    assert!(
        failed["detail"]
            .as_str()
            .is_some_and(|d| d.contains("invalid")),
        "a failed login says why: {failed}"
    );
    let push = wait_for_event(
        &admin,
        &[("action", "artifact.push"), ("project", "proj")],
        "dev's push",
        |e| event(e, "success") && e["actor"] == "dev" && e["resource"] == "proj/app:v1",
    )
    .await;
    assert_eq!(
        push["detail"],
        image.manifest.digest.as_str(),
        "push detail: {push}"
    );
    for reader in [&guest, &robot] {
        wait_for_event(
            &admin,
            &[("actor", reader.user.as_str()), ("action", "artifact.pull")],
            &format!("{}'s pull", reader.user),
            |e| event(e, "success") && e["resource"] == "proj/app:v1",
        )
        .await;
    }
    let denied = wait_for_event(
        &admin,
        &[("action", "access.denied")],
        "the guest's refused push",
        |e| event(e, "denied") && e["actor"] == "guest" && e["resource"] == "proj/app",
    )
    .await;
    assert_eq!(denied["detail"], "push", "{denied}");
    // The project filter keeps to the project.
    for event in admin.audit(&[("project", "proj")]).await {
        let resource = event["resource"].as_str().unwrap_or_default();
        assert!(
            resource.starts_with("proj/") || resource.starts_with("project/proj"),
            "project filter let through {event}"
        );
    }

    let secrets = [
        ("admin password", ADMIN_PASSWORD.to_string()),
        ("developer password", developer.password.clone()),
        ("guest password", guest.password.clone()),
        ("robot secret", robot.password.clone()),
        ("wrong password", wrong.password.clone()),
        (
            "Basic credentials",
            base64::engine::general_purpose::STANDARD.encode(developer.colon_pair()),
        ),
        ("API token", admin.token().to_string()),
        ("registry token", registry_token),
    ];
    let log = server.log_text();
    assert!(
        log.contains("DEBUG"),
        "the server did not log at debug level, so the search proves little:\n{log}"
    );
    let audit = serde_json::to_string(&admin.audit(&[]).await).expect("audit JSON");
    for (what, secret) in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "the server log shows the {what}"
        );
        assert!(
            !audit.contains(secret.as_str()),
            "the audit log shows the {what}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_logs_in_pushes_and_pulls_as_developer() {
    if !(require_root("podman with a private storage root")
        && require_tool("podman", "apt-get install podman"))
    {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("proj", false, None).await;
    let developer = admin.create_member("proj", "dev", "developer").await;
    let image = Image::sample();
    let podman = Podman::new();
    let layout = OciLayout::create(&podman.file("layout"));
    layout.add_image(&image, "v1");
    let host = server.host();
    let name = format!("{host}/proj/app:v1");
    let config_hex = image.config.digest.hex().to_string();

    let loaded = podman.run(&["pull", &layout.reference("v1")]).await;
    assert_eq!(
        stdout_text(&loaded).lines().last(),
        Some(config_hex.as_str()),
        "podman's image ID is the digest of our config"
    );
    podman.run(&["tag", &config_hex, &name]).await;

    let wrong = podman
        .login(&host, &Credentials::new("dev", "not-the-password"))
        .await;
    assert!(
        !wrong.status.success(),
        "podman login with a wrong password worked"
    );
    let login = podman.login(&host, &developer).await;
    assert!(
        login.status.success(),
        "podman login: {}",
        all_output(&login)
    );
    let digest_file = podman.file("pushed-digest");
    podman
        .run(&[
            "push",
            "--tls-verify=false",
            "--digestfile",
            &digest_file.display().to_string(),
            &name,
        ])
        .await;
    let pushed = std::fs::read_to_string(&digest_file).expect("podman's digest file");
    assert_eq!(
        served_digest(&server, "proj/app", "v1").await.as_deref(),
        Some(pushed.trim()),
        "the registry serves what podman pushed"
    );

    podman.run(&["rmi", &name, &layout_name(&layout)]).await;
    podman.run(&["pull", "--tls-verify=false", &name]).await;
    let id = stdout_text(
        &podman
            .run(&["image", "inspect", "--format", "{{.Id}}", &name])
            .await,
    );
    assert_eq!(id, config_hex, "the pulled image is ours");
    let digest = stdout_text(
        &podman
            .run(&["image", "inspect", "--format", "{{.Digest}}", &name])
            .await,
    );
    assert_eq!(
        digest,
        pushed.trim(),
        "the pulled manifest is the pushed one"
    );

    podman.run(&["logout", &host]).await;
    podman.run(&["rmi", &name]).await;
    let pull = podman.try_run(&["pull", "--tls-verify=false", &name]).await;
    assert!(!pull.status.success(), "podman pulled without logging in");
    assert!(says_refused(&all_output(&pull)), "{}", all_output(&pull));
}

/// The name podman gives an image pulled from an `oci:` layout.
fn layout_name(layout: &OciLayout) -> String {
    let reference = layout.reference("v1");
    let path = reference
        .strip_prefix("oci:")
        .and_then(|r| r.rsplit_once(':'))
        .map(|(path, _)| path)
        .unwrap_or_default();
    format!("localhost{path}:latest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_python_sdk_pushes_and_pulls_a_file_artifact() {
    let oras_installed = require_tool("python3", "apt-get install python3")
        && require(
            std::process::Command::new("python3")
                .args(["-c", "import oras.client"])
                .output()
                .is_ok_and(|o| o.status.success()),
            "the oras Python package is not installed: python3 -m pip install oras",
        );
    if !oras_installed {
        return;
    }
    let server = TestServer::start();
    let admin = server.admin().await;
    admin.create_project("proj", false, None).await;
    let developer = admin.create_member("proj", "dev", "developer").await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let content = common::image::random_bytes(200 << 10);
    let artifact = dir.path().join("artifact.bin");
    std::fs::write(&artifact, &content).expect("writing the artifact");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oras_roundtrip.py");

    let output = common::command::output(
        tokio::process::Command::new("python3")
            .arg(script)
            .arg(server.host())
            .arg("proj/files:v1")
            .arg(&artifact)
            .arg(dir.path())
            .env("ORAS_USER", &developer.user)
            .env("ORAS_PASSWORD", &developer.password)
            .env("DOCKER_CONFIG", dir.path().join("docker"))
            // If the `docker` package is installed, oras tries a daemon first.
            .env("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
    )
    .await;
    let report: Value =
        serde_json::from_str(stdout_text(&output).lines().last().unwrap_or_default())
            .unwrap_or(Value::Null);
    assert!(
        output.status.success(),
        "oras round trip failed ({}): {report}\n{}",
        output.status,
        all_output(&output)
    );
    let digest = sha256(&content);
    assert_eq!(report["pulled"], json!(["artifact.bin"]), "{report}");
    assert_eq!(report["pulled_sha256"], json!([digest.hex()]), "{report}");
    let pushed = report["push_digest"].as_str().unwrap_or_default();
    assert_eq!(
        served_digest(&server, "proj/files", "v1").await.as_deref(),
        Some(pushed),
        "{report}"
    );
    let (status, bytes) = server
        .registry()
        .get_manifest(&server.url(), "proj/files", "v1")
        .await;
    assert_eq!(status, StatusCode::OK);
    let manifest: Value = serde_json::from_slice(&bytes).expect("manifest JSON");
    assert_eq!(
        manifest["layers"][0]["digest"],
        digest.as_str(),
        "{manifest}"
    );
    assert_eq!(
        manifest["layers"][0]["annotations"]["org.opencontainers.image.title"], "artifact.bin",
        "{manifest}"
    );
}
