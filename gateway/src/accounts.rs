//! Accounts: profiles (docs/protocol.md, "Accounts: profiles": a user sets
//! their own, anyone signed in reads them) and token revocation (`logout`,
//! `logout-all`, a password change). Neither is part of any room's order,
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
        let Profile { user, display_name, avatar, bot } = profile;
        Ok(ReplyBody::Profile { user, display_name, avatar, bot })
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

impl Gateway {
    /// Refuses (`unauthorized`) a token revoked by `logout`, `logout-all`
    /// or a password change.
    pub(crate) async fn check_not_revoked(&self, claims: &crate::auth::Claims) -> Result<(), ProtocolError> {
        let store = &self.inner.store;
        let floor = store.tokens_valid_after(&claims.sub);
        let revoked = async {
            match &claims.jti {
                Some(jti) => store.is_token_revoked(jti).await,
                None => Ok(false),
            }
        };
        let (floor, revoked) = tokio::try_join!(floor, revoked).map_err(store_error)?;
        if revoked || claims.issued_ms() < floor {
            return Err(ProtocolError::new(ErrorCode::Unauthorized, "this token was revoked; sign in again"));
        }
        Ok(())
    }

    /// Revokes the user's tokens issued before `before_ms` (0: none) and
    /// the token `jti`: stores it, closes the sessions that use them here,
    /// and tells every other gateway to close theirs.
    pub(crate) async fn revoke(
        &self,
        user: &str,
        before_ms: u64,
        jti: Option<(&str, u64)>,
    ) -> Result<(), ProtocolError> {
        let store = &self.inner.store;
        if before_ms > 0 {
            store.revoke_tokens_before(user, before_ms).await.map_err(store_error)?;
        }
        if let Some((jti, exp)) = jti {
            store.revoke_token(jti, exp).await.map_err(store_error)?;
        }
        let jti = jti.map(|(j, _)| j.to_owned());
        let closed = self.inner.registry.revoke(user, before_ms, jti.as_deref());
        tracing::info!(%user, before_ms, closed, "tokens revoked");
        let announcement =
            confab_protocol::Announcement::Revoke { gateway: self.id().into(), user: user.to_owned(), before_ms, jti };
        if let Err(e) = self.inner.bus.announce(&announcement).await {
            // Stored already: other gateways refuse the tokens at the next
            // upgrade; their live sessions end when the tokens expire.
            tracing::warn!(error = %e, "cannot announce a revocation");
            return Err(ProtocolError::unavailable("the revocation is stored but could not reach every server; retry"));
        }
        Ok(())
    }
}
