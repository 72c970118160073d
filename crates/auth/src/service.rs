//! The identity service: accounts, projects, memberships, robots, logins,
//! token issue and verification, and the access policy joining them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde::de::DeserializeOwned;
use wharf_oci::RepositoryName;
use wharf_store::{Store, StoreExt, Txn};

use crate::AuthError;
use crate::model::{
    Action, Actions, Member, Principal, Project, Robot, RobotPermission, RobotRecord, Role,
    Settings, User, UserRecord, effective_uid, new_uid,
};
use crate::names::{check_new_project_name, check_user_name, is_robot_name, robot_name};
use crate::password;
use crate::ratelimit::{LoginLimiter, LoginLimits};
use crate::token::{AccessEntry, Claims, TokenKeys, TokenKind};

const USERS: &str = "/auth/users/";
const PROJECTS: &str = "/auth/projects/";
const MEMBERS: &str = "/auth/members/";
const ROBOTS: &str = "/auth/robots/";
const SETTINGS: &str = "/auth/settings";
const ISSUER: &str = "wharf";
/// Audience of API access tokens.
pub const API_AUDIENCE: &str = "wharf-api";
const REFRESH_AUDIENCE: &str = "wharf-refresh";
/// Clock skew tolerated on `nbf`.
const LEEWAY_SECS: u64 = 30;
/// Longest user name or password looked at; longer credentials are refused unread.
const MAX_CREDENTIAL: usize = 1024;
const TOKEN_CACHE_ENTRIES: usize = 50_000;
const SUBJECT_CACHE_TTL: Duration = Duration::from_secs(1);

/// Lifetimes and names.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// The registry's service name (the `service` of challenges and tokens).
    pub service: String,
    /// Lifetime of registry tokens.
    pub registry_token_ttl: Duration,
    /// Lifetime of API access tokens.
    pub api_token_ttl: Duration,
    /// Lifetime of refresh tokens.
    pub refresh_token_ttl: Duration,
    /// Failed-login throttling.
    pub login_limits: LoginLimits,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            service: "wharf".into(),
            registry_token_ttl: Duration::from_secs(5 * 60),
            api_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(7 * 24 * 3600),
            login_limits: LoginLimits::default(),
        }
    }
}

/// A signed token and its lifetime.
#[derive(Clone, Debug, Serialize)]
pub struct IssuedToken {
    /// The JWT.
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
    /// Issue time, unix seconds.
    pub issued_at: u64,
}

/// A `scope` of the Docker token protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `repository:<name>:<actions>`
    Repository {
        /// The repository.
        name: RepositoryName,
        /// Actions asked for.
        actions: Actions,
    },
    /// `registry:catalog:*`
    Catalog,
}

impl Scope {
    /// Parses one scope. Unknown actions are ignored, as distribution does;
    /// unknown types and malformed names are errors.
    pub fn parse(text: &str) -> Result<Scope, AuthError> {
        let invalid = || AuthError::Invalid(format!("invalid scope {text:?}"));
        let (kind, rest) = text.split_once(':').ok_or_else(invalid)?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(invalid)?;
        match kind {
            "repository" => Ok(Scope::Repository {
                name: name.parse().map_err(|_| invalid())?,
                actions: actions
                    .split(',')
                    .map(|a| match a {
                        "*" => Actions::all(),
                        other => other
                            .parse::<Action>()
                            .map(Actions::from)
                            .unwrap_or_default(),
                    })
                    .fold(Actions::NONE, Actions::union),
            }),
            "registry" if name == "catalog" => Ok(Scope::Catalog),
            _ => Err(invalid()),
        }
    }
}

/// Accounts, projects and access. Cheap to share behind an `Arc`.
pub struct Identity {
    store: Arc<dyn Store>,
    keys: TokenKeys,
    config: IdentityConfig,
    limiter: LoginLimiter,
    // Signature checks are the expensive part of a request's authorization;
    // a token verified once is trusted until it expires (revocation is still
    // checked on every use, against the subject's epoch).
    verified: Mutex<HashMap<String, Arc<Claims>>>,
    // Whom a token subject is right now, for a moment: reading the account on
    // every request would put a store read on the registry's hottest path.
    // Local account changes clear it at once; other replicas see them within
    // SUBJECT_CACHE_TTL.
    subjects: Mutex<HashMap<String, (std::time::Instant, Subject)>>,
}

/// What a token's subject is right now: enough to tell whether a token
/// still belongs to it.
#[derive(Clone, Debug)]
struct Subject {
    principal: Principal,
    epoch: u64,
    /// Whether the account record predates uids (its uid is derived).
    legacy: bool,
    /// Creation time, unix seconds.
    created_secs: u64,
}

impl Subject {
    /// Whether `claims` were issued to this very account, in its current
    /// epoch. Tokens from before uids existed carry none; they are taken
    /// only for accounts from that time too, and only if issued no earlier
    /// than the account was created (so never one of a deleted predecessor).
    fn issued(&self, claims: &Claims) -> bool {
        let same_account = if claims.uid.is_empty() {
            self.legacy && claims.iat >= self.created_secs
        } else {
            claims.uid == self.principal.uid()
        };
        same_account && claims.epoch == self.epoch
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn now_secs() -> u64 {
    now_millis() / 1000
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialize")
}

impl Identity {
    /// An identity service over `store`, signing with `keys`.
    pub fn new(store: Arc<dyn Store>, keys: TokenKeys, config: IdentityConfig) -> Identity {
        let limiter = LoginLimiter::new(config.login_limits);
        Identity {
            store,
            keys,
            config,
            limiter,
            verified: Mutex::new(HashMap::new()),
            subjects: Mutex::new(HashMap::new()),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &IdentityConfig {
        &self.config
    }

    async fn read<T: DeserializeOwned>(&self, key: &str) -> Result<Option<(T, u64)>, AuthError> {
        match self.store.get(key).await? {
            None => Ok(None),
            Some(kv) => serde_json::from_slice(&kv.value)
                .map(|value| Some((value, kv.mod_revision)))
                .map_err(|e| AuthError::Internal(format!("corrupt record {key}: {e}"))),
        }
    }

    async fn list<T: DeserializeOwned>(&self, prefix: &str) -> Result<Vec<T>, AuthError> {
        self.store
            .list_all(prefix, 1000)
            .await?
            .into_iter()
            .map(|kv| {
                serde_json::from_slice(&kv.value)
                    .map_err(|e| AuthError::Internal(format!("corrupt record {}: {e}", kv.key)))
            })
            .collect()
    }

    // ----- users -----

    /// Creates the `admin` account on first start. Returns the password
    /// when it was generated (to be shown once), `None` when `admin` exists
    /// or `password` was given.
    pub async fn bootstrap_admin(
        &self,
        password: Option<String>,
    ) -> Result<Option<String>, AuthError> {
        if self.store.get(&format!("{USERS}admin")).await?.is_some() {
            return Ok(None);
        }
        let generated = password.is_none();
        let password = password.unwrap_or_else(|| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 18]>())
        });
        match self.create_user("admin", &password, true).await {
            Ok(_) => Ok(generated.then_some(password)),
            // Another server replica created it first.
            Err(AuthError::Conflict(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a local user.
    pub async fn create_user(
        &self,
        name: &str,
        password: &str,
        admin: bool,
    ) -> Result<User, AuthError> {
        check_user_name(name)?;
        password::check_password(password)?;
        let hash = hash_blocking(password.to_string()).await?;
        let record = UserRecord {
            name: name.to_string(),
            uid: new_uid(),
            password_hash: hash,
            admin,
            disabled: false,
            epoch: 0,
            created_at: now_millis(),
        };
        match self
            .store
            .create(&format!("{USERS}{name}"), encode(&record))
            .await?
        {
            Some(_) => Ok(User::from(&record)),
            None => Err(AuthError::Conflict(format!("user {name}"))),
        }
    }

    /// All users.
    pub async fn list_users(&self) -> Result<Vec<User>, AuthError> {
        Ok(self
            .list::<UserRecord>(USERS)
            .await?
            .iter()
            .map(User::from)
            .collect())
    }

    /// One user.
    pub async fn user(&self, name: &str) -> Result<User, AuthError> {
        let (record, _) = self.user_record(name).await?;
        Ok(User::from(&record))
    }

    async fn user_record(&self, name: &str) -> Result<(UserRecord, u64), AuthError> {
        self.read(&format!("{USERS}{name}"))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("user {name}")))
    }

    /// Changes the account record at `key` (`what` names it in errors) by
    /// compare-and-swap, retrying on races, and forgets cached subjects.
    async fn update_account<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        what: &str,
        change: impl Fn(&mut T),
    ) -> Result<T, AuthError> {
        for _ in 0..16 {
            let (mut record, revision) = self
                .read::<T>(key)
                .await?
                .ok_or_else(|| AuthError::NotFound(what.to_string()))?;
            change(&mut record);
            if self
                .store
                .put_if(key, encode(&record), revision)
                .await?
                .is_some()
            {
                self.accounts_changed();
                return Ok(record);
            }
        }
        Err(AuthError::Internal(format!("{what} keeps changing; retry")))
    }

    async fn update_user(
        &self,
        name: &str,
        change: impl Fn(&mut UserRecord),
    ) -> Result<User, AuthError> {
        let record = self
            .update_account(&format!("{USERS}{name}"), &format!("user {name}"), change)
            .await?;
        Ok(User::from(&record))
    }

    /// Sets a new password; existing tokens stop working.
    pub async fn set_password(&self, name: &str, password: &str) -> Result<(), AuthError> {
        password::check_password(password)?;
        let hash = hash_blocking(password.to_string()).await?;
        self.update_user(name, |record| {
            record.password_hash = hash.clone();
            record.epoch += 1;
        })
        .await
        .map(drop)
    }

    /// Disables or re-enables a user; disabling cuts off their tokens.
    pub async fn set_disabled(&self, name: &str, disabled: bool) -> Result<User, AuthError> {
        self.update_user(name, |record| {
            if record.disabled != disabled {
                record.disabled = disabled;
                record.epoch += 1;
            }
        })
        .await
    }

    /// Deletes a user and their memberships. The last administrator stays.
    pub async fn delete_user(&self, name: &str) -> Result<(), AuthError> {
        let (record, revision) = self.user_record(name).await?;
        if record.admin {
            let admins = self
                .list::<UserRecord>(USERS)
                .await?
                .iter()
                .filter(|u| u.admin && !u.disabled)
                .count();
            if admins <= 1 {
                return Err(AuthError::Invalid(
                    "cannot delete the last administrator".into(),
                ));
            }
        }
        let mut txn = Txn::new()
            .when_revision(format!("{USERS}{name}"), revision)
            .delete(format!("{USERS}{name}"));
        for member in self
            .list::<Member>(MEMBERS)
            .await?
            .into_iter()
            .filter(|m| m.user == name)
        {
            txn = txn.delete(member_key(&member.project, &member.user));
        }
        if self.store.txn(txn).await?.succeeded {
            self.accounts_changed();
            Ok(())
        } else {
            Err(AuthError::Conflict(format!(
                "user {name} changed meanwhile; retry"
            )))
        }
    }

    // ----- logins -----

    /// Checks a user's password or a robot's secret. Failures are throttled
    /// per account and per `source` address.
    pub async fn authenticate(
        &self,
        name: &str,
        secret: &str,
        source: Option<IpAddr>,
    ) -> Result<Principal, AuthError> {
        let refused = || AuthError::Unauthenticated("invalid username or password".into());
        if name.is_empty() || name.len() > MAX_CREDENTIAL || secret.len() > MAX_CREDENTIAL {
            return Err(refused());
        }
        if let Some(wait) = self.limiter.check(name, source) {
            return Err(AuthError::RateLimited {
                retry_after_secs: wait.as_secs().max(1),
            });
        }
        let outcome = if is_robot_name(name) {
            self.authenticate_robot(name, secret).await
        } else {
            self.authenticate_user(name, secret).await
        };
        match &outcome {
            Ok(_) => self.limiter.succeeded(name),
            Err(AuthError::Unauthenticated(_)) => self.limiter.failed(name, source),
            Err(_) => {}
        }
        outcome
    }

    async fn authenticate_user(&self, name: &str, password: &str) -> Result<Principal, AuthError> {
        let record = self
            .read::<UserRecord>(&format!("{USERS}{name}"))
            .await?
            .map(|(r, _)| r);
        // Unknown names cost the same time as wrong passwords.
        let hash = record.as_ref().map_or_else(
            || password::decoy_hash().to_string(),
            |r| r.password_hash.clone(),
        );
        let matches = verify_blocking(password.to_string(), hash).await?;
        match record {
            Some(record) if matches && !record.disabled => Ok(user_principal(&record)),
            Some(record) if matches && record.disabled => Err(AuthError::Unauthenticated(format!(
                "account {} is disabled",
                record.name
            ))),
            _ => Err(AuthError::Unauthenticated(
                "invalid username or password".into(),
            )),
        }
    }

    async fn authenticate_robot(&self, name: &str, secret: &str) -> Result<Principal, AuthError> {
        let record = self
            .read::<RobotRecord>(&format!("{ROBOTS}{name}"))
            .await?
            .map(|(r, _)| r);
        let hash = record.as_ref().map_or_else(
            || password::decoy_hash().to_string(),
            |r| r.secret_hash.clone(),
        );
        let matches = verify_blocking(secret.to_string(), hash).await?;
        match record {
            Some(record) if matches => robot_principal(&record),
            _ => Err(AuthError::Unauthenticated(
                "invalid username or password".into(),
            )),
        }
    }

    // ----- tokens -----

    fn claims(
        &self,
        principal: &Principal,
        audience: &str,
        kind: TokenKind,
        ttl: Duration,
        epoch: u64,
    ) -> Claims {
        let now = now_secs();
        Claims {
            iss: ISSUER.into(),
            sub: match principal {
                Principal::Anonymous => String::new(),
                other => other.name().to_string(),
            },
            aud: audience.to_string(),
            exp: now + ttl.as_secs(),
            nbf: now,
            iat: now,
            jti: format!("{:032x}", rand::random::<u128>()),
            access: Vec::new(),
            kind,
            epoch,
            uid: principal.uid().to_string(),
        }
    }

    /// The epoch to put in a token for `principal`. Fails when the account
    /// went away, or was replaced by another of the same name, after
    /// `principal` was authenticated: the token would otherwise bind the
    /// new account to credentials checked against the old one.
    async fn epoch_of(&self, principal: &Principal) -> Result<u64, AuthError> {
        let (uid, epoch) = match principal {
            Principal::Anonymous => return Ok(0),
            Principal::User { name, .. } => {
                let (record, _) = self.user_record(name).await?;
                (effective_uid(&record.uid, record.created_at), record.epoch)
            }
            Principal::Robot { name, .. } => {
                let (record, _) = self.robot_record(name).await?;
                (effective_uid(&record.uid, record.created_at), record.epoch)
            }
        };
        if uid != principal.uid() {
            return Err(AuthError::Unauthenticated(format!(
                "account {} was replaced; log in again",
                principal.name()
            )));
        }
        Ok(epoch)
    }

    fn issue(&self, claims: Claims, ttl: Duration) -> IssuedToken {
        IssuedToken {
            issued_at: claims.iat,
            token: self.keys.sign(&claims),
            expires_in: ttl.as_secs(),
        }
    }

    /// A registry token carrying `access`.
    pub async fn issue_registry_token(
        &self,
        principal: &Principal,
        access: Vec<AccessEntry>,
    ) -> Result<IssuedToken, AuthError> {
        let ttl = self.config.registry_token_ttl;
        let mut claims = self.claims(
            principal,
            &self.config.service,
            TokenKind::Registry,
            ttl,
            self.epoch_of(principal).await?,
        );
        claims.access = access;
        Ok(self.issue(claims, ttl))
    }

    /// An API access token.
    pub async fn issue_api_token(&self, principal: &Principal) -> Result<IssuedToken, AuthError> {
        let ttl = self.config.api_token_ttl;
        let claims = self.claims(
            principal,
            API_AUDIENCE,
            TokenKind::Api,
            ttl,
            self.epoch_of(principal).await?,
        );
        Ok(self.issue(claims, ttl))
    }

    /// A refresh token, exchanged later for access tokens without the password.
    pub async fn issue_refresh_token(
        &self,
        principal: &Principal,
    ) -> Result<IssuedToken, AuthError> {
        if matches!(principal, Principal::Anonymous) {
            return Err(AuthError::Unauthenticated(
                "anonymous callers get no refresh token".into(),
            ));
        }
        let ttl = self.config.refresh_token_ttl;
        let claims = self.claims(
            principal,
            REFRESH_AUDIENCE,
            TokenKind::Refresh,
            ttl,
            self.epoch_of(principal).await?,
        );
        Ok(self.issue(claims, ttl))
    }

    /// Verifies a registry token for this service.
    pub async fn verify_registry_token(
        &self,
        token: &str,
    ) -> Result<(Arc<Claims>, Principal), AuthError> {
        self.verify(token, TokenKind::Registry, &self.config.service)
            .await
    }

    /// Verifies an API access token.
    pub async fn verify_api_token(&self, token: &str) -> Result<Principal, AuthError> {
        Ok(self.verify(token, TokenKind::Api, API_AUDIENCE).await?.1)
    }

    /// Verifies a refresh token and returns whom it belongs to.
    pub async fn verify_refresh_token(&self, token: &str) -> Result<Principal, AuthError> {
        Ok(self
            .verify(token, TokenKind::Refresh, REFRESH_AUDIENCE)
            .await?
            .1)
    }

    /// The claims of a token this server signed, whatever they say: the
    /// signature is checked once, then the token is remembered.
    fn signed_claims(&self, token: &str) -> Result<Arc<Claims>, AuthError> {
        let cached = self
            .verified
            .lock()
            .expect("token cache")
            .get(token)
            .cloned();
        if let Some(claims) = cached {
            return Ok(claims);
        }
        let claims = Arc::new(self.keys.verify(token)?);
        let mut cache = self.verified.lock().expect("token cache");
        if cache.len() >= TOKEN_CACHE_ENTRIES {
            let now = now_secs();
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= TOKEN_CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    async fn verify(
        &self,
        token: &str,
        kind: TokenKind,
        audience: &str,
    ) -> Result<(Arc<Claims>, Principal), AuthError> {
        let claims = self.signed_claims(token)?;
        let refuse = |why: &str| Err(AuthError::Unauthenticated(why.to_string()));
        let now = now_secs();
        if claims.kind != kind || claims.iss != ISSUER {
            return refuse("token is not valid here");
        }
        if claims.aud != audience {
            return refuse("token was issued for another service");
        }
        if now >= claims.exp {
            return refuse("token expired");
        }
        if now + LEEWAY_SECS < claims.nbf {
            return refuse("token not yet valid");
        }
        let principal = self.principal_of(&claims).await?;
        Ok((claims, principal))
    }

    /// Resolves a token's subject, so that disabled, deleted, expired or
    /// re-keyed accounts lose their tokens (at once on this server), and a
    /// deleted account's tokens stay dead when its name is taken again.
    async fn principal_of(&self, claims: &Claims) -> Result<Principal, AuthError> {
        let revoked = || AuthError::Unauthenticated("token revoked".into());
        if claims.sub.is_empty() {
            return Ok(Principal::Anonymous);
        }
        let cached = self
            .subjects
            .lock()
            .expect("subject cache")
            .get(&claims.sub)
            .cloned();
        let subject = match cached {
            Some((at, subject)) if at.elapsed() < SUBJECT_CACHE_TTL => subject,
            _ => {
                let subject = self
                    .load_subject(&claims.sub)
                    .await
                    .map_err(|_| revoked())?;
                let entry = (std::time::Instant::now(), subject.clone());
                self.subjects
                    .lock()
                    .expect("subject cache")
                    .insert(claims.sub.clone(), entry);
                subject
            }
        };
        if !subject.issued(claims) {
            return Err(revoked());
        }
        Ok(subject.principal)
    }

    /// The subject as it is now; fails for deleted, disabled or expired
    /// accounts.
    async fn load_subject(&self, name: &str) -> Result<Subject, AuthError> {
        if is_robot_name(name) {
            let (record, _) = self.robot_record(name).await?;
            return Ok(Subject {
                principal: robot_principal(&record)?,
                epoch: record.epoch,
                legacy: record.uid.is_empty(),
                created_secs: record.created_at / 1000,
            });
        }
        let (record, _) = self.user_record(name).await?;
        if record.disabled {
            return Err(AuthError::Unauthenticated(format!(
                "account {name} is disabled"
            )));
        }
        Ok(Subject {
            principal: user_principal(&record),
            epoch: record.epoch,
            legacy: record.uid.is_empty(),
            created_secs: record.created_at / 1000,
        })
    }

    /// The account a token names, if the token is one this server signed,
    /// whether or not it is still valid: refusals of expired and revoked
    /// tokens are audited under it. A forged token names no one.
    pub fn signed_subject(&self, token: &str) -> Option<String> {
        let claims = self.signed_claims(token).ok()?;
        (!claims.sub.is_empty()).then(|| claims.sub.clone())
    }

    /// Forgets cached subjects after an account change on this server.
    fn accounts_changed(&self) {
        self.subjects.lock().expect("subject cache").clear();
    }

    // ----- projects -----

    /// Creates a project; its creator becomes its project admin.
    pub async fn create_project(
        &self,
        creator: &Principal,
        name: &str,
        public: bool,
        quota_bytes: Option<u64>,
    ) -> Result<Project, AuthError> {
        let Principal::User {
            name: creator_name, ..
        } = creator
        else {
            return Err(AuthError::Denied("only users create projects".into()));
        };
        check_new_project_name(name)?;
        let project = Project {
            name: name.to_string(),
            public,
            quota_bytes,
            created_at: now_millis(),
        };
        let member = Member {
            project: name.to_string(),
            user: creator_name.clone(),
            role: Role::ProjectAdmin,
        };
        let key = format!("{PROJECTS}{name}");
        let txn = Txn::new()
            .when_revision(&key, 0)
            .put(&key, encode(&project))
            .put(member_key(name, creator_name), encode(&member));
        if self.store.txn(txn).await?.succeeded {
            Ok(project)
        } else {
            Err(AuthError::Conflict(format!("project {name}")))
        }
    }

    /// One project.
    pub async fn project(&self, name: &str) -> Result<Project, AuthError> {
        Ok(self.project_record(name).await?.0)
    }

    async fn project_record(&self, name: &str) -> Result<(Project, u64), AuthError> {
        self.read(&format!("{PROJECTS}{name}"))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("project {name}")))
    }

    /// The storage quota of a project, if it has one.
    pub async fn project_quota(&self, name: &str) -> Result<Option<u64>, AuthError> {
        Ok(self
            .read::<Project>(&format!("{PROJECTS}{name}"))
            .await?
            .and_then(|(p, _)| p.quota_bytes))
    }

    /// Projects `principal` can see.
    pub async fn list_projects(&self, principal: &Principal) -> Result<Vec<Project>, AuthError> {
        let mut visible = Vec::new();
        for project in self.list::<Project>(PROJECTS).await? {
            if self
                .actions_in(principal, &project)
                .await?
                .contains(Action::Pull)
            {
                visible.push(project);
            }
        }
        Ok(visible)
    }

    /// Changes visibility and quota.
    pub async fn update_project(
        &self,
        name: &str,
        public: Option<bool>,
        quota_bytes: Option<Option<u64>>,
    ) -> Result<Project, AuthError> {
        for _ in 0..16 {
            let (mut project, revision) = self.project_record(name).await?;
            if let Some(public) = public {
                project.public = public;
            }
            if let Some(quota) = quota_bytes {
                project.quota_bytes = quota;
            }
            if self
                .store
                .put_if(&format!("{PROJECTS}{name}"), encode(&project), revision)
                .await?
                .is_some()
            {
                return Ok(project);
            }
        }
        Err(AuthError::Internal(format!(
            "project {name} keeps changing; retry"
        )))
    }

    /// Deletes a project with its members and robots. The caller checks
    /// that no repositories remain.
    pub async fn delete_project(&self, name: &str) -> Result<(), AuthError> {
        let (_, revision) = self.project_record(name).await?;
        let key = format!("{PROJECTS}{name}");
        let mut txn = Txn::new().when_revision(&key, revision).delete(key);
        for member in self.list::<Member>(&format!("{MEMBERS}{name}/")).await? {
            txn = txn.delete(member_key(name, &member.user));
        }
        for robot in self
            .list::<RobotRecord>(&format!("{ROBOTS}robot${name}+"))
            .await?
        {
            txn = txn.delete(format!("{ROBOTS}{}", robot.name));
        }
        if self.store.txn(txn).await?.succeeded {
            Ok(())
        } else {
            Err(AuthError::Conflict(format!(
                "project {name} changed meanwhile; retry"
            )))
        }
    }

    // ----- members -----

    /// Adds a member or changes their role.
    pub async fn set_member(
        &self,
        project: &str,
        user: &str,
        role: Role,
    ) -> Result<Member, AuthError> {
        self.project_record(project).await?;
        self.user_record(user).await?;
        let member = Member {
            project: project.to_string(),
            user: user.to_string(),
            role,
        };
        self.store
            .put(&member_key(project, user), encode(&member))
            .await?;
        Ok(member)
    }

    /// Removes a member.
    pub async fn remove_member(&self, project: &str, user: &str) -> Result<(), AuthError> {
        let key = member_key(project, user);
        let (_, revision) = self
            .read::<Member>(&key)
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("member {user} of project {project}")))?;
        self.store.delete_if(&key, revision).await?;
        Ok(())
    }

    /// Members of a project.
    pub async fn list_members(&self, project: &str) -> Result<Vec<Member>, AuthError> {
        self.project_record(project).await?;
        self.list(&format!("{MEMBERS}{project}/")).await
    }

    // ----- robots -----

    /// Creates robot `short` in `project` with `permissions`; returns it and
    /// its secret, which is not stored and cannot be shown again.
    pub async fn create_robot(
        &self,
        creator: &Principal,
        project: &str,
        short: &str,
        permissions: Vec<RobotPermission>,
        expires_in: Option<Duration>,
    ) -> Result<(Robot, String), AuthError> {
        let name = robot_name(project, short)?;
        if permissions.is_empty() || permissions.iter().any(|p| p.actions.is_empty()) {
            return Err(AuthError::Invalid(
                "a robot needs at least one action in each project".into(),
            ));
        }
        for permission in &permissions {
            self.project_record(&permission.project).await?;
        }
        let secret = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
        };
        let record = RobotRecord {
            name: name.clone(),
            uid: new_uid(),
            secret_hash: hash_blocking(secret.clone()).await?,
            permissions,
            expires_at: expires_in.map(|d| now_millis() + d.as_millis() as u64),
            disabled: false,
            epoch: 0,
            created_by: creator.name().to_string(),
            created_at: now_millis(),
        };
        match self
            .store
            .create(&format!("{ROBOTS}{name}"), encode(&record))
            .await?
        {
            Some(_) => Ok((Robot::from(&record), secret)),
            None => Err(AuthError::Conflict(format!("robot {name}"))),
        }
    }

    async fn robot_record(&self, name: &str) -> Result<(RobotRecord, u64), AuthError> {
        self.read(&format!("{ROBOTS}{name}"))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("robot {name}")))
    }

    /// One robot.
    pub async fn robot(&self, name: &str) -> Result<Robot, AuthError> {
        Ok(Robot::from(&self.robot_record(name).await?.0))
    }

    /// Robots of a project.
    pub async fn list_robots(&self, project: &str) -> Result<Vec<Robot>, AuthError> {
        self.project_record(project).await?;
        let records = self
            .list::<RobotRecord>(&format!("{ROBOTS}robot${project}+"))
            .await?;
        Ok(records.iter().map(Robot::from).collect())
    }

    /// Disables or re-enables a robot. Disabling cuts off its tokens at once
    /// on this server (within a second on others), and they stay dead after
    /// it is enabled again: the robot logs in anew.
    pub async fn set_robot_disabled(&self, name: &str, disabled: bool) -> Result<Robot, AuthError> {
        let record = self
            .update_account(
                &format!("{ROBOTS}{name}"),
                &format!("robot {name}"),
                |record: &mut RobotRecord| {
                    if record.disabled != disabled {
                        record.disabled = disabled;
                        record.epoch += 1;
                    }
                },
            )
            .await?;
        Ok(Robot::from(&record))
    }

    /// Deletes a robot; its tokens stop working.
    pub async fn delete_robot(&self, name: &str) -> Result<(), AuthError> {
        let (_, revision) = self.robot_record(name).await?;
        self.store
            .delete_if(&format!("{ROBOTS}{name}"), revision)
            .await?;
        self.accounts_changed();
        Ok(())
    }

    // ----- settings -----

    /// System settings.
    pub async fn settings(&self) -> Result<Settings, AuthError> {
        Ok(self
            .read(SETTINGS)
            .await?
            .map(|(s, _)| s)
            .unwrap_or_default())
    }

    /// Replaces the system settings.
    pub async fn set_settings(&self, settings: &Settings) -> Result<(), AuthError> {
        self.store.put(SETTINGS, encode(settings)).await?;
        Ok(())
    }

    // ----- policy -----

    /// What `principal` may do in `project` (nothing if it does not exist).
    pub async fn actions_on(
        &self,
        principal: &Principal,
        project: &str,
    ) -> Result<Actions, AuthError> {
        match self
            .read::<Project>(&format!("{PROJECTS}{project}"))
            .await?
        {
            Some((project, _)) => self.actions_in(principal, &project).await,
            None => Ok(Actions::NONE),
        }
    }

    async fn actions_in(
        &self,
        principal: &Principal,
        project: &Project,
    ) -> Result<Actions, AuthError> {
        let public_pull = |allowed: bool| {
            if allowed && project.public {
                Actions::from(Action::Pull)
            } else {
                Actions::NONE
            }
        };
        Ok(match principal {
            Principal::User { admin: true, .. } => Actions::all(),
            Principal::User { name, .. } => {
                let role = self
                    .read::<Member>(&member_key(&project.name, name))
                    .await?
                    .map(|(m, _)| m.role);
                role.map_or(Actions::NONE, Role::actions)
                    .union(public_pull(true))
            }
            Principal::Robot { permissions, .. } => permissions
                .iter()
                .filter(|p| p.project == project.name)
                .fold(Actions::NONE, |set, p| set.union(p.actions)),
            Principal::Anonymous => public_pull(self.settings().await?.anonymous_pull),
        })
    }

    /// Checks that `principal` may do `action` in `project`. Only system
    /// administrators learn that a project does not exist; others cannot
    /// tell a missing project from one they may not see.
    pub async fn require(
        &self,
        principal: &Principal,
        project: &str,
        action: Action,
    ) -> Result<(), AuthError> {
        let record = self
            .read::<Project>(&format!("{PROJECTS}{project}"))
            .await?;
        let allowed = match &record {
            Some((project, _)) => self.actions_in(principal, project).await?,
            None if principal.is_admin() => {
                return Err(AuthError::NotFound(format!("project {project}")));
            }
            None => Actions::NONE,
        };
        if allowed.contains(action) {
            Ok(())
        } else {
            Err(AuthError::Denied(format!(
                "{} may not {} in project {project}",
                principal.name(),
                action.as_str()
            )))
        }
    }

    /// What to put in a registry token for the `scopes` asked for: the
    /// intersection of what was asked and what `principal` may do.
    pub async fn grant(
        &self,
        principal: &Principal,
        scopes: &[Scope],
    ) -> Result<Vec<AccessEntry>, AuthError> {
        let mut access = Vec::new();
        for scope in scopes {
            match scope {
                Scope::Repository { name, actions } => {
                    let allowed = self.actions_on(principal, name.project()).await?;
                    // Registry actions only; "admin" is for the API.
                    let granted = actions
                        .intersect(allowed)
                        .iter()
                        .filter(|a| *a != Action::Admin);
                    access.push(AccessEntry {
                        kind: "repository".into(),
                        name: name.to_string(),
                        actions: granted.map(|a| a.as_str().to_string()).collect(),
                    });
                }
                Scope::Catalog => {
                    let may_list = !matches!(principal, Principal::Anonymous)
                        || self.settings().await?.anonymous_pull;
                    access.push(AccessEntry {
                        kind: "registry".into(),
                        name: "catalog".into(),
                        actions: if may_list {
                            vec!["*".into()]
                        } else {
                            Vec::new()
                        },
                    });
                }
            }
        }
        Ok(access)
    }
}

fn member_key(project: &str, user: &str) -> String {
    format!("{MEMBERS}{project}/{user}")
}

fn user_principal(record: &UserRecord) -> Principal {
    Principal::User {
        name: record.name.clone(),
        uid: effective_uid(&record.uid, record.created_at),
        admin: record.admin,
    }
}

fn robot_principal(record: &RobotRecord) -> Result<Principal, AuthError> {
    if record.disabled {
        return Err(AuthError::Unauthenticated(format!(
            "robot {} is disabled",
            record.name
        )));
    }
    if record.expires_at.is_some_and(|at| at <= now_millis()) {
        return Err(AuthError::Unauthenticated(format!(
            "robot {} has expired",
            record.name
        )));
    }
    Ok(Principal::Robot {
        name: record.name.clone(),
        uid: effective_uid(&record.uid, record.created_at),
        permissions: record.permissions.clone(),
    })
}

async fn hash_blocking(secret: String) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || password::hash(&secret))
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))?
}

async fn verify_blocking(secret: String, hash: String) -> Result<bool, AuthError> {
    tokio::task::spawn_blocking(move || password::verify(&secret, &hash))
        .await
        .map_err(|e| AuthError::Internal(e.to_string()))
}
