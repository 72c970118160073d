//! System settings.

use wharf_store::StoreExt;

use super::Identity;
use super::records::{SETTINGS, encode};
use crate::AuthError;
use crate::model::Settings;

impl Identity {
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
}
