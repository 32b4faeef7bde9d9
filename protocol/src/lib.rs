//! The shared language of Confab.
//!
//! Everything that crosses a process or a crate boundary is defined here, next
//! to its codec: what clients send ([`request`]), what the server answers and
//! pushes ([`event`]), the message object ([`message`]), the validation rules
//! of PROTOCOL.md ([`validate`]), the protocol's error codes ([`error`]) and
//! the records that travel over the bus between gateways and dispatchers
//! ([`record`]), attachments ([`attachments`]), and what tells a user where to look: mentions, unread
//! counts, notification levels, retention ([`unread`]). This crate depends on nothing else in the workspace. The
//! TypeScript SDK's wire types are generated from these types and checked
//! for drift by the `typescript` tests.

pub mod accounts;
pub mod attachments;
pub mod contacts;
pub mod error;
pub mod event;
pub mod lifecycle;
pub mod message;
pub mod record;
pub mod request;
pub mod rooms;
pub mod unread;
pub mod validate;

#[cfg(test)]
mod typescript;

pub use accounts::Profile;
pub use attachments::Attachment;
pub use contacts::{ContactEntry, ContactStatus};
pub use error::{ErrorCode, ProtocolError};
pub use event::{ByeReason, Event, MemberAction, Reply};
pub use message::{Message, RoomInfo};
pub use record::{Act, Announcement, Audience, Command, Delivery, IngressRecord, Origin, RoomEffect};
pub use request::{Op, Request, RequestId};
pub use rooms::{Role, Visibility};
pub use unread::{NotifyLevel, Retention};
