//! Webhooks: subscriptions per event kind (`subscriptions`); `raise`, the one entry point every
//! service raises an alert through, which queues one delivery per matching subscription and
//! event in the caller's transaction (`fanout`, an outbox); and the worker that sends them with
//! HMAC-SHA256 signatures, retries and exponential backoff (`delivery`).

mod delivery;
mod fanout;
mod subscriptions;

pub use delivery::{
    Attempt, DeliveryReport, MAX_ATTEMPTS, Outgoing, backoff, deliver_due, load_due, record, send_all, signature,
};
pub use fanout::{raise, raise_at_threshold};
pub use subscriptions::{
    DeliveryView, EVENTS, SubscriptionInput, SubscriptionView, covers_scanned_kinds, create, deliveries, list,
};
