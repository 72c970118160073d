//! The demo image, built here rather than downloaded: Debian's static
//! busybox serving `/www` over HTTP on port 80, with a CGI script that
//! answers with the container's host name (the pod's name). Written as an
//! OCI image layout (for skopeo and tests) and pushed by `wharf up`.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use wharf_distribution::{Client, RegistryCredentials, location};
use wharf_oci::{Digest, DigestAlgorithm};

/// Where Debian's `busybox-static` puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Applets linked into `/bin`.
const APPLETS: &[&str] = &[
    "sh", "httpd", "echo", "cat", "sleep", "hostname", "ls", "env", "id", "ps", "kill", "true",
    "false", "wget", "ip", "ifconfig", "nc", "mkdir", "rm", "date", "uname", "grep", "head",
    "tail", "wc", "touch", "mount", "pwd", "seq", "yes", "dd",
];

const INDEX_HTML: &str = "<!doctype html>\n<title>Wharf demo</title>\n<h1>Hello from a Wharf pod</h1>\n<p>Ask <a href=\"/cgi-bin/hostname\">/cgi-bin/hostname</a> which one.</p>\n";
const HOSTNAME_CGI: &str = "#!/bin/sh\necho 'Content-Type: text/plain'\necho\nhostname\n";

/// A blob of the image: its media type, bytes and digest.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Media type.
    pub media_type: &'static str,
    /// Content.
    pub bytes: Vec<u8>,
    /// sha256 of the content.
    pub digest: Digest,
}

impl Blob {
    /// A blob of `bytes` described as `media_type`.
    pub fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        let digest = Digest::of(DigestAlgorithm::Sha256, &bytes);
        Blob {
            media_type,
            bytes,
            digest,
        }
    }

    /// Its OCI descriptor (media type, digest, size).
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest.to_string(),
            "size": self.bytes.len(),
        })
    }
}

/// The image: one layer, its config and manifest.
#[derive(Clone, Debug)]
pub struct DemoImage {
    /// The gzip-compressed layer.
    pub layer: Blob,
    /// The image config.
    pub config: Blob,
    /// The OCI image manifest.
    pub manifest: Blob,
}

/// A header owned by root, dated at the epoch (reproducible layers).
fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append_file(
    tar: &mut tar::Builder<impl Write>,
    path: &str,
    mode: u32,
    bytes: &[u8],
) -> Result<()> {
    let mut header = header(tar::EntryType::Regular, mode, bytes.len() as u64);
    tar.append_data(&mut header, path, bytes)?;
    Ok(())
}

fn append_dir(tar: &mut tar::Builder<impl Write>, path: &str, mode: u32) -> Result<()> {
    let mut header = header(tar::EntryType::Directory, mode, 0);
    tar.append_data(&mut header, path, std::io::empty())?;
    Ok(())
}

/// Builds the image from the busybox at `busybox`.
pub fn build(busybox: &Path) -> Result<DemoImage> {
    let binary = std::fs::read(busybox).with_context(|| {
        format!(
            "reading {} (apt-get install busybox-static)",
            busybox.display()
        )
    })?;
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("bin", 0o755),
        ("etc", 0o755),
        ("tmp", 0o1777),
        ("www", 0o755),
        ("www/cgi-bin", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
    ] {
        append_dir(&mut tar, dir, mode)?;
    }
    append_file(&mut tar, "bin/busybox", 0o755, &binary)?;
    for applet in APPLETS {
        let mut header = header(tar::EntryType::Symlink, 0o777, 0);
        tar.append_link(&mut header, format!("bin/{applet}"), "busybox")?;
    }
    append_file(
        &mut tar,
        "etc/passwd",
        0o644,
        b"root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/www:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    )?;
    append_file(
        &mut tar,
        "etc/group",
        0o644,
        b"root:x:0:\nwww:x:33:\nnogroup:x:65534:\n",
    )?;
    append_file(&mut tar, "www/index.html", 0o644, INDEX_HTML.as_bytes())?;
    append_file(
        &mut tar,
        "www/cgi-bin/hostname",
        0o755,
        HOSTNAME_CGI.as_bytes(),
    )?;
    let uncompressed = tar.into_inner()?;
    let diff_id = Digest::of(DigestAlgorithm::Sha256, &uncompressed);
    let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gzip.write_all(&uncompressed)?;
    let layer = Blob::new(
        "application/vnd.oci.image.layer.v1.tar+gzip",
        gzip.finish()?,
    );
    let config = json!({
        "architecture": wharf_image::Platform::host().architecture,
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            // A shell as pid 1 that ends on SIGTERM: busybox httpd alone, as
            // pid 1, has no handler and would sit out the grace period.
            "Cmd": ["sh", "-c", "trap 'exit 0' TERM; httpd -f -v -p 80 -h /www & wait"],
            "WorkingDir": "/",
            "ExposedPorts": {"80/tcp": {}},
            "Labels": {"org.opencontainers.image.title": "wharf-demo"},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id.to_string()]},
        "history": [{"created_by": "wharf demo image: busybox httpd"}],
    });
    let config = Blob::new(
        "application/vnd.oci.image.config.v1+json",
        serde_json::to_vec(&config)?,
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    let manifest = Blob::new(
        "application/vnd.oci.image.manifest.v1+json",
        serde_json::to_vec(&manifest)?,
    );
    Ok(DemoImage {
        layer,
        config,
        manifest,
    })
}

impl DemoImage {
    /// Writes an OCI image layout with the image tagged `tag` into `dir`
    /// (`skopeo copy oci:DIR:TAG ...` reads it).
    pub fn write_layout(&self, dir: &Path, tag: &str) -> Result<()> {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs)?;
        for blob in [&self.layer, &self.config, &self.manifest] {
            std::fs::write(blobs.join(blob.digest.hex()), &blob.bytes)?;
        }
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut descriptor = self.manifest.descriptor();
        descriptor["annotations"] = json!({"org.opencontainers.image.ref.name": tag});
        let index = json!({"schemaVersion": 2, "manifests": [descriptor]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec_pretty(&index)?)?;
        Ok(())
    }

    /// Pushes the image to `registry` (`http://host:port`) as `repo:tag`,
    /// logging in as `user` through the registry's token service.
    pub async fn push(
        &self,
        registry: &str,
        repo: &str,
        tag: &str,
        user: &str,
        password: &str,
    ) -> Result<()> {
        let target = PushTarget {
            registry,
            repo,
            tag,
            user,
            password,
        };
        push_image(&target, &[&self.layer, &self.config], &self.manifest).await
    }
}

/// Where [`push_image`] pushes, and as whom.
pub struct PushTarget<'a> {
    /// The registry, `http://host:port`.
    pub registry: &'a str,
    /// The repository, `project/name`.
    pub repo: &'a str,
    /// The tag the manifest gets.
    pub tag: &'a str,
    /// The user logging in through the registry's token service.
    pub user: &'a str,
    /// Their password.
    pub password: &'a str,
}

/// Pushes `blobs` (those the registry lacks), then `manifest` as the tag.
pub async fn push_image(target: &PushTarget<'_>, blobs: &[&Blob], manifest: &Blob) -> Result<()> {
    let PushTarget {
        registry,
        repo,
        tag,
        user,
        password,
    } = *target;
    let base = reqwest::Url::parse(registry)
        .with_context(|| format!("the registry address {registry:?} is not a URL"))?;
    let registry = Client::new(registry, base, reqwest::Client::new())
        .with_credentials(Some(RegistryCredentials::new(user, password)));
    for blob in blobs {
        let exists = registry
            .blob(reqwest::Method::HEAD, repo, &blob.digest, 0)
            .await?;
        if exists.status().is_success() {
            continue;
        }
        let started = registry.start_upload(repo).await?;
        if !started.status().is_success() {
            bail!("starting an upload to {repo}: {}", started.status());
        }
        let location = location(&started).context("the registry gave no upload location")?;
        let session = registry.location(&location)?;
        let finished = registry
            .finish_upload(
                repo,
                &session,
                &blob.digest,
                Some(blob.bytes.clone().into()),
            )
            .await?;
        if !finished.status().is_success() {
            bail!("uploading {} to {repo}: {}", blob.digest, finished.status());
        }
    }
    let pushed = registry
        .put_manifest(
            repo,
            tag,
            manifest.media_type,
            manifest.bytes.clone().into(),
            None,
        )
        .await?;
    if !pushed.status().is_success() {
        let status = pushed.status();
        bail!(
            "pushing the manifest of {repo}:{tag}: {status}: {}",
            pushed.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_image_is_a_valid_oci_image() {
        let dir = tempfile::tempdir().unwrap();
        let fake_busybox = dir.path().join("busybox");
        std::fs::write(&fake_busybox, b"\x7fELF").unwrap();
        let image = build(&fake_busybox).unwrap();
        let parsed = wharf_oci::ParsedManifest::parse(
            Some(image.manifest.media_type),
            &image.manifest.bytes,
        )
        .unwrap();
        assert_eq!(parsed.required_blobs().count(), 2);
        let layout = dir.path().join("layout");
        image.write_layout(&layout, "1").unwrap();
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["digest"],
            image.manifest.digest.to_string()
        );
        assert!(
            layout
                .join("blobs/sha256")
                .join(image.layer.digest.hex())
                .exists()
        );
    }
}
