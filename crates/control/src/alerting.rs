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
        let applied = rule.clone();
        self.create_or_modify(rule, |current: &mut AlertRule| {
            let spec_changed = current.spec != applied.spec;
            if spec_changed {
                current.spec = applied.spec.clone();
                current.metadata.generation += 1;
            }
            take_applied_metadata(&mut current.metadata, &applied.metadata) || spec_changed
        })
        .await
    }

    /// Creates a receiver or replaces its URL and secret (a receiver given
    /// without a secret keeps the one stored); `true` if it was created.
    pub async fn apply_alert_receiver(
        &self,
        receiver: AlertReceiver,
    ) -> Result<(AlertReceiver, bool), ControlError> {
        receiver.validate()?;
        let exists = self
            .get::<AlertReceiver>(
                receiver.metadata.project.as_deref(),
                &receiver.metadata.name,
            )
            .await?
            .is_some();
        if !exists && receiver.spec.secret.is_none() {
            return Err(ControlError::Invalid(wharf_api::ObjectError::Parse(
                "spec.secret: required: notifications are signed with it".into(),
            )));
        }
        let applied = receiver.clone();
        self.create_or_modify(receiver, |current: &mut AlertReceiver| {
            let before = current.spec.clone();
            current.spec.url = applied.spec.url.clone();
            if applied.spec.secret.is_some() {
                current.spec.secret = applied.spec.secret.clone();
            }
            take_applied_metadata(&mut current.metadata, &applied.metadata)
                || current.spec != before
        })
        .await
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
        Ok(self.delete_in_project::<AlertRule>(project).await?
            + self.delete_in_project::<Silence>(project).await?
            + self.delete_in_project::<AlertReceiver>(project).await?)
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
