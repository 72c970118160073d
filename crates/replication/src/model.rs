//! The replication objects (endpoints, policies, jobs, tasks) are
//! `wharf_api::replication`'s wire types, shared with the CLI; here is what
//! checking them needs beyond serde: names, patterns and schedules.

pub use wharf_api::replication::*;
use wharf_oci::RepositoryName;

use crate::ReplicationError;
use wharf_api::Glob;

/// Checks everything about a policy that can be checked without other
/// objects.
pub(crate) fn validate(policy: &Policy) -> Result<(), ReplicationError> {
    check_name("policy", &policy.name)?;
    check_name("endpoint", &policy.endpoint)?;
    let invalid = |why: String| ReplicationError::Invalid(format!("policy {}: {why}", policy.name));
    if let Some(repo) = &policy.filters.repository {
        Glob::parse(repo).map_err(invalid)?;
    }
    if let Some(tag) = &policy.filters.tag {
        Glob::parse(tag).map_err(invalid)?;
    }
    if let Some(ns) = &policy.dest_namespace
        && (ns.contains('/') || format!("{ns}/x").parse::<RepositoryName>().is_err())
    {
        return Err(invalid(format!(
            "destination namespace {ns:?} is not a project name"
        )));
    }
    if let Some(cron) = &policy.triggers.cron {
        crate::schedule::Schedule::parse(cron).map_err(invalid)?;
    }
    if policy.triggers.on_event && policy.direction == Direction::Pull {
        return Err(invalid(
            "event triggers need direction push (pulls run by cron, manually and in reconcile passes)".into(),
        ));
    }
    if !(1..=64).contains(&policy.concurrency) {
        return Err(invalid(format!(
            "concurrency {} is not within 1..=64",
            policy.concurrency
        )));
    }
    if policy.bandwidth_limit == Some(0) {
        return Err(invalid(
            "a bandwidth limit of 0 would never copy anything".into(),
        ));
    }
    Ok(())
}

/// Names of endpoints and policies: what a URL path segment and a key can
/// hold without escaping.
pub(crate) fn check_name(kind: &str, name: &str) -> Result<(), ReplicationError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ReplicationError::Invalid(format!(
            "{kind} name {name:?} must be 1-63 lowercase letters, digits or '-', not starting with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        serde_json::from_str(r#"{"name":"to-b","endpoint":"idc-b"}"#).unwrap()
    }

    #[test]
    fn defaults_override_and_enable() {
        let p = policy();
        assert!(p.override_existing && p.enabled);
        assert_eq!(p.concurrency, 2);
        assert_eq!(p.direction, Direction::Push);
        validate(&p).unwrap();
    }

    #[test]
    fn validation_names_the_problem() {
        let mut p = policy();
        p.dest_namespace = Some("a/b".into());
        assert!(validate(&p).unwrap_err().to_string().contains("namespace"));
        let mut p = policy();
        p.direction = Direction::Pull;
        p.triggers.on_event = true;
        assert!(
            validate(&p)
                .unwrap_err()
                .to_string()
                .contains("direction push")
        );
        let mut p = policy();
        p.triggers.cron = Some("every day".into());
        assert!(validate(&p).is_err());
        let mut p = policy();
        p.name = "../x".into();
        assert!(validate(&p).is_err());
        let mut p = policy();
        p.bandwidth_limit = Some(0);
        assert!(validate(&p).is_err());
        assert!(
            serde_json::from_str::<Policy>(r#"{"name":"a","endpoint":"b","bogus":1}"#).is_err()
        );
    }
}
