//! The identity service over a real store: accounts, policy, tokens.

use std::sync::Arc;

use wharf_auth::{
    Action, Actions, AuthError, Claims, Identity, IdentityConfig, Principal, RobotPermission, Role,
    Scope, SystemPermission, TokenKeys, TokenKind,
};
use wharf_store::{RedbStore, RedbStoreOptions, Store, StoreExt};

const KEY: [u8; 32] = [1; 32];

fn identity(dir: &tempfile::TempDir) -> Identity {
    identity_and_store(dir).0
}

/// The identity service and the store under it, for tests that write
/// records as older versions did.
fn identity_and_store(dir: &tempfile::TempDir) -> (Identity, Arc<RedbStore>) {
    let store = Arc::new(
        RedbStore::open(&dir.path().join("state.redb"), RedbStoreOptions::default()).unwrap(),
    );
    let id = Identity::new(
        store.clone(),
        TokenKeys::from_secret(KEY),
        IdentityConfig::default(),
    );
    (id, store)
}

/// A user as policy sees it; which account (uid) does not matter to policy.
fn user(name: &str) -> Principal {
    Principal::User {
        name: name.into(),
        uid: String::new(),
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

/// Creates an administrator and, as them, `project`; returns the administrator.
async fn admin_with_project(id: &Identity, project: &str) -> Principal {
    id.create_user("admin", "admin-password", true)
        .await
        .unwrap();
    let admin = id
        .authenticate("admin", "admin-password", None)
        .await
        .unwrap();
    id.create_project(&admin, project, false, None)
        .await
        .unwrap();
    admin
}

/// A registry, an API and a refresh token of `principal`.
async fn all_tokens(id: &Identity, principal: &Principal) -> [String; 3] {
    [
        id.issue_registry_token(principal, Vec::new())
            .await
            .unwrap()
            .token,
        id.issue_api_token(principal).await.unwrap().token,
        id.issue_refresh_token(principal).await.unwrap().token,
    ]
}

/// Whether each of `tokens` (from [`all_tokens`]) is accepted, and as whom.
async fn accepted_as(id: &Identity, tokens: &[String; 3]) -> [Option<Principal>; 3] {
    [
        id.verify_registry_token(&tokens[0])
            .await
            .ok()
            .map(|(_, principal)| principal),
        id.verify_api_token(&tokens[1]).await.ok(),
        id.verify_refresh_token(&tokens[2]).await.ok(),
    ]
}

#[tokio::test]
async fn tokens_of_a_deleted_account_stay_dead_when_its_name_is_taken_again() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    let admin = admin_with_project(&id, "p").await;

    // A user: deleted, then created again without any membership.
    id.create_user("carol", "carol-password", false)
        .await
        .unwrap();
    let carol = id
        .authenticate("carol", "carol-password", None)
        .await
        .unwrap();
    let old_tokens = all_tokens(&id, &carol).await;
    let alive = accepted_as(&id, &old_tokens).await;
    assert!(
        alive.iter().all(|p| p.as_ref() == Some(&carol)),
        "{alive:?}"
    );
    id.delete_user("carol").await.unwrap();
    let again = id
        .create_user("carol", "carol-password", false)
        .await
        .unwrap();
    assert_ne!(again.uid, carol.uid(), "a new account, a new uid");
    assert_eq!(accepted_as(&id, &old_tokens).await, [None, None, None]);
    // The new account's own tokens work.
    let new_carol = id
        .authenticate("carol", "carol-password", None)
        .await
        .unwrap();
    assert_eq!(new_carol.uid(), again.uid);
    let new_tokens = all_tokens(&id, &new_carol).await;
    assert!(
        accepted_as(&id, &new_tokens)
            .await
            .iter()
            .all(|p| p.as_ref() == Some(&new_carol))
    );
    // Credentials checked against the old account give no token for the new one.
    assert!(matches!(
        id.issue_api_token(&carol).await,
        Err(AuthError::Unauthenticated(_))
    ));

    // A push robot deleted, then a pull-only robot of the same name.
    let push = vec![RobotPermission {
        project: "p".into(),
        actions: Actions::parse_list("pull,push").unwrap(),
    }];
    let (robot, secret) = id
        .create_robot(&admin, "p", "ci", push, None)
        .await
        .unwrap();
    let pusher = id.authenticate(&robot.name, &secret, None).await.unwrap();
    let old_tokens = all_tokens(&id, &pusher).await;
    id.delete_robot(&robot.name).await.unwrap();
    let pull = vec![RobotPermission {
        project: "p".into(),
        actions: Action::Pull.into(),
    }];
    let (again, _) = id
        .create_robot(&admin, "p", "ci", pull, None)
        .await
        .unwrap();
    assert_eq!(again.name, robot.name);
    assert_ne!(again.uid, robot.uid);
    assert_eq!(accepted_as(&id, &old_tokens).await, [None, None, None]);
}

/// API token claims for `sub` as versions without uids issued them, at
/// `iat` (unix seconds), valid for a long time.
fn api_claims_without_uid(sub: &str, iat: u64) -> Claims {
    Claims {
        iss: "wharf".into(),
        sub: sub.into(),
        aud: "wharf-api".into(),
        exp: iat + 10_000_000_000,
        nbf: iat,
        iat,
        jti: format!("t{iat}"),
        access: Vec::new(),
        kind: TokenKind::Api,
        epoch: 0,
        uid: String::new(),
    }
}

#[tokio::test]
async fn accounts_stored_before_uids_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let (id, store) = identity_and_store(&dir);
    // A user record as versions without uids wrote it, created at t=100 s.
    id.create_user("dave", "dave-password", false)
        .await
        .unwrap();
    let key = "/auth/users/dave";
    let mut record: serde_json::Value =
        serde_json::from_slice(&store.get(key).await.unwrap().unwrap().value).unwrap();
    record.as_object_mut().unwrap().remove("uid");
    record["created_at"] = 100_000.into();
    store
        .put(key, serde_json::to_vec(&record).unwrap())
        .await
        .unwrap();

    let dave = id
        .authenticate("dave", "dave-password", None)
        .await
        .unwrap();
    assert_eq!(
        dave.uid(),
        "legacy-100000",
        "derived from the creation time"
    );
    assert_eq!(id.user("dave").await.unwrap().uid, "legacy-100000");
    let tokens = all_tokens(&id, &dave).await;
    assert!(
        accepted_as(&id, &tokens)
            .await
            .iter()
            .all(|p| p.as_ref() == Some(&dave))
    );

    // Tokens issued before the upgrade carry no uid: taken if issued after
    // the account was created, refused if older (a deleted namesake's).
    let keys = TokenKeys::from_secret(KEY);
    let old_token = |iat: u64| keys.sign(&api_claims_without_uid("dave", iat));
    assert_eq!(
        id.verify_api_token(&old_token(100)).await.unwrap(),
        dave,
        "issued in the second the account was created"
    );
    assert!(id.verify_api_token(&old_token(99)).await.is_err());
    // A token without uid is never taken for an account that has one.
    id.delete_user("dave").await.unwrap();
    id.create_user("dave", "dave-password", false)
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(id.verify_api_token(&old_token(now + 5)).await.is_err());
}

#[tokio::test]
async fn disabling_a_robot_cuts_off_its_tokens_until_it_logs_in_again() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    let admin = admin_with_project(&id, "p").await;
    let permissions = vec![RobotPermission {
        project: "p".into(),
        actions: Action::Pull.into(),
    }];
    let (robot, secret) = id
        .create_robot(&admin, "p", "ci", permissions, None)
        .await
        .unwrap();
    let principal = id.authenticate(&robot.name, &secret, None).await.unwrap();
    let tokens = all_tokens(&id, &principal).await;
    // Used once, so the subject is cached: disabling must not wait for it.
    assert!(accepted_as(&id, &tokens).await.iter().all(Option::is_some));

    let disabled = id.set_robot_disabled(&robot.name, true).await.unwrap();
    assert!(disabled.disabled);
    assert!(id.robot(&robot.name).await.unwrap().disabled);
    assert_eq!(accepted_as(&id, &tokens).await, [None, None, None]);
    assert!(matches!(
        id.authenticate(&robot.name, &secret, None).await,
        Err(AuthError::Unauthenticated(_))
    ));

    id.set_robot_disabled(&robot.name, false).await.unwrap();
    assert_eq!(
        accepted_as(&id, &tokens).await,
        [None, None, None],
        "tokens from before the disabling stay dead"
    );
    let principal = id.authenticate(&robot.name, &secret, None).await.unwrap();
    let fresh = all_tokens(&id, &principal).await;
    assert!(accepted_as(&id, &fresh).await.iter().all(Option::is_some));
    assert!(matches!(
        id.set_robot_disabled("robot$p+nobody", true).await,
        Err(AuthError::NotFound(_))
    ));
}

#[tokio::test]
async fn only_tokens_signed_here_name_their_subject() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    id.create_user("erin", "erin-password", false)
        .await
        .unwrap();
    let erin = id
        .authenticate("erin", "erin-password", None)
        .await
        .unwrap();
    let token = id.issue_api_token(&erin).await.unwrap().token;
    id.delete_user("erin").await.unwrap();
    assert!(id.verify_api_token(&token).await.is_err());
    assert_eq!(id.signed_subject(&token).as_deref(), Some("erin"));
    let foreign = TokenKeys::from_secret([2; 32]).sign(&api_claims_without_uid("admin", 0));
    assert_eq!(id.signed_subject(&foreign), None);
    assert_eq!(id.signed_subject("not a token"), None);
}

#[tokio::test]
async fn a_metrics_robot_reads_metrics_only_with_a_long_lived_revocable_token() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    let admin = admin_with_project(&id, "p").await;
    let (robot, secret) = id
        .create_metrics_robot(&admin, "p", "prometheus", None)
        .await
        .unwrap();
    assert_eq!(robot.system_permissions, [SystemPermission::MetricsRead]);
    assert!(robot.permissions.is_empty());
    let principal = id.authenticate(&robot.name, &secret, None).await.unwrap();
    assert!(principal.may_read_metrics() && principal.only_reads_metrics());
    assert!(admin.may_read_metrics() && !admin.only_reads_metrics());
    // No project actions, not even pull.
    assert!(id.require(&principal, "p", Action::Pull).await.is_err());

    let issued = id.issue_api_token(&principal).await.unwrap();
    assert!(
        issued.expires_in > 365 * 24 * 3600,
        "a scrape credential outlives ordinary API tokens: {}",
        issued.expires_in
    );
    assert_eq!(id.verify_api_token(&issued.token).await.unwrap(), principal);
    id.set_robot_disabled(&robot.name, true).await.unwrap();
    assert!(id.verify_api_token(&issued.token).await.is_err());

    assert_eq!(
        "metrics:read".parse::<SystemPermission>().unwrap(),
        SystemPermission::MetricsRead
    );
    assert!("metrics:write".parse::<SystemPermission>().is_err());
}

#[tokio::test]
async fn a_node_credential_acts_for_its_node_pulls_anything_and_is_revocable() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    let admin = admin_with_project(&id, "p").await;
    let (robot, secret) = id.create_node_robot(&admin, "n1").await.unwrap();
    assert_eq!(robot.name, "robot$node+n1");
    assert_eq!(robot.system_permissions, [SystemPermission::Node]);
    let principal = id.authenticate(&robot.name, &secret, None).await.unwrap();
    assert_eq!(principal.node_agent(), Some("n1"));
    assert!(!principal.is_admin() && !principal.may_read_metrics());
    // No project actions through the API...
    assert!(id.require(&principal, "p", Action::Pull).await.is_err());
    // ...but registry tokens pull the images of the pods it runs.
    let scope = Scope::parse("repository:p/app:pull,push").unwrap();
    let access = id.grant(&principal, &[scope]).await.unwrap();
    assert_eq!(access[0].actions, ["pull"]);

    let again = id.create_node_robot(&admin, "n1").await.unwrap_err();
    assert!(again.to_string().contains("decommission"), "{again}");
    // "node" is not a permission anyone may ask for.
    assert!("node".parse::<SystemPermission>().is_err());

    let issued = id.issue_api_token(&principal).await.unwrap();
    id.delete_robot(&robot.name).await.unwrap();
    assert!(id.verify_api_token(&issued.token).await.is_err());
    assert!(id.authenticate(&robot.name, &secret, None).await.is_err());
    // Revoked, the node may join again.
    id.create_node_robot(&admin, "n1").await.unwrap();
}

#[tokio::test]
async fn a_join_token_is_redeemed_once_for_a_node_credential() {
    let dir = tempfile::tempdir().unwrap();
    let id = Arc::new(identity(&dir));
    let admin = admin_with_project(&id, "p").await;
    let hour = std::time::Duration::from_secs(3600);
    let (shown, token) = id
        .create_join_token(admin.name(), "web", hour)
        .await
        .unwrap();
    assert_eq!(shown.pool, "web");
    assert!(token.len() > 40, "256 random bits: {token}");
    let stored = dir.path().join("state.redb");
    let raw = std::fs::read(&stored).unwrap();
    assert!(
        !raw.windows(token.len()).any(|w| w == token.as_bytes()),
        "only the token's hash is stored"
    );

    assert_eq!(id.check_join_token(&token).await.unwrap().pool, "web");
    // Two machines race with one token: exactly one wins.
    let (a, b) = tokio::join!(
        id.redeem_join_token(&token, "n1"),
        id.redeem_join_token(&token, "n2")
    );
    let (won, lost) = match (a, b) {
        (Ok(won), Err(lost)) | (Err(lost), Ok(won)) => (won, lost),
        other => panic!("exactly one redemption wins: {other:?}"),
    };
    assert_eq!(won.pool, "web");
    assert!(lost.to_string().contains("already used"), "{lost}");
    let node = won.robot.name.strip_prefix("robot$node+").unwrap();
    let principal = id
        .authenticate(&won.robot.name, &won.secret, None)
        .await
        .unwrap();
    assert_eq!(principal.node_agent(), Some(node));
    // The credential is bound to the token's pool; a loser is bound to none.
    assert_eq!(id.joined_pool(node).await.unwrap().as_deref(), Some("web"));
    let other = if node == "n1" { "n2" } else { "n1" };
    assert_eq!(id.joined_pool(other).await.unwrap(), None);

    assert!(id.check_join_token(&token).await.is_err(), "used");
    let again = id.redeem_join_token(&token, "n3").await.unwrap_err();
    assert!(
        again.to_string().contains("already used (by node"),
        "{again}"
    );
    let unknown = id.redeem_join_token("wjt_nope", "n3").await.unwrap_err();
    assert!(unknown.to_string().contains("not recognised"), "{unknown}");

    let short = std::time::Duration::from_millis(1);
    let (_, expiring) = id
        .create_join_token(admin.name(), "web", short)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let expired = id.redeem_join_token(&expiring, "n4").await.unwrap_err();
    assert!(expired.to_string().contains("expired"), "{expired}");
    let zero = std::time::Duration::ZERO;
    assert!(
        id.create_join_token(admin.name(), "web", zero)
            .await
            .is_err()
    );
    let forever = std::time::Duration::from_secs(u64::MAX);
    let refused = id.create_join_token(admin.name(), "web", forever).await;
    assert!(refused.unwrap_err().to_string().contains("at most 30 days"));

    // A node that still has a credential cannot join again, and the token
    // stays unused for another machine.
    let (_, second) = id
        .create_join_token(admin.name(), "web", hour)
        .await
        .unwrap();
    let taken = id.redeem_join_token(&second, node).await.unwrap_err();
    assert!(taken.to_string().contains("decommission"), "{taken}");
    id.redeem_join_token(&second, "n5").await.unwrap();
}

#[tokio::test]
async fn join_tokens_are_forgotten_a_day_after_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let id = Arc::new(identity(&dir));
    let admin = admin_with_project(&id, "p").await;
    let hour = std::time::Duration::from_secs(3600);
    let (used, token) = id
        .create_join_token(admin.name(), "web", hour)
        .await
        .unwrap();
    id.redeem_join_token(&token, "n1").await.unwrap();
    let (_, fresh) = id
        .create_join_token(admin.name(), "web", hour)
        .await
        .unwrap();
    let day = 86_400_000;
    // Within a day of expiring, a late attempt still hears why.
    assert_eq!(
        id.prune_join_tokens(used.expires_at + day - 1)
            .await
            .unwrap(),
        0
    );
    let late = id.redeem_join_token(&token, "n2").await.unwrap_err();
    assert!(late.to_string().contains("already used"), "{late}");
    // A day later both records go, used or not.
    assert_eq!(
        id.prune_join_tokens(used.expires_at + 2 * day)
            .await
            .unwrap(),
        2
    );
    for token in [&token, &fresh] {
        let gone = id.check_join_token(token).await.unwrap_err();
        assert!(gone.to_string().contains("not recognised"), "{gone}");
    }
}

#[tokio::test]
async fn a_commit_grant_lets_one_node_push_to_exactly_one_repository_until_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let id = identity(&dir);
    let admin = admin_with_project(&id, "p").await;
    let (n1, secret1) = id.create_node_robot(&admin, "n1").await.unwrap();
    let (n2, secret2) = id.create_node_robot(&admin, "n2").await.unwrap();
    let n1 = id.authenticate(&n1.name, &secret1, None).await.unwrap();
    let n2 = id.authenticate(&n2.name, &secret2, None).await.unwrap();
    let actions = |principal: Principal, repository: &str| {
        let id = &id;
        let scope = Scope::parse(&format!("repository:{repository}:pull,push")).unwrap();
        async move {
            id.grant(&principal, &[scope]).await.unwrap()[0]
                .actions
                .clone()
        }
    };
    // Without a grant, a node pushes nowhere.
    assert_eq!(actions(n1.clone(), "p/snap").await, ["pull"]);

    let repository: wharf_oci::RepositoryName = "p/snap".parse().unwrap();
    let grant = id
        .grant_commit_push(
            "n1",
            &repository,
            "alice",
            std::time::Duration::from_secs(900),
        )
        .await
        .unwrap();
    assert_eq!(actions(n1.clone(), "p/snap").await, ["pull", "push"]);
    // Exactly that repository: not another, not one below it, not the
    // project's others, and not for another node.
    for other in ["p/other", "p/snap/deeper", "p/sna", "q/snap"] {
        assert_eq!(actions(n1.clone(), other).await, ["pull"], "{other}");
    }
    assert_eq!(actions(n2.clone(), "p/snap").await, ["pull"]);
    // Still no project action through the API.
    assert!(id.require(&n1, "p", Action::Push).await.is_err());

    // Two commits to one repository: ending one leaves the other's.
    let second = id
        .grant_commit_push(
            "n1",
            &repository,
            "bob",
            std::time::Duration::from_secs(900),
        )
        .await
        .unwrap();
    assert_ne!(grant.id, second.id);
    id.revoke_commit_push("n1", &repository, &grant.id)
        .await
        .unwrap();
    assert_eq!(actions(n1.clone(), "p/snap").await, ["pull", "push"]);
    id.revoke_commit_push("n1", &repository, &second.id)
        .await
        .unwrap();
    assert_eq!(actions(n1.clone(), "p/snap").await, ["pull"]);
    assert!(
        id.revoke_commit_push("n1", &repository, "../x")
            .await
            .is_err()
    );

    // A grant expires by itself.
    id.grant_commit_push(
        "n1",
        &repository,
        "alice",
        std::time::Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert_eq!(actions(n1.clone(), "p/snap").await, ["pull", "push"]);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(actions(n1.clone(), "p/snap").await, ["pull"]);
}
