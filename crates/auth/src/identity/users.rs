//! Local user accounts: the first administrator, creation, password
//! changes, disabling and deletion.

use wharf_store::{StoreExt, Txn};

use super::records::{MEMBERS, USERS, encode, member_key};
use super::{Identity, now_millis};
use crate::AuthError;
use crate::model::{InventoryRole, Member, Principal, User, UserRecord, effective_uid, new_uid};
use crate::names::check_user_name;
use crate::password::{self, hash_blocking};

impl Identity {
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
            inventory_role: None,
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

    pub(super) async fn user_record(&self, name: &str) -> Result<(UserRecord, u64), AuthError> {
        self.read(&format!("{USERS}{name}"))
            .await?
            .ok_or_else(|| AuthError::NotFound(format!("user {name}")))
    }

    async fn update_user(
        &self,
        name: &str,
        change: impl Fn(&mut UserRecord),
    ) -> Result<User, AuthError> {
        let record = self
            .update_record(&format!("{USERS}{name}"), &format!("user {name}"), change)
            .await?;
        self.accounts_changed();
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

    /// Sets (or with `None` removes) the user's inventory role.
    pub async fn set_inventory_role(
        &self,
        name: &str,
        role: Option<InventoryRole>,
    ) -> Result<User, AuthError> {
        self.update_user(name, |record| record.inventory_role = role)
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
}

pub(super) fn user_principal(record: &UserRecord) -> Principal {
    Principal::User {
        name: record.name.clone(),
        uid: effective_uid(&record.uid, record.created_at),
        admin: record.admin,
    }
}
