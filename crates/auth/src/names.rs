//! Grammar of user, project and robot names.

use crate::AuthError;

const MAX_NAME: usize = 64;

/// Lowercase letters, digits and `._-`, starting with a letter or digit.
pub fn check_user_name(name: &str) -> Result<(), AuthError> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes.len() <= MAX_NAME
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "invalid name {name:?}: use 1-{MAX_NAME} lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

/// A single repository path component (so `<project>/<repo>` names work),
/// at most 64 characters.
pub fn check_project_name(name: &str) -> Result<(), AuthError> {
    let valid = name.len() <= MAX_NAME
        && !name.contains('/')
        && name.parse::<wharf_oci::RepositoryName>().is_ok();
    if valid {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "invalid project name {name:?}: use 1-{MAX_NAME} lowercase letters and digits, separated by '.', '_' or '-'"
        )))
    }
}

/// Names no project may take: audit resources of system objects start with
/// them (`user/alice`, `node/n1`, `ippool/web`, `project/shop/...`), and a
/// project's audit view is every resource under `<project>/`, so a project
/// with one of these names would see those events.
pub const RESERVED_PROJECT_NAMES: &[&str] = &["user", "node", "ippool", "project"];

/// Checks a name for a new project: valid, and not reserved.
pub fn check_new_project_name(name: &str) -> Result<(), AuthError> {
    check_project_name(name)?;
    if RESERVED_PROJECT_NAMES.contains(&name) {
        return Err(AuthError::Invalid(format!(
            "project name {name:?} is reserved for system objects"
        )));
    }
    Ok(())
}

/// The full name of robot `short` in `project`: `robot$<project>+<short>`.
pub fn robot_name(project: &str, short: &str) -> Result<String, AuthError> {
    check_project_name(project)?;
    check_user_name(short)?;
    Ok(format!("robot${project}+{short}"))
}

/// Whether a login name is a robot account's.
pub fn is_robot_name(name: &str) -> bool {
    name.starts_with("robot$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_user_name("alice").is_ok());
        assert!(check_user_name("ci-bot.2").is_ok());
        for bad in ["", "Alice", "-x", "a b", "a/b", "robot$x", &"a".repeat(65)] {
            assert!(check_user_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_project_name("team-a").is_ok());
        for bad in ["", "a/b", "..", "A", "a__", &"p".repeat(65)] {
            assert!(check_project_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(robot_name("web", "ci").unwrap(), "robot$web+ci");
        assert!(robot_name("web", "../x").is_err());
        assert!(is_robot_name("robot$web+ci"));
    }
}
