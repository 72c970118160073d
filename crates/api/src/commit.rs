//! Commit: a running container frozen into an image (`wharf commit POD`),
//! and the records the component flow keeps (`wharf commit deployment`).
//! The server, the agent and the CLI exchange these; their JSON is the
//! wire format, so names do not change.
//!
//! ```
//! use wharf_api::commit::{CommitCompression, CommitRequest};
//! let request: CommitRequest =
//!     serde_json::from_str(r#"{"image":"shop/web:snap","changes":["ENV A=1"]}"#).unwrap();
//! assert!(request.pause);
//! assert_eq!(request.compression, CommitCompression::Gzip);
//! ```

use serde::{Deserialize, Serialize};

/// The store prefix of the component flow's index, as the seed keeps it:
/// `/commiter/ips/<image> = <ip>`.
pub const COMMIT_IPS_PREFIX: &str = "/commiter/ips/";

/// The label a committed pod gets, with its address as the value.
pub const LABEL_COMMIT_IP: &str = "ip";

/// How the new layer is compressed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CommitCompression {
    /// `application/vnd.oci.image.layer.v1.tar+gzip` (what every client reads).
    #[default]
    Gzip,
    /// `application/vnd.oci.image.layer.v1.tar+zstd`.
    Zstd,
}

fn yes() -> bool {
    true
}

fn is_false(value: &bool) -> bool {
    !value
}

/// `POST /api/v1/projects/{project}/pods/{name}/commit`: what to commit and
/// where to push it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitRequest {
    /// The container; may be left out when the pod has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The image to push, `project/repository[:tag]` on this registry
    /// (the tag defaults to `latest`).
    pub image: String,
    /// Freeze the container (cgroup freezer) while its changes are read.
    #[serde(default = "yes")]
    pub pause: bool,
    /// The new layer's compression.
    #[serde(default)]
    pub compression: CommitCompression,
    /// The history entry's author (`docker commit --author`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The history entry's comment (`docker commit --message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Dockerfile instructions applied to the config, as `docker commit
    /// --change` takes them: `CMD`, `ENTRYPOINT`, `ENV`, `WORKDIR`,
    /// `EXPOSE`, `LABEL`, `USER`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<String>,
    /// Check and measure only: nothing is paused, written or pushed, and
    /// the answer's one line is `measured`. The component flow checks every
    /// pod this way before it commits the first.
    #[serde(default, skip_serializing_if = "is_false")]
    pub check_only: bool,
}

/// One line of a commit's progress, streamed as JSON lines while it runs;
/// the last line is `Done` or `Failed`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "camelCase")]
pub enum CommitProgress {
    /// The container's changes were measured, before anything was paused.
    #[serde(rename_all = "camelCase")]
    Measured {
        /// Regular files, directories, links and whiteouts changed.
        entries: u64,
        /// Bytes of changed file content.
        bytes: u64,
        /// What the target project may still store, when it has a quota.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quota_remaining_bytes: Option<u64>,
    },
    /// The container is frozen.
    Paused,
    /// The changes were read; the container runs again.
    #[serde(rename_all = "camelCase")]
    Resumed {
        /// How long it was frozen, in milliseconds.
        paused_ms: u64,
    },
    /// Compressing the new layer.
    #[serde(rename_all = "camelCase")]
    Compressing {
        /// Uncompressed bytes done.
        done_bytes: u64,
        /// Uncompressed bytes in all.
        total_bytes: u64,
    },
    /// Pushing blobs.
    #[serde(rename_all = "camelCase")]
    Pushing {
        /// Bytes sent.
        done_bytes: u64,
        /// Bytes to send.
        total_bytes: u64,
    },
    /// The image is pushed.
    Done(CommitResult),
    /// The commit failed at `step`; the container runs (it was resumed).
    #[serde(rename_all = "camelCase")]
    Failed {
        /// Where it failed: `check`, `pause`, `snapshot`, `resume`,
        /// `compress`, `push`.
        step: String,
        /// What went wrong.
        message: String,
    },
}

/// What a finished commit made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitResult {
    /// The image pushed, `registry/project/repository:tag`.
    pub image: String,
    /// Its manifest's digest.
    pub digest: String,
    /// The new layer's (compressed) digest.
    pub layer_digest: String,
    /// The new layer's compressed size.
    pub layer_bytes: u64,
    /// Base layers already in the registry, mounted rather than sent.
    pub reused_layers: u32,
    /// How long the container was frozen (0 without `pause`).
    pub paused_ms: u64,
    /// The whole commit, from the request to the pushed manifest.
    pub total_ms: u64,
}

/// `POST /api/v1/nodes/{node}/commitgrants`: the node's agent, asked to
/// commit a container, asks the server (as the node) whether the user's
/// token may; the server answers with a [`NodeCommitGrant`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeCommitGrantRequest {
    /// The API token the user's request carried.
    pub token: String,
    /// The pod's project.
    pub project: String,
    /// The pod.
    pub pod: String,
    /// What the user asked.
    pub request: CommitRequest,
}

/// The server's yes to a [`NodeCommitGrantRequest`]: the node's credential
/// may push to `repository` until `expires_at` (or until the agent ends
/// the grant with `DELETE .../commitgrants/{id}?repository=`), and what the
/// agent needs to know of the pod that only the server has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCommitGrant {
    /// The grant, to end it.
    pub id: String,
    /// The one repository the node may push to (`project/repository`).
    pub repository: String,
    /// The tag to push.
    pub tag: String,
    /// Unix milliseconds after which the grant counts no more.
    pub expires_at: u64,
    /// The container (the one asked, or the pod's only one).
    pub container: String,
    /// The image the container runs, as the pod names it.
    pub base_image: String,
    /// Paths inside the container left out of the layer: where the pod's
    /// volumes are mounted (the agent adds its own bind-mounted files).
    #[serde(default)]
    pub exclude: Vec<String>,
    /// What the target project may still store, when it has a quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_remaining_bytes: Option<u64>,
}

/// The user's token stays out of logs.
impl std::fmt::Debug for NodeCommitGrantRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCommitGrantRequest")
            .field("token", &"<hidden>")
            .field("project", &self.project)
            .field("pod", &self.pod)
            .field("request", &self.request)
            .finish()
    }
}
