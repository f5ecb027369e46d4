//! Webhooks: subscriptions per event kind (`subscriptions`); the fan-out `services::alerts::raise`
//! calls, which queues one delivery per matching subscription and event in the caller's
//! transaction (`fanout`, an outbox); and the worker that sends them with HMAC-SHA256
//! signatures, retries and exponential backoff (`delivery`).

mod delivery;
mod destination;
mod fanout;
mod subscriptions;

pub use delivery::{
    Attempt, DeliveryReport, MAX_ATTEMPTS, Outgoing, SECRET_CONTEXT, backoff, deliver_due, load_due, record, send_all,
    signature,
};
pub use destination::{Outbound, check_destination, failure_text};
pub use fanout::fan_out;
pub use subscriptions::{DeliveryView, SubscriptionInput, SubscriptionView, create, deliveries, list};
