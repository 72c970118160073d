//! The identity service over a real store: accounts, policy, tokens.

use std::sync::Arc;

use wharf_auth::{Action, AuthError, Identity, IdentityConfig, Principal, Role, Scope, TokenKeys};
use wharf_store::{RedbStore, RedbStoreOptions};

fn identity(dir: &tempfile::TempDir) -> Identity {
    let store = Arc::new(
        RedbStore::open(&dir.path().join("state.redb"), RedbStoreOptions::default()).unwrap(),
    );
    Identity::new(
        store,
        TokenKeys::from_secret([1; 32]),
        IdentityConfig::default(),
    )
}

fn user(name: &str) -> Principal {
    Principal::User {
        name: name.into(),
        admin: false,
    }
}

#[tokio::test]
async fn first_start_creates_admin_once() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    let generated = id
        .bootstrap_admin(None)
        .await
        .unwrap()
        .expect("a generated password");
    assert!(generated.len() >= 20);
    assert_eq!(
        id.bootstrap_admin(None).await.unwrap(),
        None,
        "only on the first start"
    );
    let admin = id.authenticate("admin", &generated, None).await.unwrap();
    assert!(admin.is_admin());
    // With a configured password nothing is generated.
    let dir2 = tempfile::tempdir().unwrap();
    let id2 = identity(&dir2);
    assert_eq!(
        id2.bootstrap_admin(Some("configured-pass".into()))
            .await
            .unwrap(),
        None
    );
    id2.authenticate("admin", "configured-pass", None)
        .await
        .unwrap();
    // The last administrator cannot be deleted.
    assert!(matches!(
        id2.delete_user("admin").await,
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn roles_decide_actions_and_visibility() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    id.create_user("owner", "owner-password", false)
        .await
        .unwrap();
    id.create_user("reader", "reader-password", false)
        .await
        .unwrap();
    id.create_user("stranger", "stranger-password", false)
        .await
        .unwrap();
    assert!(matches!(
        id.create_user("owner", "other-password", false).await,
        Err(AuthError::Conflict(_))
    ));
    // A project named like a kind of system object would see its audit events.
    for reserved in ["user", "node", "ippool", "project"] {
        assert!(matches!(
            id.create_project(&user("owner"), reserved, false, None)
                .await,
            Err(AuthError::Invalid(_))
        ));
    }
    id.create_project(&user("owner"), "private", false, None)
        .await
        .unwrap();
    id.create_project(&user("owner"), "open", true, Some(10))
        .await
        .unwrap();
    id.set_member("private", "reader", Role::Guest)
        .await
        .unwrap();

    let actions = |who: &'static str, project: &'static str| {
        let id = &id;
        async move { id.actions_on(&user(who), project).await.unwrap() }
    };
    assert!(actions("owner", "private").await.contains(Action::Admin));
    assert!(actions("reader", "private").await.contains(Action::Pull));
    assert!(!actions("reader", "private").await.contains(Action::Push));
    assert!(actions("stranger", "private").await.is_empty());
    assert!(
        actions("stranger", "open").await.contains(Action::Pull),
        "public projects are readable"
    );
    assert!(actions("stranger", "missing").await.is_empty());
    let names = |projects: Vec<wharf_auth::Project>| {
        projects.into_iter().map(|p| p.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(id.list_projects(&user("stranger")).await.unwrap()),
        vec!["open"]
    );
    assert_eq!(
        names(id.list_projects(&user("reader")).await.unwrap()),
        vec!["open", "private"]
    );
    assert_eq!(id.project_quota("open").await.unwrap(), Some(10));
    // Deleting a user removes their memberships.
    id.delete_user("reader").await.unwrap();
    assert_eq!(id.list_members("private").await.unwrap().len(), 1);
}

#[tokio::test]
async fn scopes_parse_like_distribution() {
    let scope = Scope::parse("repository:team/app:pull,push").unwrap();
    assert!(
        matches!(scope, Scope::Repository { ref name, actions } if name.as_str() == "team/app" && actions.contains(Action::Push))
    );
    assert!(matches!(
        Scope::parse("registry:catalog:*"),
        Ok(Scope::Catalog)
    ));
    // Unknown actions are ignored, unknown types and bad names refused.
    assert!(matches!(
        Scope::parse("repository:a/b:pull,fly"),
        Ok(Scope::Repository { .. })
    ));
    for bad in [
        "repository:a/b",
        "nonsense",
        "registry:other:*",
        "repository:../x:pull",
        "repository:A:pull",
    ] {
        assert!(Scope::parse(bad).is_err(), "{bad}");
    }
}

#[tokio::test]
async fn wrong_passwords_are_throttled_and_unknown_users_look_alike() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    id.create_user("alice", "alice-password", false)
        .await
        .unwrap();
    let unknown = id
        .authenticate("nobody", "whatever", None)
        .await
        .unwrap_err();
    let wrong = id
        .authenticate("alice", "whatever", None)
        .await
        .unwrap_err();
    assert_eq!(
        unknown.to_string(),
        wrong.to_string(),
        "no user enumeration through messages"
    );
    for _ in 0..4 {
        let _ = id.authenticate("alice", "wrong", None).await;
    }
    assert!(matches!(
        id.authenticate("alice", "alice-password", None).await,
        Err(AuthError::RateLimited { .. })
    ));
    assert!(matches!(
        id.authenticate("alice", &"x".repeat(5000), None).await,
        Err(AuthError::RateLimited { .. } | AuthError::Unauthenticated(_))
    ));
}
