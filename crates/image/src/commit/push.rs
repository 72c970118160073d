//! Pushing a commit: the base image's manifest and config read back from
//! the registry (verified), a config that extends the base's, base layers
//! found or mounted in the target repository (never uploaded: the node
//! keeps them only unpacked), the new layer streamed from its file, then
//! the manifest, of the base's kind.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use wharf_distribution::{content_digest, location};
use wharf_oci::{Descriptor, Digest, DigestAlgorithm};

use super::extend::{Base, new_config, new_manifest};
use super::{CommitPush, PushedCommit};
use crate::client::Session;
use crate::error::io_err;
use crate::resolve::{MAX_CONFIG_BYTES, resolve, verify_manifest};
use crate::{ImageConfig, ImageError, ImageRef, ImageStore, blocking};

/// Bytes read from the layer file per body chunk.
const UPLOAD_CHUNK: usize = 1 << 20;

/// Pushes a commit; see [`ImageStore::push_commit`].
pub(crate) async fn push(
    store: &ImageStore,
    push: &CommitPush<'_>,
    credentials: Option<&wharf_distribution::RegistryCredentials>,
    sent: Arc<AtomicU64>,
) -> Result<PushedCommit, ImageError> {
    let target = push.target;
    let target_name = target.to_string();
    let target_name = target_name.as_str();
    let step = |step: String| move |e: ImageError| step_error(target_name, step, e);
    check_target(push)?;
    check_created(target, push.created)?;
    let tag = target
        .tag()
        .map_or_else(|| "latest".to_string(), |t| t.to_string());

    let base_session = Session::new(store.registry_client(), push.base, credentials)?;
    let base = read_base(store, &base_session, push.base_digest)
        .await
        .map_err(step(format!("read base image {}", push.base)))?;
    let (config_bytes, config_digest) = new_config(&base.config, push)?;
    let manifest = new_manifest(&base, push, &config_digest, config_bytes.len() as u64)?;

    let session = Session::for_push(store.registry_client(), target, credentials)?;
    let mut reused = 0;
    for layer in &base.manifest.layers {
        if is_foreign(layer) {
            continue;
        }
        reuse_layer(&session, push.base, &layer.digest)
            .await
            .map_err(step(format!("reuse base layer {}", layer.digest)))?;
        reused += 1;
    }
    let mut uploaded = 0;
    let new_layer = push.layer;
    if !blob_exists(&session, &new_layer.digest)
        .await
        .map_err(step(format!("look up layer {}", new_layer.digest)))?
    {
        upload_file(&session, new_layer, sent.clone())
            .await
            .map_err(step(format!("upload layer {}", new_layer.digest)))?;
        uploaded += new_layer.size;
    }
    if !blob_exists(&session, &config_digest)
        .await
        .map_err(step(format!("look up config {config_digest}")))?
    {
        upload_bytes(&session, &config_digest, Bytes::from(config_bytes.clone()))
            .await
            .map_err(step(format!("upload config {config_digest}")))?;
        uploaded += config_bytes.len() as u64;
        sent.fetch_add(config_bytes.len() as u64, Ordering::Relaxed);
    }
    let (media_type, manifest_bytes) = manifest;
    let manifest_digest = Digest::of(DigestAlgorithm::Sha256, &manifest_bytes);
    put_manifest(&session, &tag, media_type, manifest_bytes, &manifest_digest)
        .await
        .map_err(step(format!("put manifest {manifest_digest} as tag {tag}")))?;
    Ok(PushedCommit {
        manifest_digest,
        config_digest,
        reused_layers: reused,
        uploaded_bytes: uploaded,
    })
}

fn step_error(target: &str, step: String, source: ImageError) -> ImageError {
    ImageError::CommitPush {
        target: target.to_string(),
        step,
        source: Arc::new(source),
    }
}

/// Checks made before anything is read or sent: the target is on the base
/// image's registry and names a tag.
fn check_target(push: &CommitPush<'_>) -> Result<(), ImageError> {
    if push.target.registry() != push.base.registry() {
        return Err(ImageError::CrossRegistry {
            base_image: push.base.to_string(),
            target: push.target.to_string(),
            target_registry: push.target.registry().to_string(),
            base_registry: push.base.registry().to_string(),
        });
    }
    if push.target.digest().is_some() {
        return Err(ImageError::InvalidReference {
            reference: push.target.to_string(),
            reason: "a commit target names a tag, not a digest".into(),
        });
    }
    Ok(())
}

/// `created` must look like RFC 3339 (`2026-01-02T03:04:05Z`): registries
/// and clients parse it.
fn check_created(image: &ImageRef, created: &str) -> Result<(), ImageError> {
    let bytes = created.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|part| part.iter().all(u8::is_ascii_digit))
    };
    let shaped = bytes.len() >= 20
        && digits(0..4)
        && bytes[4] == b'-'
        && digits(5..7)
        && bytes[7] == b'-'
        && digits(8..10)
        && bytes[10] == b'T'
        && digits(11..13)
        && bytes[13] == b':'
        && digits(14..16)
        && bytes[16] == b':'
        && digits(17..19)
        && (created.ends_with('Z')
            || bytes[bytes.len() - 6] == b'+'
            || bytes[bytes.len() - 6] == b'-');
    if shaped {
        Ok(())
    } else {
        Err(ImageError::InvalidConfig {
            image: image.to_string(),
            reason: format!("the commit time {created:?} is not an RFC 3339 time"),
        })
    }
}

/// The base's platform manifest (the cached record's, else the one the
/// registry offers for this node's platform) and config, both verified.
async fn read_base(
    store: &ImageStore,
    session: &Session,
    base_digest: &Digest,
) -> Result<Base, ImageError> {
    let record = {
        let (layout, digest) = (store.layout().clone(), base_digest.clone());
        blocking(move || layout.read_image(&digest)).await?
    };
    let manifest_digest = match record {
        Some(record) => record.image_manifest_digest,
        None => {
            let pinned = ImageRef::parse(&format!(
                "{}/{}@{base_digest}",
                session.registry().name(),
                session.repository()
            ))?;
            resolve(session, &pinned, store.platform())
                .await?
                .image_manifest_digest
        }
    };
    let (content_type, body) = session.manifest(manifest_digest.as_str()).await?;
    let manifest_json: Value =
        serde_json::from_slice(&body).map_err(|e| ImageError::InvalidManifest {
            image: session.image(),
            reason: e.to_string(),
        })?;
    let (_, manifest) = verify_manifest(
        session.image(),
        content_type,
        body,
        Some(manifest_digest.clone()),
    )
    .await?;
    let descriptor = manifest
        .config
        .clone()
        .ok_or_else(|| ImageError::InvalidManifest {
            image: session.image(),
            reason: format!("manifest {manifest_digest} is no image manifest (it has no config)"),
        })?;
    if descriptor.size > MAX_CONFIG_BYTES {
        return Err(ImageError::InvalidConfig {
            image: session.image(),
            reason: format!(
                "the config is {} bytes, over the {MAX_CONFIG_BYTES} byte limit",
                descriptor.size
            ),
        });
    }
    let config = session
        .small_blob(&descriptor.digest, descriptor.size as usize)
        .await?;
    let what = format!("config {} of {}", descriptor.digest, session.image());
    if config.len() as u64 != descriptor.size {
        return Err(ImageError::SizeMismatch {
            what,
            expected: descriptor.size,
            actual: config.len() as u64,
        });
    }
    let actual = Digest::of(descriptor.digest.algorithm(), &config);
    if actual != descriptor.digest {
        return Err(ImageError::DigestMismatch {
            what,
            expected: descriptor.digest,
            actual,
        });
    }
    let parsed = ImageConfig::parse(&config).map_err(|reason| ImageError::InvalidConfig {
        image: session.image(),
        reason,
    })?;
    if parsed.diff_ids.len() != manifest.layers.len() {
        return Err(ImageError::InvalidConfig {
            image: session.image(),
            reason: format!(
                "the config lists {} diff_ids for {} layers",
                parsed.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    Ok(Base {
        manifest,
        manifest_json,
        config,
    })
}

/// Layers fetched from elsewhere than the registry (Windows base layers):
/// nothing to find or mount.
fn is_foreign(layer: &Descriptor) -> bool {
    !layer.urls.is_empty()
        && (layer.media_type.contains("foreign") || layer.media_type.contains("nondistributable"))
}

/// A base layer in the target repository: there already, or mounted from
/// the base's repository; else an error, since no copy is kept to upload.
async fn reuse_layer(
    session: &Session,
    base: &ImageRef,
    digest: &Digest,
) -> Result<(), ImageError> {
    if blob_exists(session, digest).await? {
        return Ok(());
    }
    let from = base.repository().as_str();
    let mut why = format!("{} does not hold it", session.repository());
    if from != session.repository() {
        let sent = session
            .registry()
            .mount_blob(session.repository(), digest, from)
            .await;
        let response = sent.map_err(|e| session.send_error(e))?;
        match response.status() {
            StatusCode::CREATED => return Ok(()),
            StatusCode::ACCEPTED => {
                // Not mounted: the registry opened an upload session instead.
                cancel_session(session, &response).await;
                why.push_str(&format!(" and mounting it from {from} was refused"));
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                let url = session
                    .registry()
                    .url(&format!("/v2/{}/blobs/uploads/", session.repository()));
                let what = format!("mount of {digest} from {from}");
                return session.success(Ok(response), &url, &what).await.map(|_| ());
            }
            status => why.push_str(&format!(" and mounting it from {from} answered {status}")),
        }
    }
    Err(ImageError::NotFound {
        image: session.image(),
        what: format!(
            "base layer {digest} ({why}; the node keeps no compressed copy of base layers to upload)"
        ),
    })
}

async fn cancel_session(session: &Session, response: &reqwest::Response) {
    if let Some(location) = location(response)
        && let Ok(url) = session.registry().location(&location)
    {
        let _ = session
            .registry()
            .cancel_upload(session.repository(), &url)
            .await;
    }
}

/// `HEAD` of a blob in the session's repository.
async fn blob_exists(session: &Session, digest: &Digest) -> Result<bool, ImageError> {
    let url = session.registry().blob_url(session.repository(), digest);
    let sent = session
        .registry()
        .blob(Method::HEAD, session.repository(), digest, 0)
        .await;
    if let Ok(response) = &sent
        && response.status() == StatusCode::NOT_FOUND
    {
        return Ok(false);
    }
    session
        .success(sent, &url, &format!("blob {digest}"))
        .await
        .map(|_| true)
}

/// Opens an upload session; its URL.
async fn start_upload(session: &Session) -> Result<reqwest::Url, ImageError> {
    let url = session
        .registry()
        .url(&format!("/v2/{}/blobs/uploads/", session.repository()));
    let sent = session.registry().start_upload(session.repository()).await;
    let response = session.success(sent, &url, "upload session").await?;
    next_location(session, &response, &url)
}

fn next_location(
    session: &Session,
    response: &reqwest::Response,
    url: &reqwest::Url,
) -> Result<reqwest::Url, ImageError> {
    let no_location = || ImageError::Registry {
        image: session.image(),
        url: url.to_string(),
        status: response.status().as_u16(),
        message: "the answer has no usable Location".into(),
    };
    let location = location(response).ok_or_else(no_location)?;
    session
        .registry()
        .location(&location)
        .map_err(|e| session.send_error(e))
}

/// Uploads the layer file in one streamed `PATCH`, then closes the session.
async fn upload_file(
    session: &Session,
    layer: &super::NewLayer,
    sent: Arc<AtomicU64>,
) -> Result<(), ImageError> {
    let upload = start_upload(session).await?;
    let result = stream_file(session, layer, upload.clone(), sent).await;
    if result.is_err() {
        // Best effort: the registry would expire the session anyway.
        let _ = session
            .registry()
            .cancel_upload(session.repository(), &upload)
            .await;
    }
    result
}

/// The body of [`upload_file`] once the session is open.
async fn stream_file(
    session: &Session,
    layer: &super::NewLayer,
    upload: reqwest::Url,
    sent: Arc<AtomicU64>,
) -> Result<(), ImageError> {
    let path = layer.path.clone();
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(io_err("open", &path))?;
    let body = futures_util::stream::try_unfold(file, move |mut file| {
        let sent = sent.clone();
        async move {
            let mut chunk = vec![0u8; UPLOAD_CHUNK];
            let n = file.read(&mut chunk).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            chunk.truncate(n);
            sent.fetch_add(n as u64, Ordering::Relaxed);
            Ok(Some((Bytes::from(chunk), file)))
        }
    });
    let sent = session
        .registry()
        .append_upload(
            session.repository(),
            upload.clone(),
            0,
            layer.size,
            reqwest::Body::wrap_stream(body),
        )
        .await;
    let response = session.success(sent, &upload, "layer upload").await?;
    let upload = next_location(session, &response, &upload)?;
    let sent = session
        .registry()
        .finish_upload(session.repository(), &upload, &layer.digest, None)
        .await;
    session.success(sent, &upload, "layer upload").await?;
    Ok(())
}

/// Uploads a small blob in the request that closes the session.
async fn upload_bytes(session: &Session, digest: &Digest, bytes: Bytes) -> Result<(), ImageError> {
    let upload = start_upload(session).await?;
    let sent = session
        .registry()
        .finish_upload(session.repository(), &upload, digest, Some(bytes))
        .await;
    session.success(sent, &upload, "config upload").await?;
    Ok(())
}

async fn put_manifest(
    session: &Session,
    tag: &str,
    media_type: &str,
    bytes: Vec<u8>,
    digest: &Digest,
) -> Result<(), ImageError> {
    let url = session.registry().manifest_url(session.repository(), tag);
    let sent = session
        .registry()
        .put_manifest(
            session.repository(),
            tag,
            media_type,
            Bytes::from(bytes),
            None,
        )
        .await;
    let response = session.success(sent, &url, "manifest").await?;
    if let Some(stored) = content_digest(&response)
        && stored != *digest
    {
        return Err(ImageError::DigestMismatch {
            what: format!("manifest pushed to {}", session.image()),
            expected: digest.clone(),
            actual: stored,
        });
    }
    Ok(())
}
