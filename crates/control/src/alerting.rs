//! Alerting objects: rules (applied keeping the status the evaluator
//! wrote), silences and receivers, and their removal with a project. The
//! evaluator and the webhook deliveries are the server's (they need its
//! metrics store and an HTTP client).

use wharf_api::{AlertReceiver, AlertRule, Silence};

use crate::ControlError;
use crate::objects::{Object, Objects, take_applied_metadata};

impl Objects {
    /// Creates a rule, or updates its spec, labels and annotations (keeping
    /// its alerts); `true` if it was created.
    pub async fn apply_alert_rule(
        &self,
        mut rule: AlertRule,
    ) -> Result<(AlertRule, bool), ControlError> {
        rule.validate()?;
        rule.status = Default::default();
        let project = rule.metadata.project.clone();
        let name = rule.metadata.name.clone();
        if self
            .get::<AlertRule>(project.as_deref(), &name)
            .await?
            .is_none()
        {
            match self.create(rule.clone()).await {
                Ok(created) => return Ok((created, true)),
                Err(ControlError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let updated = self
            .modify::<AlertRule>(project.as_deref(), &name, |current| {
                let spec_changed = current.spec != rule.spec;
                if spec_changed {
                    current.spec = rule.spec.clone();
                    current.metadata.generation += 1;
                }
                take_applied_metadata(&mut current.metadata, &rule.metadata) || spec_changed
            })
            .await?;
        Ok((updated, false))
    }

    /// Creates a receiver or replaces its URL and secret (a receiver given
    /// without a secret keeps the one stored); `true` if it was created.
    pub async fn apply_alert_receiver(
        &self,
        receiver: AlertReceiver,
    ) -> Result<(AlertReceiver, bool), ControlError> {
        receiver.validate()?;
        let project = receiver.metadata.project.clone();
        let name = receiver.metadata.name.clone();
        if self
            .get::<AlertReceiver>(project.as_deref(), &name)
            .await?
            .is_none()
        {
            if receiver.spec.secret.is_none() {
                return Err(ControlError::Invalid(wharf_api::ObjectError::Parse(
                    "spec.secret: required: notifications are signed with it".into(),
                )));
            }
            match self.create(receiver.clone()).await {
                Ok(created) => return Ok((created, true)),
                Err(ControlError::Conflict(_)) => {}
                Err(err) => return Err(err),
            }
        }
        let updated = self
            .modify::<AlertReceiver>(project.as_deref(), &name, |current| {
                let before = current.spec.clone();
                current.spec.url = receiver.spec.url.clone();
                if receiver.spec.secret.is_some() {
                    current.spec.secret = receiver.spec.secret.clone();
                }
                take_applied_metadata(&mut current.metadata, &receiver.metadata)
                    || current.spec != before
            })
            .await?;
        Ok((updated, false))
    }

    /// Objects of a kind in one scope: a project's, or (`None`) the
    /// cluster's own, whose keys sit beside the projects' directories.
    pub async fn list_scoped<T: Object>(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<T>, ControlError> {
        let (items, _) = self.list::<T>(project, None).await?;
        Ok(items
            .into_iter()
            .filter(|o| o.metadata().project.as_deref() == project)
            .collect())
    }

    /// Deletes every alert rule, silence and receiver of `project`;
    /// returns how many.
    pub async fn delete_project_alerting(&self, project: &str) -> Result<usize, ControlError> {
        let mut count = self.delete_all::<AlertRule>(project).await?;
        count += self.delete_all::<Silence>(project).await?;
        count += self.delete_all::<AlertReceiver>(project).await?;
        Ok(count)
    }

    async fn delete_all<T: Object>(&self, project: &str) -> Result<usize, ControlError> {
        let mut count = 0;
        for object in self.list_scoped::<T>(Some(project)).await? {
            match self
                .delete::<T>(Some(project), &object.metadata().name, None)
                .await
            {
                Ok(_) => count += 1,
                Err(ControlError::NotFound { .. }) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_objects::objects;
    use wharf_api::ObjectMeta;

    fn rule(project: Option<&str>, threshold: f64) -> AlertRule {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "cpu-high", "project": project},
            "spec": {"metric": "cpu.busy", "op": ">", "threshold": threshold}
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn rules_keep_their_status_and_scopes_stay_apart() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let (_, new) = objects
            .apply_alert_rule(rule(Some("shop"), 90.0))
            .await
            .unwrap();
        assert!(new);
        objects.apply_alert_rule(rule(None, 95.0)).await.unwrap();
        objects
            .modify::<AlertRule>(Some("shop"), "cpu-high", |r| {
                r.status.evaluated_at = 7;
                true
            })
            .await
            .unwrap();
        let (updated, new) = objects
            .apply_alert_rule(rule(Some("shop"), 80.0))
            .await
            .unwrap();
        assert!(!new);
        assert_eq!(updated.spec.threshold, 80.0);
        assert_eq!(updated.status.evaluated_at, 7, "the status stays");
        assert_eq!(updated.metadata.generation, 2);
        let cluster = objects.list_scoped::<AlertRule>(None).await.unwrap();
        assert_eq!(cluster.len(), 1);
        assert_eq!(cluster[0].spec.threshold, 95.0);
        let shop = objects
            .list_scoped::<AlertRule>(Some("shop"))
            .await
            .unwrap();
        assert_eq!(shop.len(), 1);
        assert_eq!(objects.delete_project_alerting("shop").await.unwrap(), 1);
        assert_eq!(
            objects.list_scoped::<AlertRule>(None).await.unwrap().len(),
            1
        );
    }

    #[tokio::test]
    async fn a_receiver_needs_a_secret_first_and_keeps_it_when_none_is_given() {
        let dir = tempfile::tempdir().unwrap();
        let objects = objects(&dir);
        let mut receiver = AlertReceiver {
            metadata: ObjectMeta {
                name: "ops".into(),
                project: Some("shop".into()),
                ..ObjectMeta::default()
            },
            spec: wharf_api::ReceiverSpec {
                url: "http://127.0.0.1:9/hook".into(),
                secret: None,
            },
        };
        assert!(
            objects
                .apply_alert_receiver(receiver.clone())
                .await
                .is_err()
        );
        receiver.spec.secret = Some("sealed".into());
        objects
            .apply_alert_receiver(receiver.clone())
            .await
            .unwrap();
        receiver.spec.secret = None;
        receiver.spec.url = "http://127.0.0.1:10/hook".into();
        let (updated, _) = objects.apply_alert_receiver(receiver).await.unwrap();
        assert_eq!(updated.spec.secret.as_deref(), Some("sealed"));
        assert_eq!(updated.spec.url, "http://127.0.0.1:10/hook");
    }
}
