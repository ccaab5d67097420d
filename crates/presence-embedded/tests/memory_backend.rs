//! The embedded backend: rules wired to storage, updates and timers.

use std::sync::Arc;
use std::time::Duration;

use presence_backend::{Backend, ConnId, Profile, Session, SettingsPatch, SocketEnd, Update};
use presence_core::{
    CalendarSource, ChosenStatus, DeviceEvent, DeviceId, DisplayedStatus, IdleTimeLimit, Platform,
    PreferencesUpdate, SelfStatus, StatusRequest,
};
use presence_embedded::{DurableStore, MemoryBackend, MemoryConfig, MemoryStore, SystemClock};
use tokio::sync::broadcast;

fn session(user: &str, device: &str, platform: Platform, conn: u64) -> Session {
    Session {
        user: Arc::from(user),
        device: DeviceId::try_from(device).unwrap(),
        platform,
        conn: ConnId(conn),
        profile: Profile {
            username: Some(format!("{user}.name")),
            name: None,
            utc_offset: None,
        },
    }
}

fn start(store: Arc<MemoryStore>, grace: Duration) -> MemoryBackend {
    let config = MemoryConfig {
        disconnect_grace: grace,
        ..MemoryConfig::default()
    };
    MemoryBackend::start(config, store, Arc::new(SystemClock)).expect("backend starts")
}

/// Waits for the next public update about `user`.
async fn next_public(rx: &mut broadcast::Receiver<Update>, user: &str) -> (DisplayedStatus, u64) {
    let wait = async {
        loop {
            if let Update::Presence { snapshot, .. } = rx.recv().await.expect("update")
                && &*snapshot.user == user
            {
                return (snapshot.view.status, snapshot.version);
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("an update in time")
}

fn status(status: ChosenStatus) -> StatusRequest {
    StatusRequest {
        status: Some(status),
        ..StatusRequest::default()
    }
}

#[tokio::test]
async fn a1_a2_updates_follow_devices_and_manual_status() {
    let backend = start(Arc::new(MemoryStore::new()), Duration::from_secs(30));
    let mut rx = backend.subscribe();
    let web = session("alice", "w1", Platform::Web, 1);
    backend.connect(&web).await.unwrap();
    let (s, v1) = next_public(&mut rx, "alice").await;
    assert_eq!(s, DisplayedStatus::Online);
    backend
        .set_status("alice", None, status(ChosenStatus::Busy))
        .await
        .unwrap();
    let (s, v2) = next_public(&mut rx, "alice").await;
    assert_eq!(s, DisplayedStatus::Busy);
    assert!(v2 > v1, "w3: versions grow");
    backend.disconnect(&web, SocketEnd::Clean).await.unwrap();
    let (s, _) = next_public(&mut rx, "alice").await;
    assert_eq!(s, DisplayedStatus::Offline);
    // A1: the choice is kept.
    let me = backend.self_state("alice").await.unwrap();
    assert_eq!(me.view.chosen, ChosenStatus::Busy);
}

#[tokio::test]
async fn m3_chosen_status_is_durable_before_the_answer() {
    let store = Arc::new(MemoryStore::new());
    let backend = start(store.clone(), Duration::from_secs(30));
    let request = StatusRequest {
        status: Some(ChosenStatus::Away),
        text: Some("Out for lunch".into()),
        expires_at: None,
    };
    backend.set_status("bob", None, request).await.unwrap();
    let snapshot = store.load().unwrap();
    let (_, record) = snapshot
        .users
        .iter()
        .find(|(id, _)| id == "bob")
        .expect("bob stored");
    assert_eq!(record.state.status.state.chosen, ChosenStatus::Away);
    assert_eq!(
        record.state.status.state.text.as_ref().map(|t| t.as_str()),
        Some("Out for lunch")
    );
    // A restarted backend on the same store sees the same choice.
    let again = start(store, Duration::from_secs(30));
    let me = again.self_state("bob").await.unwrap();
    assert_eq!(me.view.chosen, ChosenStatus::Away);
}

#[tokio::test]
async fn d2_server_idle_timer_makes_the_device_away() {
    let backend = start(Arc::new(MemoryStore::new()), Duration::from_secs(30));
    let mut rx = backend.subscribe();
    let web = session("carol", "w1", Platform::Web, 1);
    backend.connect(&web).await.unwrap();
    next_public(&mut rx, "carol").await;
    let one_second = IdleTimeLimit::with_floor(1, 0).unwrap();
    backend
        .set_preferences(
            "carol",
            PreferencesUpdate {
                auto_away: Some(true),
                idle_time_limit: Some(one_second),
            },
        )
        .await
        .unwrap();
    backend
        .device_event(&web, DeviceEvent::Activity)
        .await
        .unwrap();
    let (s, _) = next_public(&mut rx, "carol").await;
    assert_eq!(s, DisplayedStatus::Away);
    backend
        .device_event(&web, DeviceEvent::Activity)
        .await
        .unwrap();
    let (s, _) = next_public(&mut rx, "carol").await;
    assert_eq!(s, DisplayedStatus::Online);
}

#[tokio::test]
async fn d7_lost_socket_is_away_for_the_grace_then_offline() {
    let backend = start(Arc::new(MemoryStore::new()), Duration::from_millis(300));
    let mut rx = backend.subscribe();
    let mobile = session("dave", "m1", Platform::Mobile, 1);
    backend.connect(&mobile).await.unwrap();
    next_public(&mut rx, "dave").await;
    backend.disconnect(&mobile, SocketEnd::Lost).await.unwrap();
    assert_eq!(next_public(&mut rx, "dave").await.0, DisplayedStatus::Away);
    assert_eq!(
        next_public(&mut rx, "dave").await.0,
        DisplayedStatus::Offline
    );
}

#[tokio::test]
async fn d7_late_disconnect_of_a_replaced_socket_is_ignored() {
    let backend = start(Arc::new(MemoryStore::new()), Duration::from_secs(30));
    let first = session("erin", "d1", Platform::Desktop, 1);
    let second = session("erin", "d1", Platform::Desktop, 2);
    backend.connect(&first).await.unwrap();
    backend.connect(&second).await.unwrap();
    backend.disconnect(&first, SocketEnd::Clean).await.unwrap();
    let me = backend.self_state("erin").await.unwrap();
    assert_eq!(me.view.status, SelfStatus::Online);
    assert_eq!(me.view.devices, 1);
}

#[tokio::test]
async fn x2_x4_cap_disables_and_admin_reenables_below_the_cap() {
    let backend = start(Arc::new(MemoryStore::new()), Duration::from_secs(30));
    let patch = SettingsPatch {
        cap: Some(2),
        ..SettingsPatch::default()
    };
    backend.update_settings(patch).await.unwrap();
    let mut rx = backend.subscribe();
    let sessions: Vec<Session> = (0..3)
        .map(|i| session(&format!("u{i}"), "d", Platform::Web, i))
        .collect();
    for s in &sessions {
        backend.connect(s).await.unwrap();
    }
    let disabled = async {
        loop {
            if let Update::Broadcast { active } = rx.recv().await.unwrap() {
                return active;
            }
        }
    };
    assert!(
        !tokio::time::timeout(Duration::from_secs(5), disabled)
            .await
            .unwrap()
    );
    let refused = backend.enable_broadcast().await.unwrap_err();
    assert_eq!(refused.code(), "broadcast_enable_refused");
    backend
        .disconnect(&sessions[0], SocketEnd::Clean)
        .await
        .unwrap();
    // Count 2 is not below the cap of 2.
    assert!(backend.enable_broadcast().await.is_err());
    backend
        .disconnect(&sessions[1], SocketEnd::Clean)
        .await
        .unwrap();
    let state = backend.enable_broadcast().await.unwrap();
    assert!(state.enabled);
    assert_eq!(state.peak, 3);
}

#[tokio::test]
async fn c3_renaming_a_custom_status_updates_its_users() {
    let backend = start(Arc::new(MemoryStore::new()), Duration::from_secs(30));
    let name = presence_core::CustomStatusName::parse("In a Meeting").unwrap();
    let custom = backend
        .create_custom_status(name, DisplayedStatus::Busy)
        .await
        .unwrap();
    backend
        .use_custom_status("fay", None, &custom.id)
        .await
        .unwrap();
    let renamed = presence_core::CustomStatusName::parse("Workshop").unwrap();
    backend
        .update_custom_status(&custom.id, Some(renamed), Some(DisplayedStatus::Away))
        .await
        .unwrap();
    let me = backend.self_state("fay").await.unwrap();
    assert_eq!(me.view.chosen, ChosenStatus::Away);
    assert_eq!(me.view.text.as_ref().map(|t| t.as_str()), Some("Workshop"));
    backend.delete_custom_status(&custom.id).await.unwrap();
    let me = backend.self_state("fay").await.unwrap();
    assert_eq!(me.view.custom_status, None);
    assert_eq!(me.view.text.as_ref().map(|t| t.as_str()), Some("Workshop"));
}

#[tokio::test]
async fn k2_calendar_busy_and_restore() {
    let backend = start(Arc::new(MemoryStore::new()), Duration::from_secs(30));
    let patch = SettingsPatch {
        calendar_integration: Some(true),
        ..SettingsPatch::default()
    };
    backend.update_settings(patch).await.unwrap();
    let desktop = session("gus", "d1", Platform::Desktop, 1);
    backend.connect(&desktop).await.unwrap();
    let source = CalendarSource::Device(Platform::Desktop);
    let me = backend
        .calendar("gus", "ev1".into(), true, source)
        .await
        .unwrap();
    assert_eq!(me.view.status, SelfStatus::Busy);
    let me = backend
        .calendar("gus", "ev1".into(), false, source)
        .await
        .unwrap();
    assert_eq!(me.view.status, SelfStatus::Online);
}

#[tokio::test]
async fn a3_online_count_excludes_invisible_users() {
    let backend = start(Arc::new(MemoryStore::new()), Duration::from_secs(30));
    for (i, user) in ["h1", "h2", "h3"].iter().enumerate() {
        backend
            .connect(&session(user, "d", Platform::Web, i as u64))
            .await
            .unwrap();
    }
    backend
        .set_status("h3", None, status(ChosenStatus::Invisible))
        .await
        .unwrap();
    let counts = backend.status_counts().await.unwrap();
    assert_eq!(counts.online_total(), 2);
    assert_eq!(counts.invisible, 1);
    let listed = backend.list_not_offline(None).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(
        backend
            .user_by_username("h1.name")
            .await
            .unwrap()
            .as_deref(),
        Some("h1")
    );
}
