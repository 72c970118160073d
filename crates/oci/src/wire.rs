//! Names Wharf adds to the OCI Distribution wire protocol, declared once for
//! the registry that sends them and the replication client that reads them.

/// Header a Wharf registry names its instance with on `/v2/`.
pub const INSTANCE_HEADER: &str = "Wharf-Instance";

/// Header carrying a write's origin between Wharf registries:
/// `<instance>; at=<unix millis>`.
pub const ORIGIN_HEADER: &str = "Wharf-Origin";

/// Header reporting what a manifest PUT or a tag DELETE did to the tag; its
/// values are in [`tag_outcome`] and [`delete_outcome`].
pub const TAG_HEADER: &str = "Wharf-Tag";

/// Values of [`TAG_HEADER`] answering a manifest PUT.
pub mod tag_outcome {
    /// The push was by digest: no tag involved.
    pub const NONE: &str = "none";
    /// The tag was created.
    pub const STORED: &str = "stored";
    /// The tag already pointed at the manifest.
    pub const UNCHANGED: &str = "unchanged";
    /// The tag moved to the manifest.
    pub const REPLACED: &str = "replaced";
    /// A replicated write lost to the tag's newer origin; the tag stays.
    pub const KEPT: &str = "kept";
    /// A replicated write lost to a newer delete of the tag; it stays deleted.
    pub const KEPT_DELETED: &str = "kept-deleted";
}

/// Values of [`TAG_HEADER`] answering a tag DELETE.
pub mod delete_outcome {
    /// The tag was deleted.
    pub const DELETED: &str = "deleted";
    /// A replicated delete lost to the tag's newer write; the tag stays.
    pub const KEPT: &str = "kept";
    /// A replicated delete found no tag; the delete is remembered.
    pub const ABSENT: &str = "absent";
}
