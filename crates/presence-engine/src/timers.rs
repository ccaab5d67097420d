//! Each user's next time-driven transition (D2 idle, D7 grace, T6 expiry),
//! at most one entry per user, ordered by deadline, so the driver only
//! has to wait for [`Timers::first`].

use std::collections::BTreeSet;
use std::sync::Arc;

use presence_core::{Timestamp, WorkspaceSettings};

use crate::engine::UserEntry;

/// The queue of users by their next deadline.
#[derive(Debug, Default)]
pub(crate) struct Timers {
    queue: BTreeSet<(Timestamp, Arc<str>)>,
}

impl Timers {
    /// Queues the user at their next deadline, replacing the old entry.
    pub(crate) fn reschedule(
        &mut self,
        id: &Arc<str>,
        entry: &mut UserEntry,
        settings: &WorkspaceSettings,
    ) {
        let next = entry.presence.next_deadline(settings);
        if next == entry.scheduled {
            return;
        }
        self.cancel(id, entry);
        if let Some(at) = next {
            self.queue.insert((at, id.clone()));
        }
        entry.scheduled = next;
    }

    /// Removes the user's entry, if queued.
    pub(crate) fn cancel(&mut self, id: &Arc<str>, entry: &mut UserEntry) {
        if let Some(old) = entry.scheduled.take() {
            self.queue.remove(&(old, id.clone()));
        }
    }

    /// The earliest deadline.
    pub(crate) fn first(&self) -> Option<Timestamp> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// Takes the first user whose deadline is at or before `now`.
    pub(crate) fn pop_due(&mut self, now: Timestamp) -> Option<Arc<str>> {
        if self.first()? > now {
            return None;
        }
        self.queue.pop_first().map(|(_, id)| id)
    }
}
