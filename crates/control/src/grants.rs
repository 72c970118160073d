//! Pool grants: a project's right to place pods on a managed pool (one
//! with a `Pool` object), stored at `/cluster/poolgrants/<pool>.<project>`;
//! and the apply-time check that a Deployment naming a pool may use it.

use std::collections::BTreeMap;

use wharf_api::{Deployment, Pool, PoolGrant, named_pool};

use crate::{ControlError, Objects};

/// Creates a grant; a second one for the same pool and project is refused
/// as overlapping.
pub async fn create_pool_grant(
    objects: &Objects,
    mut grant: PoolGrant,
) -> Result<PoolGrant, ControlError> {
    grant.normalize_and_validate()?;
    require_pool(objects, &grant.spec.pool).await?;
    let name = grant.metadata.name.clone();
    objects.create(grant).await.map_err(|err| match err {
        ControlError::Conflict(_) => ControlError::Conflict(format!(
            "pool grant {name} overlaps the existing grant of that pool to that project: \
             change its quota by applying it instead"
        )),
        other => other,
    })
}

/// Creates a grant or replaces the quota of the existing one (`apply`);
/// `true` if created.
pub async fn apply_pool_grant(
    objects: &Objects,
    mut grant: PoolGrant,
) -> Result<(PoolGrant, bool), ControlError> {
    grant.normalize_and_validate()?;
    require_pool(objects, &grant.spec.pool).await?;
    let spec = grant.spec.clone();
    objects
        .create_or_modify(grant, |current: &mut PoolGrant| {
            let changed = current.spec != spec;
            current.spec = spec.clone();
            changed
        })
        .await
}

async fn require_pool(objects: &Objects, pool: &str) -> Result<(), ControlError> {
    objects.require::<Pool>(None, pool).await.map(|_| ())
}

/// Refuses a Deployment that names a managed pool (by the `wharf.io/pool`
/// node selector or annotation) its project holds no grant on.
pub async fn check_pool_grant(
    objects: &Objects,
    deployment: &Deployment,
) -> Result<(), ControlError> {
    let template = &deployment.spec.template;
    let mut annotations: BTreeMap<String, String> = deployment.metadata.annotations.clone();
    annotations.extend(template.metadata.annotations.clone());
    let Some(pool) = named_pool(&template.spec.node_selector, &annotations) else {
        return Ok(());
    };
    if objects.get::<Pool>(None, pool).await?.is_none() {
        // Not a managed pool: a plain node label, open to every project.
        return Ok(());
    }
    let project = deployment.metadata.project.as_deref().unwrap_or_default();
    let grant = PoolGrant::name_for(pool, project);
    if objects.get::<PoolGrant>(None, &grant).await?.is_some() {
        return Ok(());
    }
    Err(ControlError::Forbidden(format!(
        "deployment {}: project {project} may not place pods on pool {pool}: it holds no \
         grant there (a cluster administrator runs `wharf pool grant {pool} {project}`)",
        deployment.metadata.name
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::objects as test_objects;

    fn pool(name: &str) -> Pool {
        let mut pool = Pool::default();
        pool.metadata.name = name.into();
        pool.spec.cluster = "bj".into();
        pool
    }

    fn deployment(project: &str, selector: Option<&str>, annotation: Option<&str>) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = "web".into();
        d.metadata.project = Some(project.into());
        if let Some(pool) = selector {
            d.spec
                .template
                .spec
                .node_selector
                .insert("wharf.io/pool".into(), pool.into());
        }
        if let Some(pool) = annotation {
            d.metadata
                .annotations
                .insert("wharf.io/pool".into(), pool.into());
        }
        d
    }

    #[tokio::test]
    async fn grants_need_their_pool_and_do_not_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let objects = test_objects(&dir);
        let missing = create_pool_grant(&objects, PoolGrant::new("core", "b", None)).await;
        assert!(
            matches!(missing, Err(ControlError::NotFound { .. })),
            "{missing:?}"
        );
        objects.create(pool("core")).await.unwrap();
        let created = create_pool_grant(&objects, PoolGrant::new("core", "b", None))
            .await
            .unwrap();
        assert_eq!(created.metadata.name, "core.b");
        let again = create_pool_grant(&objects, PoolGrant::new("core", "b", None))
            .await
            .unwrap_err();
        assert!(again.to_string().contains("overlaps"), "{again}");
        let quota = wharf_api::GrantQuota {
            pods: Some(2),
            ..Default::default()
        };
        let (applied, created) =
            apply_pool_grant(&objects, PoolGrant::new("core", "b", Some(quota.clone())))
                .await
                .unwrap();
        assert!(!created);
        assert_eq!(applied.spec.quota, Some(quota));
    }

    #[tokio::test]
    async fn a_deployment_naming_a_managed_pool_needs_a_grant() {
        let dir = tempfile::tempdir().unwrap();
        let objects = test_objects(&dir);
        objects.create(pool("core")).await.unwrap();
        let by_selector = deployment("b", Some("core"), None);
        let refused = check_pool_grant(&objects, &by_selector).await.unwrap_err();
        assert!(matches!(refused, ControlError::Forbidden(_)));
        assert!(
            refused
                .to_string()
                .contains("project b may not place pods on pool core"),
            "{refused}"
        );
        let by_annotation = deployment("b", None, Some("core"));
        assert!(check_pool_grant(&objects, &by_annotation).await.is_err());
        check_pool_grant(&objects, &deployment("b", Some("unmanaged"), None))
            .await
            .unwrap();
        check_pool_grant(&objects, &deployment("b", None, None))
            .await
            .unwrap();
        create_pool_grant(&objects, PoolGrant::new("core", "b", None))
            .await
            .unwrap();
        check_pool_grant(&objects, &by_selector).await.unwrap();
        check_pool_grant(&objects, &by_annotation).await.unwrap();
    }
}
