//! A provider's API keys, as opened from their sealed Secret.

use std::collections::BTreeMap;
use std::fmt;

use crate::ProviderError;

/// An access key pair. `Debug` shows the key id only, so credentials in a
/// logged value never leak the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The access key id (`AKIA...`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// The keys `accessKeyId` and `secretAccessKey` of a Secret's data;
    /// `secret` names it in errors.
    ///
    /// ```
    /// let data = [
    ///     ("accessKeyId".to_string(), b"AKID".to_vec()),
    ///     ("secretAccessKey".to_string(), b"s3cr3t".to_vec()),
    /// ]
    /// .into_iter()
    /// .collect();
    /// let keys = wharf_provider::Credentials::from_secret_data("aws", &data).unwrap();
    /// assert!(!format!("{keys:?}").contains("s3cr3t"));
    /// ```
    pub fn from_secret_data(
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Credentials, ProviderError> {
        let value = |key: &str| -> Result<String, ProviderError> {
            let bytes = data.get(key).ok_or_else(|| {
                ProviderError::Config(format!("secret {secret} has no key {key}"))
            })?;
            let text = String::from_utf8(bytes.clone()).map_err(|_| {
                ProviderError::Config(format!("secret {secret}: {key} is not text"))
            })?;
            Ok(text.trim().to_string())
        };
        Ok(Credentials {
            access_key_id: value("accessKeyId")?,
            secret_access_key: value("secretAccessKey")?,
        })
    }
}
