//! Users of an application's tokens and the accounts registered here with a
//! password share the store's user table, but never a name. An
//! application's user is created (without a password) the first time one of
//! their tokens is used, so other users can address DMs to them from then
//! on; a name that already belongs to a password account is refused to the
//! application, so a self-registered `ceo` never reads what was meant for the
//! application's `ceo` (nor the other way round: registering a provisioned
//! name is `taken`). The name of a deleted account (either kind) stays
//! reserved: an application's token for it is refused (`forbidden`), never
//! made into a fresh account that would inherit the old one's DMs.

use confab_protocol::{ErrorCode, ProtocolError};
use confab_store::UserRecord;

use crate::Gateway;
use crate::ops::store_error;

impl Gateway {
    /// Makes sure `name`, the subject of a token an application's key
    /// signed, is an application's user in the store: creates them on first
    /// sight, and refuses (`forbidden`) a name that is a password account
    /// or was a deleted account's.
    pub async fn application_user(&self, name: &str) -> Result<(), ProtocolError> {
        let store = &self.inner.store;
        // Twice at most: a create that loses a race reads the winner.
        for _ in 0..2 {
            match store.user(name).await.map_err(store_error)? {
                Some(user) if user.password_hash.is_empty() => return Ok(()),
                Some(_) => {
                    return Err(ProtocolError::new(
                        ErrorCode::Forbidden,
                        format!(
                            "the user name '{name}' belongs to an account registered here with a password; \
                             an application's token cannot sign in as it"
                        ),
                    ));
                }
                None => {
                    let created_ms = crate::auth::unix_now() * 1000;
                    let user =
                        UserRecord { name: name.to_owned(), password_hash: String::new(), created_ms, bot: false };
                    if store.create_user(&user).await.map_err(store_error)? {
                        tracing::info!(user = %name, "application user provisioned");
                        return Ok(());
                    }
                }
            }
        }
        // Refused twice and found by neither read: the name is a deleted
        // account's tombstone, which stays reserved. Signing in as it would
        // hand a new person the old one's DMs, invitations and contacts.
        tracing::info!(user = %name, "application token for a deleted account's name refused");
        Err(ProtocolError::new(
            ErrorCode::Forbidden,
            format!("the account '{name}' was deleted; its name is never handed out again"),
        ))
    }
}
