//! From a reference to a verified image manifest and config: follow an
//! index to this node's platform, check every digest on the way.

use bytes::Bytes;
use wharf_oci::{Digest, DigestAlgorithm, ManifestKind, ParsedManifest};

use crate::client::Session;
use crate::layout::LayerRecord;
use crate::{Compression, ImageConfig, ImageError, ImageRef, Platform, blocking};

/// Largest image config accepted.
pub(crate) const MAX_CONFIG_BYTES: u64 = 8 << 20;

/// An image manifest and how it was reached.
pub(crate) struct Resolved {
    /// The digest the reference resolved to (the index's, for multi-arch images).
    pub manifest_digest: Digest,
    /// The digest of the image manifest for this platform.
    pub image_manifest_digest: Digest,
    pub manifest: ParsedManifest,
}

pub(crate) async fn resolve(
    session: &Session,
    image: &ImageRef,
    platform: &Platform,
) -> Result<Resolved, ImageError> {
    let reference = image.manifest_reference().to_string();
    let (content_type, body) = session.manifest(&reference).await?;
    let (digest, manifest) =
        verify_manifest(session.image(), content_type, body, image.digest().cloned()).await?;
    if manifest.kind == ManifestKind::Image {
        return Ok(Resolved {
            manifest_digest: digest.clone(),
            image_manifest_digest: digest,
            manifest,
        });
    }
    let child = choose_platform(session, &manifest, platform)?;
    let (content_type, body) = session.manifest(child.as_str()).await?;
    let (child_digest, child_manifest) =
        verify_manifest(session.image(), content_type, body, Some(child)).await?;
    if child_manifest.kind != ManifestKind::Image {
        return Err(ImageError::InvalidManifest {
            image: session.image(),
            reason: format!("the index entry {child_digest} for {platform} is itself an index"),
        });
    }
    Ok(Resolved {
        manifest_digest: digest,
        image_manifest_digest: child_digest,
        manifest: child_manifest,
    })
}

/// Hashes and parses a manifest; a pinned digest must match.
pub(crate) async fn verify_manifest(
    image: String,
    content_type: Option<String>,
    body: Bytes,
    expected: Option<Digest>,
) -> Result<(Digest, ParsedManifest), ImageError> {
    blocking(move || {
        let algorithm = expected
            .as_ref()
            .map_or(DigestAlgorithm::Sha256, Digest::algorithm);
        let actual = Digest::of(algorithm, &body);
        if let Some(expected) = expected
            && expected != actual
        {
            return Err(ImageError::DigestMismatch {
                what: format!("manifest of {image}"),
                expected,
                actual,
            });
        }
        let manifest = ParsedManifest::parse(content_type.as_deref(), &body).map_err(|e| {
            ImageError::InvalidManifest {
                image,
                reason: e.to_string(),
            }
        })?;
        Ok((actual, manifest))
    })
    .await
}

fn choose_platform(
    session: &Session,
    index: &ParsedManifest,
    platform: &Platform,
) -> Result<Digest, ImageError> {
    let offered: Vec<(Platform, &Digest)> = index
        .manifests
        .iter()
        .filter_map(|d| Some((Platform::from_json(d.platform.as_ref()?)?, &d.digest)))
        .collect();
    if let Some((_, digest)) = offered.iter().find(|(p, _)| platform.accepts(p)) {
        return Ok((*digest).clone());
    }
    let available: Vec<String> = offered.iter().map(|(p, _)| p.to_string()).collect();
    Err(ImageError::NoMatchingPlatform {
        image: session.image(),
        platform: platform.to_string(),
        available: if available.is_empty() {
            "none".into()
        } else {
            available.join(", ")
        },
    })
}

/// Fetches, verifies and parses the config of an image manifest.
pub(crate) async fn fetch_config(
    session: &Session,
    manifest: &ParsedManifest,
) -> Result<(Digest, ImageConfig), ImageError> {
    let image = session.image();
    let descriptor = manifest
        .config
        .clone()
        .ok_or_else(|| ImageError::InvalidManifest {
            image: image.clone(),
            reason: "the image manifest has no config".into(),
        })?;
    if descriptor.size > MAX_CONFIG_BYTES {
        return Err(ImageError::InvalidConfig {
            image,
            reason: format!(
                "the config is {} bytes, over the {MAX_CONFIG_BYTES} byte limit",
                descriptor.size
            ),
        });
    }
    let body = session
        .small_blob(&descriptor.digest, descriptor.size as usize)
        .await?;
    blocking(move || {
        let what = format!("config {} of {image}", descriptor.digest);
        if body.len() as u64 != descriptor.size {
            return Err(ImageError::SizeMismatch {
                what,
                expected: descriptor.size,
                actual: body.len() as u64,
            });
        }
        let actual = Digest::of(descriptor.digest.algorithm(), &body);
        if actual != descriptor.digest {
            return Err(ImageError::DigestMismatch {
                what,
                expected: descriptor.digest,
                actual,
            });
        }
        let config = ImageConfig::parse(&body)
            .map_err(|reason| ImageError::InvalidConfig { image, reason })?;
        Ok((descriptor.digest, config))
    })
    .await
}

/// Pairs each layer with its `diff_id`, refusing layer types we cannot unpack
/// before anything is downloaded.
pub(crate) fn layer_records(
    image: &str,
    manifest: &ParsedManifest,
    config: &ImageConfig,
) -> Result<Vec<LayerRecord>, ImageError> {
    if manifest.layers.len() != config.diff_ids.len() {
        return Err(ImageError::InvalidConfig {
            image: image.to_string(),
            reason: format!(
                "the config lists {} diff_ids for {} layers",
                config.diff_ids.len(),
                manifest.layers.len()
            ),
        });
    }
    manifest
        .layers
        .iter()
        .zip(&config.diff_ids)
        .map(|(layer, diff_id)| {
            if Compression::of_media_type(&layer.media_type).is_none() {
                return Err(ImageError::UnsupportedMediaType {
                    what: format!("layer {} of {image}", layer.digest),
                    media_type: layer.media_type.clone(),
                });
            }
            Ok(LayerRecord {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size,
                diff_id: diff_id.clone(),
            })
        })
        .collect()
}
