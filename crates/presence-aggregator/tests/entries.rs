//! One stream entry per change: what the leader does with the fields of
//! an entry besides its command (the profile of the caller's token).

mod common;

use common::{Leader, status};
use presence_core::DisplayedStatus;
use presence_protocol::cluster::{
    ClusterCommand, CommandResult, StreamEntry, StreamId, UserCommand,
};

/// One `XADD` per change: a status change whose token carried a profile
/// is one stream entry, and the leader records both in the same step (one
/// commit: one document with the new status and the profile).
#[test]
fn a_status_change_records_the_profile_its_entry_carries() {
    let mut leader = Leader::new();
    leader.connect("alice", "d1", "web");
    let entry = StreamEntry {
        user: "alice".into(),
        command: ClusterCommand::User(UserCommand::SetStatus {
            request: status(Some("busy"), Some("Presenting")),
        }),
        node: "n1".into(),
        reply: Some("r-profile".into()),
        retry: false,
        profile: Some(presence_protocol::cluster::Profile {
            username: Some("al".into()),
            name: Some("Alice".into()),
            utc_offset: None,
        }),
    };
    // Through the stream's field encoding, as the runner reads it.
    let entry = StreamEntry::from_fields(entry.to_fields()).expect("decodes");
    let now = leader.now;
    let changes = leader
        .state
        .apply_batch(vec![(StreamId::new(500, 0), entry)], now);
    assert_eq!(changes.replies.len(), 1, "one answer for the one entry");
    assert!(matches!(changes.replies[0].result, CommandResult::Ok(_)));
    let record = changes.users["alice"]
        .record
        .clone()
        .expect("the document is written");
    assert_eq!(record.profile.username.as_deref(), Some("al"));
    assert_eq!(record.profile.name.as_deref(), Some("Alice"));
    leader.commit(changes);
    assert_eq!(leader.shown("alice"), DisplayedStatus::Busy);
}
