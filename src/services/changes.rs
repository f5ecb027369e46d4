//! What changed since a reader last looked: the console's live pages ask this every few
//! seconds and refresh the parts of the page a change touches.

use std::collections::BTreeSet;

use crate::error::ApiResult;
use crate::store::{DbConn, alerts, audit};

/// A part of the console that a change can make stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Topic {
    /// Units: created, tested, released, allocated, issued, expired, discarded.
    Board,
    /// Requests, patients, samples, crossmatches, allocations.
    Requests,
    /// Alerts and tasks.
    Alerts,
    /// Donors, stimulations, collections, devices.
    Today,
}

impl Topic {
    /// The SSE event name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Board => "board",
            Self::Requests => "requests",
            Self::Alerts => "alerts",
            Self::Today => "today",
        }
    }

    /// The parts of the console that a change to an audited entity of this type touches.
    pub fn of_entity(entity_type: &str) -> &'static [Topic] {
        match entity_type {
            "unit" => &[Topic::Board],
            "allocation" | "crossmatch" => &[Topic::Board, Topic::Requests],
            "request" | "patient" | "sample" | "anc_result" => &[Topic::Requests],
            "alert" | "task" => &[Topic::Alerts],
            "collection" => &[Topic::Today, Topic::Board],
            "donor" | "stimulation" | "device" | "deferral" | "donation" => &[Topic::Today],
            "policy" => &[Topic::Board, Topic::Requests, Topic::Alerts, Topic::Today],
            _ => &[],
        }
    }
}

/// Where a reader stands: the last audit row of each lane and the last alert event it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cursor {
    pub audit: audit::Position,
    pub alert_seq: i64,
}

/// The reader's position now (a new page starts here).
pub fn cursor_now(conn: &mut DbConn) -> ApiResult<Cursor> {
    Ok(Cursor {
        audit: audit::position(conn)?,
        alert_seq: alerts::last_event_seq(conn)?,
    })
}

/// The topics touched after `since`, and the new position.
pub fn since(conn: &mut DbConn, since: Cursor) -> ApiResult<(BTreeSet<Topic>, Cursor)> {
    let mut topics = BTreeSet::new();
    let mut next = since;
    // A busy moment may hold more rows than one read: the rest comes on the next poll.
    for (lane, id, entity_type) in audit::entity_types_after(conn, &since.audit, 1000)? {
        if let Some(at) = usize::try_from(lane).ok().and_then(|l| next.audit.get_mut(l)) {
            *at = (*at).max(id);
        }
        topics.extend(Topic::of_entity(&entity_type));
    }
    let seq = alerts::last_event_seq(conn)?;
    if seq > since.alert_seq {
        next.alert_seq = seq;
        topics.insert(Topic::Alerts);
    }
    Ok((topics, next))
}
