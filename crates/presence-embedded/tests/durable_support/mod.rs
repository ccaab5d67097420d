//! Sample records shared by the `durable_*` test files.
#![allow(dead_code)] // Each test file uses a different subset.

use presence_backend::Profile;
use presence_core::{
    ChosenStatus, CustomStatus, CustomStatusId, CustomStatusName, DisplayedStatus, DurableState,
    IdleTimeLimit, StatusText, Timestamp, WorkspaceSettings,
};
use presence_embedded::{PersistedCap, Write};
use presence_engine::UserRecord;

/// A user record that differs from the default in every part, so a lost
/// field shows up in the comparison. `seed` varies the record.
pub fn user_record(seed: u64) -> UserRecord {
    let mut state = DurableState::default();
    state.status.state.chosen = ChosenStatus::Busy;
    state.status.state.text = StatusText::parse(&format!("In a meeting #{seed} 📅")).unwrap();
    state.preferences.auto_away = Some(false);
    state.preferences.idle_time_limit = Some(IdleTimeLimit::new(600).unwrap());
    state.calendar.busy_events.insert(format!("event-{seed}"));
    state.version = seed + 1;
    UserRecord {
        state,
        profile: Profile {
            username: Some(format!("user{seed}")),
            name: Some(format!("User Number {seed}")),
            utc_offset: None,
        },
        updated_at: Timestamp::from_millis(1_700_000_000_000 + seed as i64),
    }
}

pub fn user_write(id: &str, seed: u64) -> Write {
    Write::User {
        id: id.to_owned(),
        record: user_record(seed),
    }
}

pub fn custom_status(id: &str, name: &str, status_type: DisplayedStatus) -> CustomStatus {
    CustomStatus {
        id: CustomStatusId::try_from(id).unwrap(),
        name: CustomStatusName::parse(name).unwrap(),
        status_type,
        updated_at: Timestamp::from_millis(1_700_000_000_000),
    }
}

/// Settings that differ from the defaults in every field.
pub fn changed_settings() -> WorkspaceSettings {
    WorkspaceSettings {
        allow_custom_status_text: false,
        allow_invisible: false,
        calendar_integration: true,
        default_auto_away: false,
        default_idle_time_limit: IdleTimeLimit::new(900).unwrap(),
        cap: 5000,
    }
}

pub fn disabled_cap(peak: u64) -> PersistedCap {
    PersistedCap {
        cap_enabled: false,
        peak,
    }
}
