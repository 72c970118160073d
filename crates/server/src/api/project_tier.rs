//! A project's default tier: a Deployment of the project that names no
//! tier itself (the `wharf.io/tier` annotation on it or its template) is
//! applied with the project's, so its pods land where the project's
//! workloads belong. The Deployment's own annotation wins.

use wharf_api::{ANNOTATION_TIER, Deployment, TierRequest};
use wharf_auth::AuthError;

use super::ApiErrorReply;
use crate::AppState;

/// The default tier a `PATCH` asks for, checked: `Some(None)` removes it
/// (an empty string), a bad tier is refused naming the field.
pub(crate) fn requested(tier: Option<String>) -> Result<Option<Option<String>>, ApiErrorReply> {
    match tier {
        None => Ok(None),
        Some(tier) if tier.is_empty() => Ok(Some(None)),
        Some(tier) => {
            TierRequest::parse(&tier, "default_tier")?;
            Ok(Some(Some(tier)))
        }
    }
}

/// Gives `deployment` its project's default tier unless it names one.
pub(crate) async fn apply_default(
    state: &AppState,
    project: &str,
    deployment: &mut Deployment,
) -> Result<(), AuthError> {
    if names_tier(deployment) {
        return Ok(());
    }
    if let Some(tier) = state.identity.project(project).await?.default_tier {
        deployment
            .metadata
            .annotations
            .insert(ANNOTATION_TIER.to_string(), tier);
    }
    Ok(())
}

fn names_tier(deployment: &Deployment) -> bool {
    deployment
        .metadata
        .annotations
        .contains_key(ANNOTATION_TIER)
        || deployment
            .spec
            .template
            .metadata
            .annotations
            .contains_key(ANNOTATION_TIER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_tier_is_refused_naming_the_field() {
        let err = requested(Some("gold".into())).unwrap_err();
        assert!(
            err.message
                .starts_with("default_tier: \"gold\" is not a tier"),
            "{}",
            err.message
        );
        assert_eq!(requested(Some(String::new())).unwrap(), Some(None));
        assert_eq!(
            requested(Some("core;preferred".into())).unwrap(),
            Some(Some("core;preferred".into()))
        );
        assert_eq!(requested(None).unwrap(), None);
    }

    #[test]
    fn a_tier_on_the_template_counts_as_named() {
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\n\
                    spec:\n  selector: {matchLabels: {app: web}}\n  template:\n    \
                    metadata: {labels: {app: web}, annotations: {wharf.io/tier: batch}}\n    \
                    spec: {containers: [{name: web, image: web:1}]}\n";
        let wharf_api::Manifest::Deployment(mut deployment) =
            wharf_api::parse_manifests(yaml).unwrap().remove(0).manifest
        else {
            panic!("a deployment");
        };
        assert!(names_tier(&deployment));
        deployment.spec.template.metadata.annotations.clear();
        assert!(!names_tier(&deployment));
    }
}
