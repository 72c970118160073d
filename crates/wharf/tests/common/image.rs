//! Container images generated in code: real gzip-compressed tar layers of
//! random files, an image config whose `diff_ids` match them, OCI manifests
//! and indexes, and an OCI image layout directory to hand them to clients.
//!
//! Media types are spelled out here rather than taken from `wharf_oci`, so
//! that the tests check the registry against the specs, not against itself.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use wharf_oci::{Digest, DigestAlgorithm, StreamHasher};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// OCI gzip-compressed tar layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Docker image manifest, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// The sha256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(DigestAlgorithm::Sha256, bytes)
}

/// `len` random bytes. They come from the kernel: a user-space generator
/// compiled without optimisation, as in test builds, manages ~15 MB/s.
pub fn random_bytes(len: usize) -> Vec<u8> {
    use std::io::Read;
    let mut bytes = vec![0u8; len];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .expect("reading /dev/urandom");
    bytes
}

/// Content with its media type and digest.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Media type used in descriptors pointing at this blob.
    pub media_type: String,
    /// The content.
    pub bytes: Vec<u8>,
    /// sha256 of the content.
    pub digest: Digest,
}

impl Blob {
    /// A blob of `bytes` described as `media_type`.
    pub fn new(media_type: &str, bytes: Vec<u8>) -> Blob {
        Blob {
            media_type: media_type.to_string(),
            digest: sha256(&bytes),
            bytes,
        }
    }

    /// A JSON document as a blob (compact serialisation).
    pub fn json(media_type: &str, value: &Value) -> Blob {
        Blob::new(
            media_type,
            serde_json::to_vec(value).expect("serialising JSON"),
        )
    }

    /// Length in bytes.
    pub fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// An OCI descriptor of this blob.
    pub fn descriptor(&self) -> Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest.as_str(),
            "size": self.size(),
        })
    }
}

/// A filesystem layer: a gzip-compressed tar and the digest of the tar
/// itself (its `diff_id`).
#[derive(Clone, Debug)]
pub struct Layer {
    /// The compressed layer as pushed.
    pub blob: Blob,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

impl Layer {
    /// A layer holding regular files `(path, size)` of random content, plus
    /// entries for their parent directories.
    pub fn random(files: &[(&str, usize)]) -> Layer {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dirs = BTreeSet::new();
        for (path, _) in files {
            let mut parent = Path::new(path).parent();
            while let Some(dir) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(dir.to_path_buf());
                parent = dir.parent();
            }
        }
        for dir in &dirs {
            let mut header = tar_header(tar::EntryType::Directory, 0o755, 0);
            builder
                .append_data(&mut header, dir, std::io::empty())
                .expect("adding a directory to the tar");
        }
        for (path, size) in files {
            let mut header = tar_header(tar::EntryType::Regular, 0o644, *size as u64);
            builder
                .append_data(&mut header, path, &random_bytes(*size)[..])
                .expect("adding a file to the tar");
        }
        let tar = builder.into_inner().expect("finishing the tar");
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).expect("compressing the layer");
        Layer {
            blob: Blob::new(
                OCI_LAYER_GZIP,
                gzip.finish().expect("compressing the layer"),
            ),
            diff_id: sha256(&tar),
        }
    }
}

impl Layer {
    /// A layer from tar bytes as given (which may be hostile).
    pub fn from_tar(tar: &[u8]) -> Layer {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(tar).expect("compressing the layer");
        Layer {
            blob: Blob::new(
                OCI_LAYER_GZIP,
                gzip.finish().expect("compressing the layer"),
            ),
            diff_id: sha256(tar),
        }
    }
}

impl Layer {
    /// A decompression bomb with correct digests: one file of `gib` GiB of
    /// zeros, gzipped as the same small member repeated (a few MiB of blob).
    pub fn zeros(gib: u64) -> Layer {
        let gzip = |part: &[u8], level| {
            let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
            encoder.write_all(part).expect("compressing");
            encoder.finish().expect("compressing")
        };
        let chunk = vec![0u8; 64 << 20];
        let member = gzip(&chunk, flate2::Compression::best());
        let mut header = tar_header(tar::EntryType::Regular, 0o644, gib << 30);
        header.set_path("zeros").expect("a short path");
        header.set_cksum();
        let trailer = [0u8; 1024];
        let mut diff_id = StreamHasher::new(DigestAlgorithm::Sha256);
        diff_id.update(header.as_bytes());
        let mut bytes = gzip(header.as_bytes(), flate2::Compression::fast());
        for _ in 0..gib * 16 {
            diff_id.update(&chunk);
            bytes.extend_from_slice(&member);
        }
        diff_id.update(&trailer);
        bytes.extend_from_slice(&gzip(&trailer, flate2::Compression::fast()));
        Layer {
            blob: Blob::new(OCI_LAYER_GZIP, bytes),
            diff_id: diff_id.finish(),
        }
    }
}

fn tar_header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_700_000_000);
    header
}

/// An image: config, layers and the OCI manifest tying them together.
#[derive(Clone, Debug)]
pub struct Image {
    /// `architecture` of the config.
    pub architecture: String,
    /// The image config.
    pub config: Blob,
    /// The compressed layers, bottom first.
    pub layers: Vec<Blob>,
    /// The OCI image manifest.
    pub manifest: Blob,
}

impl Image {
    /// The usual test image: two layers, a small one and one of about
    /// 3 MiB, so that clients that split uploads into chunks do so.
    pub fn sample() -> Image {
        let layers = sample_layers();
        Image::new("amd64", &layers)
    }

    /// A linux image for `architecture` made of `layers`.
    pub fn new(architecture: &str, layers: &[Layer]) -> Image {
        let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
        let config = Blob::json(
            OCI_CONFIG,
            &json!({
                "created": "2023-11-14T22:13:20Z",
                "architecture": architecture,
                "os": "linux",
                "config": {
                    "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                    "Cmd": ["/app/run"],
                    "WorkingDir": "/app",
                },
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
                "history": layers
                    .iter()
                    .map(|_| json!({ "created": "2023-11-14T22:13:20Z", "created_by": "wharf e2e fixture" }))
                    .collect::<Vec<_>>(),
            }),
        );
        let layer_blobs: Vec<Blob> = layers.iter().map(|l| l.blob.clone()).collect();
        let manifest = Blob::json(
            OCI_MANIFEST,
            &json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": layer_blobs.iter().map(Blob::descriptor).collect::<Vec<_>>(),
                "annotations": { "org.opencontainers.image.title": "wharf e2e sample" },
            }),
        );
        Image {
            architecture: architecture.to_string(),
            config,
            layers: layer_blobs,
            manifest,
        }
    }

    /// Every blob of the image: manifest, config and layers.
    pub fn blobs(&self) -> Vec<&Blob> {
        let mut blobs = vec![&self.manifest, &self.config];
        blobs.extend(&self.layers);
        blobs
    }

    /// The digests of [`Image::blobs`].
    pub fn digests(&self) -> BTreeSet<Digest> {
        self.blobs().into_iter().map(|b| b.digest.clone()).collect()
    }
}

/// The two layers of [`Image::sample`].
pub fn sample_layers() -> Vec<Layer> {
    vec![
        Layer::random(&[
            ("etc/wharf-release", 64),
            ("app/run", 4 << 10),
            ("app/data/small.bin", 100 << 10),
        ]),
        Layer::random(&[("app/data/large.bin", 3 << 20)]),
    ]
}

/// A multi-platform image: an OCI index over images that share layers.
#[derive(Clone, Debug)]
pub struct ImageIndex {
    /// The images, one per platform.
    pub images: Vec<Image>,
    /// The OCI image index.
    pub index: Blob,
}

impl ImageIndex {
    /// linux/amd64 and linux/arm64 images over the same two layers.
    pub fn multi_arch() -> ImageIndex {
        let layers = sample_layers();
        ImageIndex::new(vec![
            Image::new("amd64", &layers),
            Image::new("arm64", &layers),
        ])
    }

    /// An index over `images`.
    pub fn new(images: Vec<Image>) -> ImageIndex {
        let manifests: Vec<Value> = images
            .iter()
            .map(|image| {
                let mut descriptor = image.manifest.descriptor();
                descriptor["platform"] =
                    json!({ "architecture": image.architecture, "os": "linux" });
                descriptor
            })
            .collect();
        let index = Blob::json(
            OCI_INDEX,
            &json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests }),
        );
        ImageIndex { images, index }
    }

    /// The index and every blob of every image, without duplicates.
    pub fn digests(&self) -> BTreeSet<Digest> {
        let mut digests = BTreeSet::from([self.index.digest.clone()]);
        for image in &self.images {
            digests.extend(image.digests());
        }
        digests
    }
}

/// A descriptor read back from an image layout or a registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// Media type.
    pub media_type: String,
    /// Digest.
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

impl Descriptor {
    fn from_json(value: &Value) -> Descriptor {
        Descriptor {
            media_type: value["mediaType"]
                .as_str()
                .unwrap_or_else(|| panic!("descriptor without mediaType: {value}"))
                .to_string(),
            digest: value["digest"]
                .as_str()
                .and_then(|d| d.parse().ok())
                .unwrap_or_else(|| panic!("descriptor without a valid digest: {value}")),
            size: value["size"]
                .as_u64()
                .unwrap_or_else(|| panic!("descriptor without size: {value}")),
        }
    }
}

/// An OCI image layout directory (`oci-layout`, `index.json`,
/// `blobs/sha256/...`), as skopeo's `oci:` transport reads and writes it.
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// Creates an empty layout in `dir`.
    pub fn create(dir: &Path) -> OciLayout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("creating the layout");
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
            .expect("writing oci-layout");
        let layout = OciLayout {
            dir: dir.to_path_buf(),
        };
        layout.write_index(&[]);
        layout
    }

    /// An existing layout, e.g. one a client wrote.
    pub fn open(dir: &Path) -> OciLayout {
        assert!(
            dir.join("oci-layout").is_file(),
            "{} is not an OCI image layout",
            dir.display()
        );
        OciLayout {
            dir: dir.to_path_buf(),
        }
    }

    /// The `oci:DIR:TAG` reference for skopeo.
    pub fn reference(&self, tag: &str) -> String {
        format!("oci:{}:{tag}", self.dir.display())
    }

    /// Adds `image` under the name `tag`.
    pub fn add_image(&self, image: &Image, tag: &str) {
        for blob in image.blobs() {
            self.write_blob(blob);
        }
        self.add_ref(&image.manifest, tag);
    }

    /// Adds the multi-platform `index` under the name `tag`.
    pub fn add_index(&self, index: &ImageIndex, tag: &str) {
        for image in &index.images {
            for blob in image.blobs() {
                self.write_blob(blob);
            }
        }
        self.write_blob(&index.index);
        self.add_ref(&index.index, tag);
    }

    fn write_blob(&self, blob: &Blob) {
        std::fs::write(self.blob_path(&blob.digest), &blob.bytes).expect("writing a blob");
    }

    fn add_ref(&self, blob: &Blob, tag: &str) {
        let mut entries = self.index_entries();
        let mut descriptor = blob.descriptor();
        descriptor["annotations"] = json!({ REF_NAME: tag });
        entries.push(descriptor);
        self.write_index(&entries);
    }

    fn write_index(&self, manifests: &[Value]) {
        let index = json!({ "schemaVersion": 2, "manifests": manifests });
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("serialising index.json"),
        )
        .expect("writing index.json");
    }

    fn index_entries(&self) -> Vec<Value> {
        let bytes = std::fs::read(self.dir.join("index.json")).expect("reading index.json");
        let index: Value = serde_json::from_slice(&bytes).expect("index.json is JSON");
        index["manifests"].as_array().cloned().unwrap_or_default()
    }

    /// The descriptor named `tag` in `index.json`.
    pub fn resolve(&self, tag: &str) -> Descriptor {
        let entries = self.index_entries();
        let entry = entries
            .iter()
            .find(|e| e["annotations"][REF_NAME] == tag)
            .unwrap_or_else(|| {
                panic!(
                    "no {tag:?} in {}/index.json: {entries:?}",
                    self.dir.display()
                )
            });
        Descriptor::from_json(entry)
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir
            .join("blobs")
            .join(digest.algorithm().as_str())
            .join(digest.hex())
    }

    /// A blob's content, checked against its digest.
    pub fn read_blob(&self, digest: &Digest) -> Vec<u8> {
        let path = self.blob_path(digest);
        let bytes =
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading blob {}: {e}", path.display()));
        assert_eq!(
            &sha256(&bytes),
            digest,
            "{} does not hash to its name",
            path.display()
        );
        bytes
    }

    /// The digests of everything reachable from `root` (a manifest or an
    /// index), root included, each read and checked against its digest.
    pub fn closure(&self, root: &Descriptor) -> BTreeSet<Digest> {
        let mut seen = BTreeSet::new();
        let mut pending = vec![root.clone()];
        while let Some(descriptor) = pending.pop() {
            let bytes = self.read_blob(&descriptor.digest);
            assert_eq!(
                bytes.len() as u64,
                descriptor.size,
                "size of {} differs from its descriptor",
                descriptor.digest
            );
            let is_manifest = ["manifest", "index"]
                .iter()
                .any(|kind| descriptor.media_type.contains(kind));
            if is_manifest {
                let document: Value =
                    serde_json::from_slice(&bytes).expect("a manifest or index is JSON");
                let children = document["manifests"]
                    .as_array()
                    .into_iter()
                    .chain(document["layers"].as_array())
                    .flatten()
                    .chain(document.get("config"));
                pending.extend(children.map(Descriptor::from_json));
            }
            seen.insert(descriptor.digest);
        }
        seen
    }
}
