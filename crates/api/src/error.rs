/// What is wrong with an object or manifest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// The text is not valid YAML/JSON, or not of the expected shape.
    #[error("{0}")]
    Parse(String),
    /// A field has an invalid value; `field` is a path like `spec.replicas`.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the field.
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// Fields that change security, identity or data and that Wharf does
    /// not honour yet: refused rather than ignored.
    #[error(
        "document {document}: {} not supported by Wharf: {} security, identity or data, so the manifest is refused rather than run without {}; see docs/workloads.md for what is supported",
        fields.join(", "),
        if fields.len() == 1 { "it changes" } else { "they change" },
        if fields.len() == 1 { "it" } else { "them" }
    )]
    Unsupported {
        /// Which document of the manifest (from 1).
        document: usize,
        /// Paths of the fields, e.g. `spec.template.spec.hostPID`.
        fields: Vec<String>,
    },
    /// The `apiVersion`/`kind` pair is not one Wharf accepts.
    #[error(
        "unsupported kind {kind} ({api_version}): Wharf accepts apps/v1 Deployment, v1 ConfigMap, Secret, PersistentVolumeClaim, Service, autoscaling/v2 HorizontalPodAutoscaler and wharf.io/v1 Cluster, Pool, MachineClass, PoolGrant and CostBudget"
    )]
    UnsupportedKind {
        /// The manifest's kind.
        kind: String,
        /// The manifest's apiVersion.
        api_version: String,
    },
}

impl ObjectError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> ObjectError {
        ObjectError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}
