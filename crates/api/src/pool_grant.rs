//! Checks of a [`PoolGrant`]: its name is `POOL.PROJECT`, so one pair has
//! one grant, and its quota must parse.

use crate::inventory::{GrantQuota, PoolGrant, PoolGrantSpec};
use crate::meta::{ObjectMeta, check_name};
use crate::{ObjectError, parse_cpu_millis, parse_memory_bytes};

impl PoolGrant {
    /// A grant of `pool` to `project`, named as it must be.
    ///
    /// ```
    /// use wharf_api::PoolGrant;
    /// let grant = PoolGrant::new("core", "shop", None);
    /// assert_eq!(grant.metadata.name, "core.shop");
    /// grant.validate().unwrap();
    /// ```
    pub fn new(pool: &str, project: &str, quota: Option<GrantQuota>) -> PoolGrant {
        PoolGrant {
            metadata: ObjectMeta {
                name: PoolGrant::name_for(pool, project),
                ..ObjectMeta::default()
            },
            spec: PoolGrantSpec {
                pool: pool.to_string(),
                project: project.to_string(),
                quota,
            },
            ..PoolGrant::default()
        }
    }

    /// The name of the grant of `pool` to `project`.
    pub fn name_for(pool: &str, project: &str) -> String {
        format!("{pool}.{project}")
    }

    /// Checks the names and the quota; a grant named other than
    /// `POOL.PROJECT` is given that name (a manifest may leave it out).
    pub fn normalize_and_validate(&mut self) -> Result<(), ObjectError> {
        if self.metadata.name.is_empty() {
            self.metadata.name = PoolGrant::name_for(&self.spec.pool, &self.spec.project);
        }
        self.validate()
    }

    /// Checks the names and the quota.
    pub fn validate(&self) -> Result<(), ObjectError> {
        check_name("spec.pool", &self.spec.pool)?;
        check_name("spec.project", &self.spec.project)?;
        let expected = PoolGrant::name_for(&self.spec.pool, &self.spec.project);
        if self.metadata.name != expected {
            return Err(ObjectError::invalid(
                "metadata.name",
                format!(
                    "a grant of pool {} to project {} is named {expected}",
                    self.spec.pool, self.spec.project
                ),
            ));
        }
        let Some(quota) = &self.spec.quota else {
            return Ok(());
        };
        if let Some(cpu) = &quota.cpu {
            parse_cpu_millis("spec.quota.cpu", cpu)?;
        }
        if let Some(memory) = &quota.memory {
            parse_memory_bytes("spec.quota.memory", memory)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_quotas_are_checked() {
        let quota = GrantQuota {
            cpu: Some("4".into()),
            memory: Some("8Gi".into()),
            pods: Some(10),
        };
        PoolGrant::new("core", "b", Some(quota.clone()))
            .validate()
            .unwrap();
        let mut renamed = PoolGrant::new("core", "b", None);
        renamed.metadata.name = "core.a".into();
        let err = renamed.validate().unwrap_err().to_string();
        assert!(err.contains("is named core.b"), "{err}");
        let mut unnamed = PoolGrant::new("core", "b", None);
        unnamed.metadata.name.clear();
        unnamed.normalize_and_validate().unwrap();
        assert_eq!(unnamed.metadata.name, "core.b");
        let bad = GrantQuota {
            cpu: Some("lots".into()),
            ..quota
        };
        let err = PoolGrant::new("core", "b", Some(bad))
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("spec.quota.cpu"), "{err}");
        assert!(PoolGrant::new("Core!", "b", None).validate().is_err());
    }
}
