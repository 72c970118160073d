//! End to end with the Docker engine: an image generated in code is loaded
//! into a private `dockerd`, pushed to the registry with `docker push`,
//! removed, and pulled back with `docker pull`; digests and the image ID must
//! survive the round trip. The engine logs in as `admin` with `docker login`
//! (token authentication).

mod common;

use common::command::{all_output, stdout_text};
use common::docker::DockerDaemon;
use common::image::DOCKER_MANIFEST;
use common::server::admin_credentials;
use common::skopeo::Skopeo;
use common::{Image, OciLayout, TestServer, require_root, require_tool};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The `sha256:...` after `marker` in a docker client's output.
fn digest_after<'a>(output: &'a str, marker: &str) -> &'a str {
    let start = output
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker:?} in docker output:\n{output}"))
        + marker.len();
    output[start..]
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("nothing after {marker:?} in docker output:\n{output}"))
}

/// `docker image inspect --format FORMAT name`.
async fn image_field(daemon: &DockerDaemon, name: &str, format: &str) -> String {
    stdout_text(
        &daemon
            .run(&["image", "inspect", "--format", format, name])
            .await,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_push_rmi_pull_round_trip() {
    if !(require_root("running a private dockerd")
        && require_tool("dockerd", "apt-get install docker.io")
        && require_tool("skopeo", "apt-get install skopeo"))
    {
        return;
    }
    let server = TestServer::start();
    server
        .admin()
        .await
        .create_project("proj", false, None)
        .await;
    let image = Image::sample();
    let dir = tempfile::tempdir().expect("temporary directory");
    let layout = OciLayout::create(dir.path());
    layout.add_image(&image, "v1");
    let daemon = DockerDaemon::start().await;
    let name = format!("{}/proj/app:v1", server.host());

    // Load without a build: skopeo writes the image into the daemon.
    Skopeo::new(&server)
        .copy(
            &layout.reference("v1"),
            &format!("docker-daemon:{name}"),
            &["--dest-daemon-host", &daemon.host()],
        )
        .await;
    let loaded_id = image_field(&daemon, &name, "{{.Id}}").await;
    assert_eq!(
        loaded_id,
        image.config.digest.as_str(),
        "docker's image ID is the digest of our config"
    );

    let login = daemon.login(&server.host(), &admin_credentials()).await;
    assert!(
        login.status.success(),
        "docker login as admin failed: {}",
        all_output(&login)
    );
    let push = stdout_text(&daemon.run(&["push", &name]).await);
    let pushed_digest = digest_after(&push, "v1: digest: ").to_string();

    let response = server
        .request(Method::GET, "/v2/proj/app/manifests/v1")
        .header("Accept", DOCKER_MANIFEST)
        .send()
        .await
        .expect("manifest GET");
    assert_eq!(response.status(), StatusCode::OK);
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        header("docker-content-digest"),
        pushed_digest,
        "the registry serves the manifest docker pushed"
    );
    assert_eq!(header("content-type"), DOCKER_MANIFEST);
    let manifest: Value = response.json().await.expect("manifest JSON");
    assert_eq!(
        manifest["config"]["digest"],
        image.config.digest.as_str(),
        "{manifest}"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), image.layers.len(), "{manifest}");
    // Docker compresses layers itself, so their digests are its own; each
    // must be in the registry all the same.
    for layer in layers {
        let digest = layer["digest"].as_str().expect("layer digest");
        let head = server
            .request(Method::HEAD, &format!("/v2/proj/app/blobs/{digest}"))
            .send()
            .await
            .expect("blob HEAD");
        assert_eq!(head.status(), StatusCode::OK, "layer {digest}");
        // Read the header: reqwest's content_length() is 0 for any HEAD.
        let length = head
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        assert_eq!(length, layer["size"].as_u64(), "size of layer {digest}");
    }

    daemon.run(&["rmi", &name]).await;
    let gone = common::command::output(daemon.docker().args(["image", "inspect", &name])).await;
    assert!(!gone.status.success(), "{name} still present after rmi");

    let pull = stdout_text(&daemon.run(&["pull", &name]).await);
    assert_eq!(
        digest_after(&pull, "Digest: "),
        pushed_digest,
        "pull reports the pushed digest"
    );
    let repo_digest = stdout_text(
        &daemon
            .run(&[
                "image",
                "inspect",
                "--format",
                "{{index .RepoDigests 0}}",
                &name,
            ])
            .await,
    );
    assert_eq!(
        repo_digest,
        format!("{}/proj/app@{pushed_digest}", server.host())
    );
    let pulled_id = image_field(&daemon, &name, "{{.Id}}").await;
    assert_eq!(pulled_id, loaded_id, "the image ID survives push and pull");

    // By digest too.
    let by_digest = format!("{}/proj/app@{pushed_digest}", server.host());
    daemon.run(&["rmi", &name]).await;
    daemon.run(&["pull", &by_digest]).await;
    let id = image_field(&daemon, &by_digest, "{{.Id}}").await;
    assert_eq!(id, loaded_id, "pull by digest gives the same image");
}
