//! R1, "a retry with the same id never applies twice": a gateway whose
//! `XADD` failed ambiguously appends the entry again with the same reply
//! id, marked as a retry. Whatever order and batches the two entries
//! arrive in, the shard applies the request once and answers both with
//! the same outcome. The danger is a request applied again *after* a
//! later change of the same user: a status chosen since would be
//! overwritten, a calendar event ended since would start again (the user
//! stuck "in a meeting"). Pure: `ShardState` driven by hand, no Redis.

use std::time::Duration;

use presence_aggregator::{LoadedUser, ShardConfig, ShardLoad, ShardState};
use presence_backend::Profile;
use presence_core::{ChosenStatus, Timestamp, UserPresence, WorkspaceSettings};
use presence_engine::UserRecord;
use presence_protocol::cluster::{
    CalendarOrigin, ClusterCommand, CommandResult, StatusRequestBody, StreamEntry, StreamId,
    UserCommand,
};

const T0: Timestamp = Timestamp::from_millis(1_700_000_000_000);
const USER: &str = "alice";

fn settings() -> WorkspaceSettings {
    WorkspaceSettings {
        calendar_integration: true,
        ..WorkspaceSettings::default()
    }
}

fn set_status(status: ChosenStatus, text: &str) -> ClusterCommand {
    ClusterCommand::User(UserCommand::SetStatus {
        request: StatusRequestBody {
            status: Some(status),
            text: Some(text.into()),
            expires_at: None,
        },
    })
}

fn calendar(busy: bool) -> ClusterCommand {
    ClusterCommand::User(UserCommand::Calendar {
        event_id: "standup".into(),
        busy,
        source: CalendarOrigin::Integration,
    })
}

/// (name, the request that is retried, a later change of the same user).
fn cases() -> Vec<(&'static str, ClusterCommand, ClusterCommand)> {
    vec![
        (
            "set_status",
            set_status(ChosenStatus::Busy, "Presenting"),
            set_status(ChosenStatus::Online, "Back"),
        ),
        ("calendar event", calendar(true), calendar(false)),
    ]
}

/// One stream entry, as the runner decodes it.
fn entry(command: &ClusterCommand, reply: &str, retry: bool) -> StreamEntry {
    let entry = StreamEntry {
        user: USER.to_owned(),
        command: command.clone(),
        node: "node-a".to_owned(),
        reply: Some(reply.to_owned()),
        retry,
        profile: None,
    };
    StreamEntry::from_fields(entry.to_fields()).expect("decodes")
}

/// How the two appends of one request reach the leader, around a later
/// change.
#[derive(Clone, Copy, Debug)]
enum Arrival {
    /// All in one batch: first append, later change, retry.
    SameBatch,
    /// One batch each; the runner read the first outcome from Redis and
    /// handed it in with `remember_outcomes` before the retry's batch (a
    /// first append is never remembered in memory, so this is also the
    /// path after a leader change).
    LaterBatches,
    /// The retry was applied first, the first append last (it timed out
    /// and Redis ran it late).
    RetryFirst,
    /// As `RetryFirst`, but another leader took the shard over before the
    /// first append arrived: it knows nothing of the retry in memory, and
    /// its runner looks first appends up in Redis for a while after a
    /// takeover (`retries.rs`), which hands in the retry's outcome.
    RetryFirstThenNewLeader,
}

struct Shard {
    state: ShardState,
    next: u64,
    answers: Vec<(String, CommandResult)>,
}

impl Shard {
    fn new() -> Self {
        Self {
            state: ShardState::new(ShardConfig::default(), settings(), Vec::new(), None),
            next: 1,
            answers: Vec::new(),
        }
    }

    /// Applies one batch; returns its answers.
    fn apply(&mut self, entries: Vec<StreamEntry>) -> Vec<(String, CommandResult)> {
        let n = self.next;
        self.next += 1;
        let entries = entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| (StreamId::new(n, i as u64), e));
        let changes = self.state.apply_batch(entries, T0 + Duration::from_secs(n));
        let answers: Vec<(String, CommandResult)> = changes
            .replies
            .iter()
            .map(|r| (r.r.clone(), r.result.clone()))
            .collect();
        self.answers.extend(answers.clone());
        answers
    }

    fn presence(&self) -> UserPresence {
        self.state.presence(USER).expect("alice is known").clone()
    }

    /// A new leader, loaded from what this one stored (its answers so far
    /// kept, so both appends' answers can be compared).
    fn taken_over(&self) -> Self {
        let presence = self.presence();
        let load = ShardLoad {
            users: vec![LoadedUser {
                user: USER.to_owned(),
                record: Some(UserRecord {
                    state: presence.durable.clone(),
                    profile: Profile::default(),
                    updated_at: T0,
                }),
                devices: Vec::new(),
                view: None,
                self_view: None,
            }],
            settings: settings(),
            custom_statuses: Vec::new(),
            cap: None,
        };
        let now = T0 + Duration::from_secs(self.next);
        let (state, _) = ShardState::load(ShardConfig::default(), load, now);
        Self {
            state,
            next: self.next + 1,
            answers: self.answers.clone(),
        }
    }

    fn answers_to(&self, reply: &str) -> Vec<CommandResult> {
        self.answers
            .iter()
            .filter(|(r, _)| r == reply)
            .map(|(_, a)| a.clone())
            .collect()
    }
}

/// The first append as `r1`, the later change as `r2`, and the retry of
/// the first as `retry_id`, arriving as `arrival`.
fn run(
    arrival: Arrival,
    request: &ClusterCommand,
    later: &ClusterCommand,
    retry_id: &str,
) -> Shard {
    let mut shard = Shard::new();
    let first = entry(request, "r1", false);
    let change = entry(later, "r2", false);
    let retry = entry(request, retry_id, true);
    match arrival {
        Arrival::SameBatch => {
            shard.apply(vec![first, change, retry]);
        }
        Arrival::LaterBatches => {
            let stored = shard.apply(vec![first]);
            shard.apply(vec![change]);
            shard.state.remember_outcomes(stored);
            shard.apply(vec![retry]);
        }
        Arrival::RetryFirst => {
            shard.apply(vec![retry]);
            shard.apply(vec![change]);
            shard.apply(vec![first]);
        }
        Arrival::RetryFirstThenNewLeader => {
            let stored = shard.apply(vec![retry]);
            shard.apply(vec![change]);
            let mut next = shard.taken_over();
            next.state.remember_outcomes(stored);
            next.apply(vec![first]);
            return next;
        }
    }
    shard
}

/// The request applied once, then the later change.
fn once(request: &ClusterCommand, later: &ClusterCommand) -> UserPresence {
    let mut shard = Shard::new();
    shard.apply(vec![entry(request, "r1", false)]);
    shard.apply(vec![entry(later, "r2", false)]);
    shard.presence()
}

const ARRIVALS: [Arrival; 4] = [
    Arrival::SameBatch,
    Arrival::LaterBatches,
    Arrival::RetryFirst,
    Arrival::RetryFirstThenNewLeader,
];

#[test]
fn r1_a_retried_entry_with_the_same_reply_id_is_applied_once() {
    for (name, request, later) in cases() {
        let expected = once(&request, &later);
        for arrival in ARRIVALS {
            let shard = run(arrival, &request, &later, "r1");
            let answers = shard.answers_to("r1");
            assert_eq!(
                answers.len(),
                2,
                "{name}, {arrival:?}: both appends are answered"
            );
            assert_eq!(
                answers[0], answers[1],
                "{name}, {arrival:?}: one outcome for both"
            );
            assert!(
                matches!(answers[0], CommandResult::Ok(_)),
                "{name}: {answers:?}"
            );
            let presence = shard.presence();
            assert_eq!(
                (&presence.durable.status, &presence.durable.calendar),
                (&expected.durable.status, &expected.durable.calendar),
                "{name}, {arrival:?}: the later change stands"
            );
        }
    }
}

/// The control: the same request under another id (what a retry would be
/// without the dedupe) is applied again and undoes the later change, so
/// the test above can fail.
#[test]
fn r1_without_the_same_id_a_repeated_request_undoes_the_later_change() {
    for (name, request, later) in cases() {
        let expected = once(&request, &later);
        for arrival in [Arrival::SameBatch, Arrival::LaterBatches] {
            let presence = run(arrival, &request, &later, "r3").presence();
            assert_ne!(
                (&presence.durable.status, &presence.durable.calendar),
                (&expected.durable.status, &expected.durable.calendar),
                "{name}, {arrival:?}"
            );
        }
    }
}

/// A retry whose first append never reached Redis (no outcome anywhere)
/// is applied: the request is not lost.
#[test]
fn r1_a_retry_without_any_earlier_outcome_is_applied() {
    for (name, request, later) in cases() {
        let expected = once(&request, &later);
        let mut shard = Shard::new();
        shard.apply(vec![entry(&request, "r1", true)]);
        shard.apply(vec![entry(&later, "r2", false)]);
        assert_eq!(shard.answers_to("r1").len(), 1, "{name}");
        assert_eq!(
            shard.presence().durable.status,
            expected.durable.status,
            "{name}"
        );
        assert_eq!(
            shard.presence().durable.calendar,
            expected.durable.calendar,
            "{name}"
        );
    }
}

/// The control for a leader change between the retry and its late first
/// append: without the stored outcome the runner looks up, the new leader
/// applies the first append again and undoes the later change.
#[test]
fn r1_a_new_leader_without_the_stored_outcome_would_apply_a_late_first_append_again() {
    for (name, request, later) in cases() {
        let expected = once(&request, &later);
        let mut shard = Shard::new();
        shard.apply(vec![entry(&request, "r1", true)]);
        shard.apply(vec![entry(&later, "r2", false)]);
        let mut next = shard.taken_over();
        next.apply(vec![entry(&request, "r1", false)]);
        let presence = next.presence();
        assert_ne!(
            (&presence.durable.status, &presence.durable.calendar),
            (&expected.durable.status, &expected.durable.calendar),
            "{name}"
        );
    }
}
