//! Profiles (docs/protocol.md, "Accounts: profiles"): a user sets their
//! own, anyone signed in reads them. They are not part of any room's order,
//! so the gateway reads and writes them in the store itself.

use confab_protocol::event::ReplyBody;
use confab_protocol::{ErrorCode, Profile, ProtocolError};

use crate::Gateway;
use crate::ops::store_error;

impl Gateway {
    /// `profile`: the fields given replace the stored ones; the reply is
    /// the profile as now stored.
    pub(crate) async fn set_profile(
        &self,
        user: &str,
        display_name: Option<String>,
        avatar: Option<String>,
    ) -> Result<ReplyBody, ProtocolError> {
        let store = &self.inner.store;
        let mut profile = self.profile(user).await?;
        if let Some(d) = display_name {
            profile.display_name = d;
        }
        if let Some(a) = avatar {
            profile.avatar = a;
        }
        if !store.set_profile(&profile).await.map_err(store_error)? {
            return Err(no_user(user));
        }
        let Profile { user, display_name, avatar } = profile;
        Ok(ReplyBody::Profile { user, display_name, avatar })
    }

    /// A user's profile; `not_found` without an account.
    pub(crate) async fn profile(&self, user: &str) -> Result<Profile, ProtocolError> {
        let found = self.inner.store.profiles(&[user.to_owned()]).await.map_err(store_error)?;
        found.into_iter().next().ok_or_else(|| no_user(user))
    }
}

fn no_user(user: &str) -> ProtocolError {
    ProtocolError::new(ErrorCode::NotFound, format!("no user '{user}'"))
}
