//! The conformance cases, one `async fn` per case, each named after the
//! rule it proves (DESIGN §1). [`conformance_tests!`] turns each into a
//! test; a case added here and not listed there fails the build
//! (`dead_code` under `-D warnings`).
//!
//! Users are named per case; devices are `socket(user, device, platform)`.
//! Where a case must show that something did *not* happen, it uses a
//! sentinel: a second user put through the same timer a little later, so
//! that by the time the sentinel's update arrives, the update that must not
//! happen would have arrived too.
//!
//! [`conformance_tests!`]: super::conformance_tests

use std::time::Duration;

use presence_backend::{Profile, Session, SettingsPatch, SocketEnd, StatusCounts};
use presence_core::{
    CalendarSource, ChosenStatus, CustomStatusId, CustomStatusName, DeviceEvent, DisplayedStatus,
    EffectivePreferences, IdleTimeLimit, Platform, PreferencesUpdate, PublicView, SelfStatus,
    StatusRequest, StatusText, UtcOffset, WorkspaceSettings,
};
use presence_testkit::wait_until;
use tokio::time::Instant;

use super::BackendHarness;
use super::HarnessConfig;
use super::probe::{
    DEADLINE, Probe, choose, clock_tick, expect_rule, id, now, profile, read_presence, reconnect,
    request, socket,
};

use ChosenStatus as Chosen;
use DisplayedStatus as Shown;
use Platform::{Desktop, Mobile, Web};

// ---------------------------------------------------------------------------
// W3, A1–A4, M1, M2

/// W3, A1, D1: connect → online, disconnect → offline, reconnect → online,
/// each update with a larger version, and reads agree with updates.
pub async fn w3_connect_and_disconnect_publish_strictly_increasing_versions<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let web = socket("alice", "w1", Web);

    let info = backend.connect(&web).await.unwrap();
    assert_eq!(&*info.me.user, "alice");
    assert_eq!(info.me.view.status, SelfStatus::Online, "D1: starts online");
    assert_eq!(info.me.view.devices, 1);
    assert!(info.presence_active);
    assert_eq!(*info.settings, WorkspaceSettings::default());

    let online = probe.next_presence("alice").await;
    assert_eq!(online.view.status, Shown::Online);
    assert!(online.version > 0);
    assert_eq!(read_presence(&backend, "alice").await, online);

    backend.disconnect(&web, SocketEnd::Clean).await.unwrap();
    let offline = probe.next_presence("alice").await;
    assert_eq!(offline.view.status, Shown::Offline, "A1");
    assert!(offline.version > online.version);
    assert_eq!(read_presence(&backend, "alice").await, offline);

    backend.connect(&reconnect(&web)).await.unwrap();
    let back = probe.next_presence("alice").await;
    assert_eq!(back.view.status, Shown::Online);
    assert!(back.version > offline.version);
}

/// A1, T3: without a device the user is offline with no visible text; the
/// choice and text are kept and show again once a device connects.
pub async fn a1_without_devices_a_user_is_offline_and_keeps_the_choice<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);

    let me = backend
        .set_status(
            "bob",
            None,
            request(Some(Chosen::Busy), Some("In the lab"), None),
        )
        .await
        .unwrap();
    assert_eq!(me.view.status, SelfStatus::Offline);
    assert_eq!(me.view.chosen, Chosen::Busy);
    assert_eq!(text(&me.view.text), Some("In the lab"));
    let public = read_presence(&backend, "bob").await.view;
    assert_eq!(public, offline_view(), "T3: no text while offline");

    // The first public update is the connection: choosing while offline
    // changed nothing others can see.
    let desktop = socket("bob", "d1", Desktop);
    backend.connect(&desktop).await.unwrap();
    let busy = probe.next_presence("bob").await;
    assert_eq!(busy.view.status, Shown::Busy);
    assert_eq!(text(&busy.view.text), Some("In the lab"));

    backend
        .disconnect(&desktop, SocketEnd::Clean)
        .await
        .unwrap();
    let offline = probe.next_presence("bob").await;
    assert_eq!(offline.view, offline_view());
    let me = backend.self_state("bob").await.unwrap();
    assert_eq!(me.view.status, SelfStatus::Offline);
    assert_eq!(me.view.chosen, Chosen::Busy, "A1: the choice is kept");
    assert_eq!(text(&me.view.text), Some("In the lab"));
}

/// A2: chosen busy or away shows whatever the devices do.
pub async fn a2_manual_busy_and_away_beat_every_device_state<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let web = socket("carol", "w1", Web);
    backend.connect(&web).await.unwrap();
    assert_eq!(
        probe.next_presence("carol").await.view.status,
        Shown::Online
    );

    backend
        .set_status("carol", None, choose(Chosen::Busy))
        .await
        .unwrap();
    assert_eq!(probe.next_presence("carol").await.view.status, Shown::Busy);
    backend
        .set_status("carol", None, choose(Chosen::Away))
        .await
        .unwrap();
    assert_eq!(probe.next_presence("carol").await.view.status, Shown::Away);

    // The device goes idle: the user still shows away, by choice.
    backend.device_event(&web, DeviceEvent::Idle).await.unwrap();
    probe
        .self_until("carol", "the device is idle", |me| {
            me.view.connection == Shown::Away
        })
        .await;
    backend
        .set_status("carol", None, choose(Chosen::Busy))
        .await
        .unwrap();
    let busy = probe.next_presence("carol").await;
    assert_eq!(busy.view.status, Shown::Busy, "busy beats an away device");
}

/// A3: others see an invisible user as offline without text; the user sees
/// `invisible` and their text.
pub async fn a3_invisible_is_offline_to_others_and_invisible_to_self<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    backend.connect(&socket("dan", "w1", Web)).await.unwrap();
    assert_eq!(probe.next_presence("dan").await.view.status, Shown::Online);

    let me = backend
        .set_status(
            "dan",
            None,
            request(Some(Chosen::Invisible), Some("heads down"), None),
        )
        .await
        .unwrap();
    assert_eq!(me.view.status, SelfStatus::Invisible);
    assert_eq!(text(&me.view.text), Some("heads down"));
    assert_eq!(probe.next_presence("dan").await.view, offline_view());
    assert_eq!(read_presence(&backend, "dan").await.view, offline_view());
    let me = backend.self_state("dan").await.unwrap();
    assert_eq!(me.view.status, SelfStatus::Invisible);
    assert_eq!(
        me.view.connection,
        Shown::Online,
        "the device is still there"
    );

    backend
        .set_status("dan", None, choose(Chosen::Online))
        .await
        .unwrap();
    let online = probe.next_presence("dan").await;
    assert_eq!(online.view.status, Shown::Online);
    assert_eq!(
        online.view.text, None,
        "T4: choosing a status clears the text"
    );
}

/// A4: in automatic mode the best device wins (`online > away`).
pub async fn a4_the_best_device_state_wins<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let web = socket("erin", "w1", Web);
    let phone = socket("erin", "m1", Mobile);
    backend.connect(&web).await.unwrap();
    assert_eq!(probe.next_presence("erin").await.view.status, Shown::Online);
    backend.connect(&phone).await.unwrap();
    probe
        .self_until("erin", "two devices", |me| me.view.devices == 2)
        .await;

    // One device away, one online: online. Then both away: away.
    backend
        .device_event(&phone, DeviceEvent::Background)
        .await
        .unwrap();
    backend.device_event(&web, DeviceEvent::Idle).await.unwrap();
    assert_eq!(probe.next_presence("erin").await.view.status, Shown::Away);
    // The phone comes back: online again, though the web device is idle.
    backend
        .device_event(&phone, DeviceEvent::Foreground)
        .await
        .unwrap();
    assert_eq!(probe.next_presence("erin").await.view.status, Shown::Online);
    let me = backend.self_state("erin").await.unwrap();
    assert_eq!(me.view.connection, Shown::Online);
    assert_eq!(me.view.devices, 2);
}

/// M1: a manual status holds while devices change; M2: choosing online
/// shows the device aggregate at once.
pub async fn m1_m2_manual_status_suspends_devices_and_online_resumes_them<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let web = socket("fay", "w1", Web);
    backend.connect(&web).await.unwrap();
    assert_eq!(probe.next_presence("fay").await.view.status, Shown::Online);
    backend
        .set_status("fay", None, choose(Chosen::Busy))
        .await
        .unwrap();
    assert_eq!(probe.next_presence("fay").await.view.status, Shown::Busy);

    backend.device_event(&web, DeviceEvent::Idle).await.unwrap();
    let me = probe
        .self_until("fay", "the device is idle", |me| {
            me.view.connection == Shown::Away
        })
        .await;
    assert_eq!(me.view.status, SelfStatus::Busy, "M1: recorded, not shown");
    assert_eq!(
        read_presence(&backend, "fay").await.view.status,
        Shown::Busy
    );

    backend
        .set_status("fay", None, choose(Chosen::Online))
        .await
        .unwrap();
    let away = probe.next_presence("fay").await;
    assert_eq!(away.view.status, Shown::Away, "M2: the idle device shows");
    backend
        .device_event(&web, DeviceEvent::Active)
        .await
        .unwrap();
    assert_eq!(probe.next_presence("fay").await.view.status, Shown::Online);
}

/// `SelfState` updates carry what the user sees of themselves after each
/// of their own changes, equal to what the call returned; T4 along the way.
pub async fn self_state_updates_go_out_for_own_changes<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);

    let info = backend.connect(&socket("pia", "w1", Web)).await.unwrap();
    assert_eq!(probe.next_self("pia").await, info.me);

    let focus = request(Some(Chosen::Busy), Some("Focus"), None);
    let me = backend.set_status("pia", None, focus).await.unwrap();
    assert_eq!(
        (me.view.status, text(&me.view.text)),
        (SelfStatus::Busy, Some("Focus"))
    );
    assert_eq!(probe.next_self("pia").await, me);

    let me = backend
        .set_status("pia", None, choose(Chosen::Away))
        .await
        .unwrap();
    assert_eq!(me.view.text, None, "T4: a status alone clears the text");
    assert_eq!(probe.next_self("pia").await, me);

    let only_text = request(None, Some("Back at 3"), None);
    let me = backend.set_status("pia", None, only_text).await.unwrap();
    assert_eq!(
        me.view.chosen,
        Chosen::Away,
        "T4: a text alone keeps the status"
    );
    assert_eq!(text(&me.view.text), Some("Back at 3"));
    assert_eq!(probe.next_self("pia").await, me);

    let update = PreferencesUpdate {
        auto_away: Some(false),
        idle_time_limit: None,
    };
    let me = backend.set_preferences("pia", update).await.unwrap();
    assert!(!me.view.preferences.auto_away);
    assert_eq!(probe.next_self("pia").await, me);

    let me = backend
        .set_status("pia", None, choose(Chosen::Invisible))
        .await
        .unwrap();
    assert_eq!(
        probe.next_self("pia").await.view.status,
        SelfStatus::Invisible
    );
    assert_eq!(me.view.status, SelfStatus::Invisible);
    probe
        .presence_until("pia", "offline to others", |p| p.view == offline_view())
        .await;
}

// ---------------------------------------------------------------------------
// D1–D8

/// D1: a reconnect starts online, even from a device that was idle.
pub async fn d1_reconnect_starts_online_even_if_the_device_was_idle<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let web = socket("gil", "w1", Web);
    backend.connect(&web).await.unwrap();
    assert_eq!(probe.next_presence("gil").await.view.status, Shown::Online);
    backend.device_event(&web, DeviceEvent::Idle).await.unwrap();
    assert_eq!(probe.next_presence("gil").await.view.status, Shown::Away);

    let info = backend.connect(&reconnect(&web)).await.unwrap();
    assert_eq!(info.me.view.status, SelfStatus::Online);
    assert_eq!(info.me.view.devices, 1, "the same device, replaced");
    assert_eq!(probe.next_presence("gil").await.view.status, Shown::Online);
}

/// D2: after `activity` the server's idle timer makes the device away once
/// the user's idle time limit passes; more activity brings it back.
pub async fn d2_server_idle_timer_makes_the_device_away_and_activity_brings_it_back<
    H: BackendHarness,
>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let limit = one_second();
    let update = PreferencesUpdate {
        auto_away: Some(true),
        idle_time_limit: Some(limit),
    };
    backend.set_preferences("hal", update).await.unwrap();
    let web = socket("hal", "w1", Web);
    backend.connect(&web).await.unwrap();
    assert_eq!(probe.next_presence("hal").await.view.status, Shown::Online);

    let active_at = Instant::now();
    backend
        .device_event(&web, DeviceEvent::Activity)
        .await
        .unwrap();
    let away = probe.next_presence("hal").await;
    assert_eq!(away.view.status, Shown::Away);
    let idle_after = active_at.elapsed();
    assert!(
        idle_after >= limit.duration() - Duration::from_millis(100),
        "away after {idle_after:?}, before the {limit:?} limit"
    );
    backend
        .device_event(&web, DeviceEvent::Activity)
        .await
        .unwrap();
    assert_eq!(probe.next_presence("hal").await.view.status, Shown::Online);
}

/// D3, D4, D5: lock, sleep (desktop) and background (mobile) make the
/// device away and their opposites bring it back, with auto-away off.
pub async fn d3_d5_lock_sleep_and_background_apply_even_without_auto_away<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let rows = [
        ("ivy", Desktop, DeviceEvent::Lock, DeviceEvent::Unlock),
        ("jon", Desktop, DeviceEvent::Sleep, DeviceEvent::Wake),
        (
            "kim",
            Mobile,
            DeviceEvent::Background,
            DeviceEvent::Foreground,
        ),
    ];
    for (user, platform, away_event, back_event) in rows {
        let no_auto_away = PreferencesUpdate {
            auto_away: Some(false),
            idle_time_limit: None,
        };
        backend.set_preferences(user, no_auto_away).await.unwrap();
        let device = socket(user, "d", platform);
        backend.connect(&device).await.unwrap();
        assert_eq!(probe.next_presence(user).await.view.status, Shown::Online);
        backend.device_event(&device, away_event).await.unwrap();
        let away = probe.next_presence(user).await;
        assert_eq!(away.view.status, Shown::Away, "{platform} {away_event}");
        backend.device_event(&device, back_event).await.unwrap();
        let back = probe.next_presence(user).await;
        assert_eq!(back.view.status, Shown::Online, "{platform} {back_event}");
    }
}

/// D6: a sleeping desktop is away, then offline once its connection is
/// lost and the grace ends.
pub async fn d6_sleep_then_lost_connection_goes_offline_after_the_grace<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let desktop = socket("lia", "d1", Desktop);
    backend.connect(&desktop).await.unwrap();
    assert_eq!(probe.next_presence("lia").await.view.status, Shown::Online);
    backend
        .device_event(&desktop, DeviceEvent::Sleep)
        .await
        .unwrap();
    assert_eq!(probe.next_presence("lia").await.view.status, Shown::Away);
    backend.disconnect(&desktop, SocketEnd::Lost).await.unwrap();
    // Still away during the grace (no update), then offline.
    assert_eq!(probe.next_presence("lia").await.view, offline_view());
}

/// D7: a dropped socket shows away for the grace period, then offline.
pub async fn d7_lost_socket_is_away_for_the_grace_then_offline<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let grace = HarnessConfig::default().disconnect_grace;
    let mut probe = Probe::new(&backend);
    let phone = socket("lea", "m1", Mobile);
    backend.connect(&phone).await.unwrap();
    assert_eq!(probe.next_presence("lea").await.view.status, Shown::Online);

    let lost_at = Instant::now();
    backend.disconnect(&phone, SocketEnd::Lost).await.unwrap();
    assert_eq!(probe.next_presence("lea").await.view.status, Shown::Away);
    let me = backend.self_state("lea").await.unwrap();
    assert_eq!(me.view.devices, 1, "the device stays during the grace");
    assert_eq!(probe.next_presence("lea").await.view, offline_view());
    let gone_after = lost_at.elapsed();
    assert!(
        gone_after >= grace - Duration::from_millis(50),
        "offline after {gone_after:?}, inside the {grace:?} grace"
    );
    assert_eq!(backend.self_state("lea").await.unwrap().view.devices, 0);
}

/// D7: a clean close (bye, close frame) removes the device at once.
pub async fn d7_clean_close_is_offline_at_once<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let web = socket("max", "w1", Web);
    backend.connect(&web).await.unwrap();
    assert_eq!(probe.next_presence("max").await.view.status, Shown::Online);
    backend.disconnect(&web, SocketEnd::Clean).await.unwrap();
    assert_eq!(
        probe.next_presence("max").await.view,
        offline_view(),
        "no away in between"
    );
}

/// D7: a reconnect inside the grace resumes the device; the grace's end
/// does not remove it. (Sentinel: `sid` loses its socket after `ned` and
/// goes offline after `ned`'s grace would have ended.)
pub async fn d7_reconnect_inside_the_grace_resumes_the_device<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let ned = socket("ned", "w1", Web);
    backend.connect(&ned).await.unwrap();
    assert_eq!(probe.next_presence("ned").await.view.status, Shown::Online);
    backend.disconnect(&ned, SocketEnd::Lost).await.unwrap();
    assert_eq!(probe.next_presence("ned").await.view.status, Shown::Away);
    backend.connect(&reconnect(&ned)).await.unwrap();
    assert_eq!(probe.next_presence("ned").await.view.status, Shown::Online);

    let sid = socket("sid", "w1", Web);
    backend.connect(&sid).await.unwrap();
    backend.disconnect(&sid, SocketEnd::Lost).await.unwrap();
    probe
        .presence_until("sid", "offline after the grace", |p| {
            p.view.status == Shown::Offline
        })
        .await;
    probe.assert_no_pending_presence("ned");
    assert_eq!(
        read_presence(&backend, "ned").await.view.status,
        Shown::Online
    );
    assert_eq!(backend.self_state("ned").await.unwrap().view.devices, 1);
}

/// D7: when a device reconnects, the old socket's late disconnect is
/// ignored (it still stops counting as a socket, X1).
pub async fn d7_late_disconnect_of_a_replaced_socket_is_ignored<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let first = socket("oli", "d1", Desktop);
    let second = reconnect(&first);
    backend.connect(&first).await.unwrap();
    assert_eq!(probe.next_presence("oli").await.view.status, Shown::Online);
    backend.connect(&second).await.unwrap();

    // The gateway calls `disconnect` once per socket, replaced or not.
    backend.disconnect(&first, SocketEnd::Lost).await.unwrap();
    let me = backend.self_state("oli").await.unwrap();
    assert_eq!(me.view.status, SelfStatus::Online);
    assert_eq!(me.view.devices, 1);
    wait_for_count(&backend, 1).await;

    // Had the lost disconnect counted, `away` would come first.
    backend.disconnect(&second, SocketEnd::Clean).await.unwrap();
    assert_eq!(probe.next_presence("oli").await.view, offline_view());
}

// ---------------------------------------------------------------------------
// M3, W3 and T6 across restarts

/// M3: chosen status, text and preferences survive a restart, and versions
/// keep growing (W3).
pub async fn m3_status_text_and_preferences_survive_a_restart<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    let lunch = request(Some(Chosen::Busy), Some("Out for lunch"), None);
    backend
        .set_status("quinn", Some(&profile("quinn")), lunch)
        .await
        .unwrap();
    let prefs = PreferencesUpdate {
        auto_away: Some(false),
        idle_time_limit: Some(one_second()),
    };
    let before = backend.set_preferences("quinn", prefs).await.unwrap();

    h.restart().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let me = backend.self_state("quinn").await.unwrap();
    assert_eq!(me.view.chosen, Chosen::Busy);
    assert_eq!(text(&me.view.text), Some("Out for lunch"));
    let expected = EffectivePreferences {
        auto_away: false,
        idle_time_limit: one_second(),
    };
    assert_eq!(me.view.preferences, expected);
    assert!(me.version >= before.version, "W3: no going back");

    backend.connect(&socket("quinn", "w1", Web)).await.unwrap();
    let busy = probe.next_presence("quinn").await;
    assert_eq!(busy.view.status, Shown::Busy);
    assert_eq!(text(&busy.view.text), Some("Out for lunch"));
    assert!(busy.version > before.version);
}

/// M3, C2, C3: a selected custom status survives a restart, and an admin's
/// rename after it still reaches the user.
pub async fn m3_custom_status_selection_survives_a_restart<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    let meeting = backend
        .create_custom_status(name("In a Meeting"), Shown::Busy)
        .await
        .unwrap();
    backend
        .use_custom_status("rae", None, &meeting.id)
        .await
        .unwrap();

    h.restart().await;
    let backend = h.backend();
    assert_eq!(
        backend.custom_statuses().await.unwrap(),
        vec![meeting.clone()]
    );
    let me = backend.self_state("rae").await.unwrap();
    assert_eq!(me.view.custom_status.as_ref(), Some(&meeting.id));
    assert_eq!(me.view.chosen, Chosen::Busy);
    assert_eq!(text(&me.view.text), Some("In a Meeting"));

    let mut probe = Probe::new(&backend);
    backend
        .update_custom_status(&meeting.id, Some(name("Workshop")), None)
        .await
        .unwrap();
    let me = probe
        .settle_self("rae", "renamed", |me| {
            text(&me.view.text) == Some("Workshop")
        })
        .await;
    assert_eq!(me.view.custom_status.as_ref(), Some(&meeting.id));
}

/// W3 across a restart: the devices are gone, so the user's view changed,
/// and its version must exceed every version published before, or
/// watchers that drop stale versions keep showing the user online.
pub async fn w3_versions_after_a_restart_exceed_every_version_before<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    // The profile makes the user known to the durable store.
    backend.connect(&socket("sam", "w1", Web)).await.unwrap();
    let online = probe.next_presence("sam").await;
    assert_eq!(online.view.status, Shown::Online);

    h.restart().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let offline = probe
        .settle_presence("sam", "offline after the restart", |p| {
            p.view.status == Shown::Offline
        })
        .await;
    assert!(
        offline.version > online.version,
        "W3: offline at version {} after online at {}",
        offline.version,
        online.version
    );
    let me = backend.self_state("sam").await.unwrap();
    assert!(me.version > online.version);
}

/// T6: at expiry the status and text in effect before come back.
pub async fn t6_expiry_restores_the_previous_status<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    backend.connect(&socket("tia", "w1", Web)).await.unwrap();
    assert_eq!(probe.next_presence("tia").await.view.status, Shown::Online);
    let focus = request(Some(Chosen::Busy), Some("Focus"), None);
    backend.set_status("tia", None, focus).await.unwrap();
    assert_eq!(probe.next_presence("tia").await.view.status, Shown::Busy);

    let until = now() + Duration::from_millis(300);
    let brb = request(Some(Chosen::Away), Some("brb"), Some(until));
    let me = backend.set_status("tia", None, brb).await.unwrap();
    assert_eq!(me.view.expires_at, Some(until));
    let away = probe.next_presence("tia").await;
    assert_eq!(
        (away.view.status, text(&away.view.text)),
        (Shown::Away, Some("brb"))
    );

    let restored = probe.next_presence("tia").await;
    assert!(now() >= until, "restored before the expiry");
    assert_eq!(restored.view.status, Shown::Busy);
    assert_eq!(text(&restored.view.text), Some("Focus"));
    let me = backend.self_state("tia").await.unwrap();
    assert_eq!(me.view.expires_at, None);
    assert_eq!(me.view.chosen, Chosen::Busy);
}

/// T6, M3: an expiry set before a restart still fires after it.
pub async fn t6_expiry_survives_a_restart<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    let until = now() + Duration::from_secs(1);
    let call = request(Some(Chosen::Busy), Some("On a call"), Some(until));
    backend.set_status("uma", None, call).await.unwrap();

    h.restart().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let me = backend.self_state("uma").await.unwrap();
    assert!(now() < until, "the restart took longer than the expiry");
    assert_eq!(me.view.chosen, Chosen::Busy);
    assert_eq!(me.view.expires_at, Some(until));

    let me = probe
        .settle_self("uma", "back to online", |me| {
            me.view.chosen == Chosen::Online
        })
        .await;
    assert!(now() >= until, "restored before the expiry");
    assert_eq!(me.view.text, None);
    assert_eq!(me.view.expires_at, None);
}

/// T6: an expiry that passed while the service was down is applied when it
/// starts.
pub async fn t6_expiry_that_passed_while_stopped_applies_at_start<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    backend
        .set_status("vic", None, choose(Chosen::Away))
        .await
        .unwrap();
    let until = now() + Duration::from_millis(200);
    let before = backend
        .set_status("vic", None, request(Some(Chosen::Busy), None, Some(until)))
        .await
        .unwrap();
    drop(backend);

    h.stop().await;
    // The scenario is "the expiry passes while stopped": wait for the
    // backends' clock, the wall clock, to pass it. (No backend takes a
    // clock from the harness: the aggregator reads the wall clock.)
    wait_until(
        "the wall clock to pass the expiry",
        DEADLINE,
        async || now(),
        |&t| t > until,
    )
    .await;
    h.resume().await;

    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let me = probe
        .settle_self("vic", "the expiry applied", |me| {
            me.view.chosen == Chosen::Away
        })
        .await;
    assert_eq!(me.view.expires_at, None);
    assert!(me.version > before.version, "W3");
}

// ---------------------------------------------------------------------------
// S1, T5, I2

/// S1: settings round-trip, are published, merge partial patches and
/// survive a restart.
pub async fn s1_settings_round_trip_are_published_and_survive_a_restart<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    assert_eq!(
        *backend.settings().await.unwrap(),
        WorkspaceSettings::default()
    );

    let changed = WorkspaceSettings {
        allow_custom_status_text: false,
        allow_invisible: false,
        calendar_integration: true,
        default_auto_away: false,
        default_idle_time_limit: IdleTimeLimit::new(900).unwrap(),
        cap: 5000,
    };
    let patch = SettingsPatch {
        allow_custom_status_text: Some(false),
        allow_invisible: Some(false),
        calendar_integration: Some(true),
        default_auto_away: Some(false),
        default_idle_time_limit: Some(IdleTimeLimit::new(900).unwrap()),
        cap: Some(5000),
    };
    assert_eq!(*backend.update_settings(patch).await.unwrap(), changed);
    assert_eq!(*probe.next_settings().await, changed);
    assert_eq!(*backend.settings().await.unwrap(), changed);

    let only_cap = SettingsPatch {
        cap: Some(10),
        ..SettingsPatch::default()
    };
    let merged = WorkspaceSettings { cap: 10, ..changed };
    assert_eq!(*backend.update_settings(only_cap).await.unwrap(), merged);
    assert_eq!(*probe.next_settings().await, merged);

    h.restart().await;
    let backend = h.backend();
    assert_eq!(*backend.settings().await.unwrap(), merged);
    assert_eq!(backend.cap_state().await.unwrap().cap, 10);
}

/// S1: turning the workspace's default auto-away off re-evaluates users on
/// the default: an idle device shows online; turning it on, away again.
pub async fn s1_turning_default_auto_away_off_makes_an_idle_device_online<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let web = socket("wes", "w1", Web);
    backend.connect(&web).await.unwrap();
    assert_eq!(probe.next_presence("wes").await.view.status, Shown::Online);
    backend.device_event(&web, DeviceEvent::Idle).await.unwrap();
    assert_eq!(probe.next_presence("wes").await.view.status, Shown::Away);

    let off = SettingsPatch {
        default_auto_away: Some(false),
        ..SettingsPatch::default()
    };
    backend.update_settings(off).await.unwrap();
    assert_eq!(probe.next_presence("wes").await.view.status, Shown::Online);
    let me = backend.self_state("wes").await.unwrap();
    assert!(
        !me.view.preferences.auto_away,
        "the default reaches the user"
    );

    let on = SettingsPatch {
        default_auto_away: Some(true),
        ..SettingsPatch::default()
    };
    backend.update_settings(on).await.unwrap();
    assert_eq!(probe.next_presence("wes").await.view.status, Shown::Away);
}

/// S1: a user's own auto-away choice is not moved by the workspace default.
/// (Sentinel: `yan` follows the default and comes back online.)
pub async fn s1_own_preferences_beat_workspace_defaults<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let own = PreferencesUpdate {
        auto_away: Some(true),
        idle_time_limit: None,
    };
    backend.set_preferences("xia", own).await.unwrap();
    for user in ["xia", "yan"] {
        let web = socket(user, "w1", Web);
        backend.connect(&web).await.unwrap();
        assert_eq!(probe.next_presence(user).await.view.status, Shown::Online);
        backend.device_event(&web, DeviceEvent::Idle).await.unwrap();
        assert_eq!(probe.next_presence(user).await.view.status, Shown::Away);
    }

    let off = SettingsPatch {
        default_auto_away: Some(false),
        ..SettingsPatch::default()
    };
    backend.update_settings(off).await.unwrap();
    assert_eq!(probe.next_presence("yan").await.view.status, Shown::Online);
    probe.assert_no_pending_presence("xia");
    assert_eq!(
        read_presence(&backend, "xia").await.view.status,
        Shown::Away
    );
    let me = backend.self_state("xia").await.unwrap();
    assert!(me.view.preferences.auto_away);
}

/// T5: with free text disabled, texts are refused but statuses, clearing
/// the text and admin-defined custom statuses still work.
pub async fn t5_disabled_free_text_still_allows_custom_statuses<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let meeting = backend
        .create_custom_status(name("In a Meeting"), Shown::Busy)
        .await
        .unwrap();
    let no_text = SettingsPatch {
        allow_custom_status_text: Some(false),
        ..SettingsPatch::default()
    };
    backend.update_settings(no_text).await.unwrap();

    let with_text = request(Some(Chosen::Busy), Some("Lunch"), None);
    expect_rule(
        "T5 free text",
        backend.set_status("zoe", None, with_text).await,
        "status_text_disabled",
    );
    let me = backend
        .set_status("zoe", None, choose(Chosen::Away))
        .await
        .unwrap();
    assert_eq!(me.view.chosen, Chosen::Away);
    let clear = request(None, Some(""), None);
    backend.set_status("zoe", None, clear).await.unwrap();
    let me = backend
        .use_custom_status("zoe", None, &meeting.id)
        .await
        .unwrap();
    assert_eq!(text(&me.view.text), Some("In a Meeting"));
}

/// I2: with invisible disabled, new invisible requests are refused; users
/// already invisible stay invisible and may repeat their choice.
pub async fn i2_disabling_invisible_keeps_users_already_invisible<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    backend
        .set_status("sue", None, choose(Chosen::Invisible))
        .await
        .unwrap();
    let hidden = backend
        .create_custom_status(name("Hidden"), Shown::Offline)
        .await
        .unwrap();
    let disable = SettingsPatch {
        allow_invisible: Some(false),
        ..SettingsPatch::default()
    };
    backend.update_settings(disable).await.unwrap();

    expect_rule(
        "I2 new invisible",
        backend
            .set_status("tom", None, choose(Chosen::Invisible))
            .await,
        "invisible_disabled",
    );
    expect_rule(
        "I2 custom status mapped to offline",
        backend.use_custom_status("tom", None, &hidden.id).await,
        "invisible_disabled",
    );
    assert_eq!(
        backend.self_state("sue").await.unwrap().view.chosen,
        Chosen::Invisible
    );
    let again = backend
        .set_status("sue", None, choose(Chosen::Invisible))
        .await;
    assert_eq!(again.unwrap().view.chosen, Chosen::Invisible);
}

// ---------------------------------------------------------------------------
// C1–C3

/// C1: create, list (by name), rename, remap and delete custom statuses;
/// names are unique ignoring case; everything survives a restart.
pub async fn c1_custom_status_crud_with_case_insensitive_unique_names<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    assert!(backend.custom_statuses().await.unwrap().is_empty());

    let meeting = backend
        .create_custom_status(name("In a Meeting"), Shown::Busy)
        .await
        .unwrap();
    assert_eq!(meeting.name.as_str(), "In a Meeting");
    assert_eq!(meeting.status_type, Shown::Busy);
    expect_rule(
        "C1 the same name in other case",
        backend
            .create_custom_status(name("in a MEETING"), Shown::Away)
            .await,
        "custom_status_name_taken",
    );
    let lunch = backend
        .create_custom_status(name("Lunch"), Shown::Away)
        .await
        .unwrap();
    assert_ne!(lunch.id, meeting.id);
    assert_eq!(names(&backend).await, ["In a Meeting", "Lunch"]);

    expect_rule(
        "C1 renaming onto a taken name",
        backend
            .update_custom_status(&lunch.id, Some(name("IN A MEETING")), None)
            .await,
        "custom_status_name_taken",
    );
    // Renaming to another case of its own name is fine.
    let lunch = backend
        .update_custom_status(&lunch.id, Some(name("LUNCH")), Some(Shown::Offline))
        .await
        .unwrap();
    assert_eq!(
        (lunch.name.as_str(), lunch.status_type),
        ("LUNCH", Shown::Offline)
    );
    assert_eq!(names(&backend).await, ["In a Meeting", "LUNCH"]);

    let deleted = backend.delete_custom_status(&meeting.id).await.unwrap();
    assert_eq!(deleted.id, meeting.id);
    expect_rule(
        "C1 deleting twice",
        backend.delete_custom_status(&meeting.id).await,
        "custom_status_not_found",
    );
    assert_eq!(
        backend.custom_statuses().await.unwrap(),
        vec![lunch.clone()]
    );

    h.restart().await;
    let backend = h.backend();
    assert_eq!(
        backend.custom_statuses().await.unwrap(),
        vec![lunch.clone()]
    );
    // Ids are never reused, not even after a restart.
    let again = backend
        .create_custom_status(name("In a Meeting"), Shown::Busy)
        .await
        .unwrap();
    assert_ne!(again.id, lunch.id);
    assert_ne!(again.id, meeting.id);
}

/// C2: selecting a custom status sets the presence to its type (`offline`
/// is invisible) and the text to its name; a plain status unselects it.
pub async fn c2_selecting_a_custom_status_sets_presence_and_text<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let dnd = backend
        .create_custom_status(name("Do not disturb"), Shown::Busy)
        .await
        .unwrap();
    let fishing = backend
        .create_custom_status(name("Gone fishing"), Shown::Offline)
        .await
        .unwrap();
    backend.connect(&socket("zed", "w1", Web)).await.unwrap();
    assert_eq!(probe.next_presence("zed").await.view.status, Shown::Online);

    let me = backend
        .use_custom_status("zed", None, &dnd.id)
        .await
        .unwrap();
    assert_eq!(me.view.chosen, Chosen::Busy);
    assert_eq!(me.view.custom_status.as_ref(), Some(&dnd.id));
    let busy = probe.next_presence("zed").await;
    assert_eq!(
        (busy.view.status, text(&busy.view.text)),
        (Shown::Busy, Some("Do not disturb"))
    );

    let me = backend
        .use_custom_status("zed", None, &fishing.id)
        .await
        .unwrap();
    assert_eq!(me.view.chosen, Chosen::Invisible);
    assert_eq!(me.view.status, SelfStatus::Invisible);
    assert_eq!(text(&me.view.text), Some("Gone fishing"));
    assert_eq!(probe.next_presence("zed").await.view, offline_view());

    let me = backend
        .set_status("zed", None, choose(Chosen::Online))
        .await
        .unwrap();
    assert_eq!(me.view.custom_status, None);
    assert_eq!(me.view.text, None);
}

/// C3: renaming or remapping a custom status updates every user who has it
/// selected, connected or not; deleting it leaves them their presence and
/// the name as plain text. Users with the same text typed by hand are not
/// touched.
pub async fn c3_renaming_and_remapping_updates_users_and_deleting_keeps_the_text<
    H: BackendHarness,
>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let meeting = backend
        .create_custom_status(name("In a Meeting"), Shown::Busy)
        .await
        .unwrap();
    for user in ["amy", "cal"] {
        backend.connect(&socket(user, "w1", Web)).await.unwrap();
        assert_eq!(probe.next_presence(user).await.view.status, Shown::Online);
    }
    backend
        .use_custom_status("amy", None, &meeting.id)
        .await
        .unwrap();
    backend
        .use_custom_status("ben", None, &meeting.id)
        .await
        .unwrap();
    let by_hand = request(Some(Chosen::Busy), Some("In a Meeting"), None);
    backend.set_status("cal", None, by_hand).await.unwrap();
    for user in ["amy", "cal"] {
        assert_eq!(probe.next_presence(user).await.view.status, Shown::Busy);
    }

    let workshop = backend
        .update_custom_status(&meeting.id, Some(name("Workshop")), Some(Shown::Away))
        .await
        .unwrap();
    assert_eq!(workshop.name.as_str(), "Workshop");
    let amy = probe.next_presence("amy").await;
    assert_eq!(
        (amy.view.status, text(&amy.view.text)),
        (Shown::Away, Some("Workshop"))
    );
    let ben = probe
        .settle_self("ben", "remapped", |me| me.view.chosen == Chosen::Away)
        .await;
    assert_eq!(text(&ben.view.text), Some("Workshop"));
    let cal = read_presence(&backend, "cal").await;
    assert_eq!(
        (cal.view.status, text(&cal.view.text)),
        (Shown::Busy, Some("In a Meeting"))
    );

    backend.delete_custom_status(&meeting.id).await.unwrap();
    for user in ["amy", "ben"] {
        let me = probe
            .settle_self(user, "unselected", |me| me.view.custom_status.is_none())
            .await;
        assert_eq!(me.view.chosen, Chosen::Away, "{user} keeps the presence");
        assert_eq!(
            text(&me.view.text),
            Some("Workshop"),
            "{user} keeps the text"
        );
    }
    let amy = read_presence(&backend, "amy").await;
    assert_eq!(
        (amy.view.status, text(&amy.view.text)),
        (Shown::Away, Some("Workshop"))
    );
    probe.assert_no_pending_presence("cal");
}

// ---------------------------------------------------------------------------
// X1–X5

/// X1, X5: the cap counts sockets (a device in its grace is not one),
/// remembers the peak, and reads back with its cap and enabled flag.
pub async fn x1_x5_cap_state_counts_sockets_and_tracks_the_peak<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let start = backend.cap_state().await.unwrap();
    assert_eq!((start.cap, start.count, start.peak), (200, 0, 0));
    assert!(start.enabled);

    let web = socket("al", "w1", Web);
    let phone = socket("al", "m1", Mobile);
    let other = socket("bo", "w1", Web);
    for s in [&web, &phone, &other] {
        backend.connect(s).await.unwrap();
    }
    let state = wait_for_count(&backend, 3).await;
    assert_eq!(state.peak, 3);
    backend.disconnect(&phone, SocketEnd::Lost).await.unwrap();
    wait_for_count(&backend, 2).await;
    backend.disconnect(&other, SocketEnd::Clean).await.unwrap();
    let state = wait_for_count(&backend, 1).await;
    assert_eq!(state.peak, 3, "the peak stays");
    assert!(state.enabled);
}

/// X1: cap 0 means unlimited; lowering the cap below the count disables
/// the broadcast (X2) like a connection over the cap does.
pub async fn x1_cap_zero_is_unlimited_and_lowering_the_cap_below_the_count_disables<
    H: BackendHarness,
>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    set_cap(&backend, 0).await;
    for user in ["c0", "c1", "c2"] {
        backend.connect(&socket(user, "w1", Web)).await.unwrap();
    }
    let state = wait_for_count(&backend, 3).await;
    assert_eq!(state.cap, 0);
    assert!(state.enabled, "0 means unlimited");

    set_cap(&backend, 2).await;
    assert!(!probe.next_broadcast().await);
    assert!(!backend.cap_state().await.unwrap().enabled);
}

/// X2, X3: one connection over the cap disables the broadcast, which is
/// announced; connections, writes and reads keep working.
pub async fn x2_x3_exceeding_the_cap_disables_the_broadcast_and_reads_keep_working<
    H: BackendHarness,
>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    set_cap(&backend, 2).await;
    for user in ["u0", "u1"] {
        let info = backend.connect(&socket(user, "w1", Web)).await.unwrap();
        assert!(info.presence_active);
    }
    wait_for_count(&backend, 2).await;
    assert!(
        backend.cap_state().await.unwrap().enabled,
        "at the cap is fine"
    );
    backend.connect(&socket("u2", "w1", Web)).await.unwrap();
    assert!(!probe.next_broadcast().await, "X3: disabled, and said so");
    let state = backend.cap_state().await.unwrap();
    assert!(!state.enabled);
    assert_eq!(state.peak, 3);

    let late = backend.connect(&socket("u3", "w1", Web)).await.unwrap();
    assert!(!late.presence_active, "X2: new sockets learn it at once");
    backend
        .set_status("u0", None, choose(Chosen::Busy))
        .await
        .unwrap();
    let u0 = probe
        .settle_presence("u0", "busy", |p| p.view.status == Shown::Busy)
        .await;
    assert_eq!(
        read_presence(&backend, "u0").await,
        u0,
        "X2: reads still work"
    );
}

/// X4: re-enabling is refused while the count is not below the cap, then
/// allowed and announced (X3); enabling an enabled broadcast is a no-op.
pub async fn x4_reenable_is_refused_until_the_count_is_below_the_cap<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    set_cap(&backend, 2).await;
    let sockets: Vec<_> = ["v0", "v1", "v2"]
        .into_iter()
        .map(|u| socket(u, "w1", Web))
        .collect();
    for s in &sockets {
        backend.connect(s).await.unwrap();
    }
    assert!(!probe.next_broadcast().await);
    expect_rule(
        "X4 over the cap",
        backend.enable_broadcast().await,
        "broadcast_enable_refused",
    );

    backend
        .disconnect(&sockets[0], SocketEnd::Clean)
        .await
        .unwrap();
    wait_for_count(&backend, 2).await;
    expect_rule(
        "X4 at the cap",
        backend.enable_broadcast().await,
        "broadcast_enable_refused",
    );

    backend
        .disconnect(&sockets[1], SocketEnd::Clean)
        .await
        .unwrap();
    wait_for_count(&backend, 1).await;
    let state = backend.enable_broadcast().await.unwrap();
    assert!(state.enabled);
    assert_eq!((state.count, state.peak), (1, 3));
    assert!(
        probe.next_broadcast().await,
        "X3: active again, and said so"
    );
    assert!(backend.enable_broadcast().await.unwrap().enabled);
    assert!(backend.cap_state().await.unwrap().enabled);
}

/// X4: with the count back under the cap, a raised cap, and a restart, the
/// broadcast stays disabled until an admin enables it.
pub async fn x4_the_broadcast_never_reenables_itself_not_even_across_a_restart<
    H: BackendHarness,
>() {
    let mut h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    set_cap(&backend, 1).await;
    let sockets = [socket("w0", "w1", Web), socket("w1", "w1", Web)];
    for s in &sockets {
        backend.connect(s).await.unwrap();
    }
    assert!(!probe.next_broadcast().await);
    for s in &sockets {
        backend.disconnect(s, SocketEnd::Clean).await.unwrap();
    }
    let state = wait_for_count(&backend, 0).await;
    assert!(!state.enabled, "under the cap, still disabled");
    set_cap(&backend, 100).await;
    assert!(
        !backend.cap_state().await.unwrap().enabled,
        "a raised cap does not enable"
    );

    h.restart().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let state = backend.cap_state().await.unwrap();
    assert!(!state.enabled, "a restart does not enable");
    assert_eq!(state.cap, 100);
    let info = backend.connect(&socket("w2", "w1", Web)).await.unwrap();
    assert!(!info.presence_active);

    assert!(backend.enable_broadcast().await.unwrap().enabled);
    assert!(probe.next_broadcast().await);
}

// ---------------------------------------------------------------------------
// K1, K2

/// K2: a busy calendar event makes the user busy; its end restores the
/// status before. Events come from a desktop or an integration.
pub async fn k2_calendar_busy_then_restore<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    enable_calendar(&backend).await;
    backend
        .connect(&socket("pat", "d1", Desktop))
        .await
        .unwrap();
    assert_eq!(probe.next_presence("pat").await.view.status, Shown::Online);

    for source in [CalendarSource::Device(Desktop), CalendarSource::Integration] {
        let me = backend
            .calendar("pat", "standup".into(), true, source)
            .await
            .unwrap();
        assert_eq!(me.view.status, SelfStatus::Busy, "{source:?}");
        assert!(me.view.calendar_busy);
        assert_eq!(me.view.chosen, Chosen::Online, "an overlay, not a choice");
        assert_eq!(probe.next_presence("pat").await.view.status, Shown::Busy);
        let me = backend
            .calendar("pat", "standup".into(), false, source)
            .await
            .unwrap();
        assert_eq!(me.view.status, SelfStatus::Online);
        assert!(!me.view.calendar_busy);
        assert_eq!(probe.next_presence("pat").await.view.status, Shown::Online);
    }
}

/// K2: overlapping busy events keep the user busy until the last ends.
pub async fn k2_overlapping_events_keep_busy_until_the_last_ends<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    enable_calendar(&backend).await;
    backend
        .connect(&socket("quy", "d1", Desktop))
        .await
        .unwrap();
    assert_eq!(probe.next_presence("quy").await.view.status, Shown::Online);

    let source = CalendarSource::Integration;
    backend
        .calendar("quy", "a".into(), true, source)
        .await
        .unwrap();
    assert_eq!(probe.next_presence("quy").await.view.status, Shown::Busy);
    backend
        .calendar("quy", "b".into(), true, source)
        .await
        .unwrap();
    let me = backend
        .calendar("quy", "a".into(), false, source)
        .await
        .unwrap();
    assert_eq!(me.view.status, SelfStatus::Busy, "b still runs");
    let me = backend
        .calendar("quy", "b".into(), false, source)
        .await
        .unwrap();
    assert_eq!(me.view.status, SelfStatus::Online);
    assert_eq!(
        probe.next_presence("quy").await.view.status,
        Shown::Online,
        "no flicker"
    );
}

/// K2: a status the user chooses during an event stands when it ends.
pub async fn k2_a_choice_during_the_event_stands<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    enable_calendar(&backend).await;
    backend
        .connect(&socket("ros", "d1", Desktop))
        .await
        .unwrap();
    assert_eq!(probe.next_presence("ros").await.view.status, Shown::Online);

    let source = CalendarSource::Device(Desktop);
    backend
        .calendar("ros", "review".into(), true, source)
        .await
        .unwrap();
    assert_eq!(probe.next_presence("ros").await.view.status, Shown::Busy);
    backend
        .set_status("ros", None, choose(Chosen::Away))
        .await
        .unwrap();
    assert_eq!(probe.next_presence("ros").await.view.status, Shown::Away);
    let me = backend
        .calendar("ros", "review".into(), false, source)
        .await
        .unwrap();
    assert_eq!(me.view.status, SelfStatus::Away);
    assert_eq!(me.view.chosen, Chosen::Away);
    assert_eq!(
        read_presence(&backend, "ros").await.view.status,
        Shown::Away
    );
}

/// K2, M3: calendar claims are durable: an event in progress is still
/// busy after a restart, and its end still restores.
pub async fn k2_calendar_claims_survive_a_restart<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    enable_calendar(&backend).await;
    let source = CalendarSource::Integration;
    backend
        .calendar("ula", "offsite".into(), true, source)
        .await
        .unwrap();

    h.restart().await;
    let backend = h.backend();
    let me = backend.self_state("ula").await.unwrap();
    assert!(me.view.calendar_busy);
    let mut probe = Probe::new(&backend);
    backend
        .connect(&socket("ula", "d1", Desktop))
        .await
        .unwrap();
    assert_eq!(probe.next_presence("ula").await.view.status, Shown::Busy);
    backend
        .calendar("ula", "offsite".into(), false, source)
        .await
        .unwrap();
    assert_eq!(probe.next_presence("ula").await.view.status, Shown::Online);
}

// ---------------------------------------------------------------------------
// Reads

/// Unknown users are offline at version 0, in the order asked; the backend
/// is ready.
pub async fn unknown_users_are_offline_at_version_zero<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    assert!(backend.ready().await);
    assert!(backend.presence(&[]).await.unwrap().is_empty());

    let mut probe = Probe::new(&backend);
    backend.connect(&socket("known", "w1", Web)).await.unwrap();
    probe.next_presence("known").await;
    let asked = [id("nobody"), id("known"), id("ghost")];
    let got = backend.presence(&asked).await.unwrap();
    let users: Vec<&str> = got.iter().map(|p| &*p.user).collect();
    assert_eq!(users, ["nobody", "known", "ghost"]);
    for unknown in [&got[0], &got[2]] {
        assert_eq!(unknown.view, offline_view());
        assert_eq!(unknown.version, 0);
    }
    assert_eq!(got[1].view.status, Shown::Online);

    let me = backend.self_state("nobody").await.unwrap();
    assert_eq!(
        (me.view.status, me.view.chosen, me.version),
        (SelfStatus::Offline, Chosen::Online, 0)
    );
    assert!(
        backend
            .user_by_username("nobody_name")
            .await
            .unwrap()
            .is_none()
    );
    let listed = backend
        .list_not_offline(Some(&[id("nobody")]))
        .await
        .unwrap();
    assert!(listed.is_empty());
}

/// `list_not_offline`: users others see as not offline, with profiles;
/// invisible (A3) and deviceless users are left out.
pub async fn list_not_offline_lists_visible_users_with_their_profiles<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    for user in ["al", "bo", "cy"] {
        backend.connect(&socket(user, "w1", Web)).await.unwrap();
        probe.next_presence(user).await;
    }
    backend
        .set_status("bo", None, choose(Chosen::Busy))
        .await
        .unwrap();
    probe.next_presence("bo").await;
    backend
        .set_status("cy", None, choose(Chosen::Invisible))
        .await
        .unwrap();
    probe.next_presence("cy").await;
    backend
        .set_status("di", Some(&profile("di")), choose(Chosen::Busy))
        .await
        .unwrap();

    let mut all = backend.list_not_offline(None).await.unwrap();
    all.sort_by(|a, b| a.presence.user.cmp(&b.presence.user));
    let rows: Vec<_> = all
        .iter()
        .map(|l| (&*l.presence.user, l.presence.view.status, l.profile.clone()))
        .collect();
    assert_eq!(
        rows,
        [
            ("al", Shown::Online, profile("al")),
            ("bo", Shown::Busy, profile("bo"))
        ]
    );
    assert_eq!(all[0].presence, read_presence(&backend, "al").await);

    let some = [id("al"), id("cy"), id("di"), id("nobody")];
    let listed = backend.list_not_offline(Some(&some)).await.unwrap();
    let users: Vec<&str> = listed.iter().map(|l| &*l.presence.user).collect();
    assert_eq!(users, ["al"]);
}

/// `list_changed_since`: users whose public view changed at or after the
/// time, going offline included, except the one asking.
pub async fn list_changed_since_lists_users_changed_at_or_after_the_time<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let gus = socket("gus", "w1", Web);
    for s in [&socket("ed", "w1", Web), &gus] {
        backend.connect(s).await.unwrap();
        probe.next_presence(&s.user).await;
    }

    let since = clock_tick().await;
    for user in ["fi", "hy"] {
        backend.connect(&socket(user, "w1", Web)).await.unwrap();
        probe.next_presence(user).await;
    }
    backend.disconnect(&gus, SocketEnd::Clean).await.unwrap();
    probe.next_presence("gus").await;

    let mut changed = backend.list_changed_since(since, "hy").await.unwrap();
    changed.sort_by(|a, b| a.presence.user.cmp(&b.presence.user));
    let rows: Vec<_> = changed
        .iter()
        .map(|l| (&*l.presence.user, l.presence.view.status))
        .collect();
    assert_eq!(rows, [("fi", Shown::Online), ("gus", Shown::Offline)]);
    assert_eq!(changed[0].profile, profile("fi"));
}

/// `user_by_username` follows the profile tokens carry (connect,
/// `touch_profile`, `set_status`), including a username that moves to
/// another user, and survives a restart.
pub async fn user_by_username_follows_profile_changes_and_restarts<H: BackendHarness>() {
    let mut h = H::start().await;
    let backend = h.backend();
    backend.connect(&socket("ike", "w1", Web)).await.unwrap();
    assert_eq!(username(&backend, "ike_name").await.as_deref(), Some("ike"));

    let renamed = Profile {
        username: Some("ike_new".into()),
        name: Some("Ike New".into()),
        utc_offset: None,
    };
    backend.touch_profile("ike", &renamed).await.unwrap();
    assert_eq!(username(&backend, "ike_new").await.as_deref(), Some("ike"));
    assert_eq!(username(&backend, "ike_name").await, None);

    backend
        .set_status("jo", Some(&profile("jo")), choose(Chosen::Away))
        .await
        .unwrap();
    assert_eq!(username(&backend, "jo_name").await.as_deref(), Some("jo"));
    assert_eq!(username(&backend, "nobody").await, None);

    // A username can move: `kai` now holds ike's, and ike's next rename
    // must not take it from kai.
    let moved = Profile {
        username: Some("ike_new".into()),
        name: None,
        utc_offset: None,
    };
    backend.touch_profile("kai", &moved).await.unwrap();
    assert_eq!(username(&backend, "ike_new").await.as_deref(), Some("kai"));
    let third = Profile {
        username: Some("ike_third".into()),
        name: None,
        utc_offset: None,
    };
    backend.touch_profile("ike", &third).await.unwrap();
    assert_eq!(username(&backend, "ike_new").await.as_deref(), Some("kai"));
    assert_eq!(
        username(&backend, "ike_third").await.as_deref(),
        Some("ike")
    );

    h.restart().await;
    let backend = h.backend();
    assert_eq!(
        username(&backend, "ike_third").await.as_deref(),
        Some("ike")
    );
    assert_eq!(username(&backend, "ike_new").await.as_deref(), Some("kai"));
    assert_eq!(username(&backend, "ike_name").await, None);
    assert_eq!(username(&backend, "jo_name").await.as_deref(), Some("jo"));
}

/// R3: an admin's stored profile (`put_profile`) replaces the stored one
/// whole, also for a user never seen; tokens and clients that say
/// something (`touch_profile`, a socket's profile) override only what they
/// say; listings and username lookups follow, and all of it survives a
/// restart.
pub async fn r3_stored_profiles_are_put_whole_merged_from_tokens_and_survive_a_restart<
    H: BackendHarness,
>() {
    let mut h = H::start().await;
    let backend = h.backend();
    let offset = |minutes| Some(UtcOffset::from_minutes(minutes).unwrap());
    let directory = Profile {
        username: Some("pia.s".into()),
        name: Some("Pia S".into()),
        utc_offset: offset(330),
    };
    backend.put_profile("pia", &directory).await.unwrap();
    assert_eq!(username(&backend, "pia.s").await.as_deref(), Some("pia"));

    // A token without profile claims changes nothing.
    let mut probe = Probe::new(&backend);
    let bare = Session {
        profile: Profile::default(),
        ..socket("pia", "w1", Web)
    };
    backend.connect(&bare).await.unwrap();
    probe.next_presence("pia").await;
    assert_eq!(listed_profile(&backend, "pia").await, directory);

    // A client's own UTC offset replaces only the offset.
    let reported = Profile {
        utc_offset: offset(-180),
        ..Profile::default()
    };
    backend.touch_profile("pia", &reported).await.unwrap();
    let merged = Profile {
        utc_offset: offset(-180),
        ..directory.clone()
    };
    assert_eq!(listed_profile(&backend, "pia").await, merged);

    // The next upsert replaces the profile whole: what it leaves out is
    // forgotten, the old username too.
    let renamed = Profile {
        username: Some("pia2".into()),
        ..Profile::default()
    };
    backend.put_profile("pia", &renamed).await.unwrap();
    assert_eq!(listed_profile(&backend, "pia").await, renamed);
    assert_eq!(username(&backend, "pia2").await.as_deref(), Some("pia"));
    assert_eq!(username(&backend, "pia.s").await, None);

    h.restart().await;
    let backend = h.backend();
    assert_eq!(username(&backend, "pia2").await.as_deref(), Some("pia"));
    backend.connect(&reconnect(&bare)).await.unwrap();
    let after_restart = wait_until(
        "pia listed again after the restart",
        DEADLINE,
        async || listed(&backend, "pia").await,
        Option::is_some,
    )
    .await;
    assert_eq!(after_restart, Some(renamed));
}

/// A3: status counts count each displayed status; invisible users are
/// counted apart and not online.
pub async fn a3_status_counts_do_not_count_invisible_users_online<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let mut webs = Vec::new();
    for user in ["ka", "lu", "mo", "ni"] {
        let web = socket(user, "w1", Web);
        backend.connect(&web).await.unwrap();
        probe.next_presence(user).await;
        webs.push(web);
    }
    backend
        .device_event(&webs[1], DeviceEvent::Idle)
        .await
        .unwrap();
    probe.next_presence("lu").await;
    backend
        .set_status("mo", None, choose(Chosen::Busy))
        .await
        .unwrap();
    probe.next_presence("mo").await;
    backend
        .set_status("ni", None, choose(Chosen::Invisible))
        .await
        .unwrap();
    probe.next_presence("ni").await;
    // Chosen busy without a device is offline: not counted at all.
    backend
        .set_status("ol", None, choose(Chosen::Busy))
        .await
        .unwrap();

    let expected = StatusCounts {
        online: 1,
        away: 1,
        busy: 1,
        invisible: 1,
    };
    let counts = wait_for_counts(&backend, expected).await;
    assert_eq!(counts.online_total(), 3);

    backend
        .disconnect(&webs[3], SocketEnd::Clean)
        .await
        .unwrap();
    backend
        .disconnect(&webs[0], SocketEnd::Clean)
        .await
        .unwrap();
    probe.next_presence("ka").await;
    let expected = StatusCounts {
        online: 0,
        away: 1,
        busy: 1,
        invisible: 0,
    };
    wait_for_counts(&backend, expected).await;
}

// ---------------------------------------------------------------------------
// Errors

/// Every rule a backend call can break comes back as `BackendError::Rule`
/// with its stable code, and a refused request changes nothing. (S2's
/// `idle_time_limit_too_low` and C1's `custom_status_name_invalid` are
/// refused by the `IdleTimeLimit` and `CustomStatusName` constructors
/// before a backend is called.)
pub async fn rule_errors_surface_as_rule_errors_with_stable_codes<H: BackendHarness>() {
    let h = H::start().await;
    let backend = h.backend();
    let mut probe = Probe::new(&backend);
    let web = socket("uri", "w1", Web);
    let desktop = socket("uri", "d1", Desktop);
    let phone = socket("uri", "m1", Mobile);
    for s in [&web, &desktop, &phone] {
        backend.connect(s).await.unwrap();
    }
    backend
        .create_custom_status(name("Taken"), Shown::Busy)
        .await
        .unwrap();
    let free = backend
        .create_custom_status(name("Free"), Shown::Away)
        .await
        .unwrap();
    let hidden = backend
        .create_custom_status(name("Hidden"), Shown::Offline)
        .await
        .unwrap();
    let missing = CustomStatusId::try_from("no-such-status").unwrap();
    let ghost = socket("uri", "never-connected", Web);
    let before = backend.self_state("uri").await.unwrap();

    let b = &backend;
    let too_long = "x".repeat(121);
    let past = now() - Duration::from_secs(1);
    let later = now() + Duration::from_secs(60);
    let status = |r: StatusRequest| b.set_status("uri", None, r);
    expect_rule(
        "T1 over 120 characters",
        status(request(None, Some(&too_long), None)).await,
        "status_text_too_long",
    );
    expect_rule(
        "T1 control character",
        status(request(None, Some("a\u{7}b"), None)).await,
        "status_text_invalid",
    );
    expect_rule(
        "T6 expiry in the past",
        status(request(Some(Chosen::Busy), None, Some(past))).await,
        "expiry_not_in_future",
    );
    expect_rule(
        "T6 expiry alone",
        status(request(None, None, Some(later))).await,
        "expiry_without_change",
    );
    expect_rule(
        "empty status change",
        status(StatusRequest::default()).await,
        "empty_status_change",
    );
    expect_rule(
        "D8 lock from web",
        b.device_event(&web, DeviceEvent::Lock).await,
        "unsupported_event",
    );
    expect_rule(
        "D8 background from desktop",
        b.device_event(&desktop, DeviceEvent::Background).await,
        "unsupported_event",
    );
    expect_rule(
        "D8 idle from mobile",
        b.device_event(&phone, DeviceEvent::Idle).await,
        "unsupported_event",
    );
    expect_rule(
        "event from an unknown device",
        b.device_event(&ghost, DeviceEvent::Activity).await,
        "unknown_device",
    );
    expect_rule(
        "K1 calendar off",
        b.calendar("uri", "e".into(), true, CalendarSource::Integration)
            .await,
        "calendar_disabled",
    );
    expect_rule(
        "C1 taken name",
        b.create_custom_status(name("TAKEN"), Shown::Away).await,
        "custom_status_name_taken",
    );
    expect_rule(
        "C1 rename onto a taken name",
        b.update_custom_status(&free.id, Some(name("taken")), None)
            .await,
        "custom_status_name_taken",
    );
    expect_rule(
        "C2 unknown status",
        b.use_custom_status("uri", None, &missing).await,
        "custom_status_not_found",
    );
    expect_rule(
        "C3 update unknown",
        b.update_custom_status(&missing, None, Some(Shown::Busy))
            .await,
        "custom_status_not_found",
    );
    expect_rule(
        "C3 delete unknown",
        b.delete_custom_status(&missing).await,
        "custom_status_not_found",
    );
    assert_eq!(
        b.self_state("uri").await.unwrap(),
        before,
        "refusals change nothing"
    );

    let strict = SettingsPatch {
        allow_custom_status_text: Some(false),
        allow_invisible: Some(false),
        calendar_integration: Some(true),
        cap: Some(2),
        ..SettingsPatch::default()
    };
    b.update_settings(strict).await.unwrap();
    assert!(!probe.next_broadcast().await, "3 sockets over a cap of 2");
    let before = b.self_state("uri").await.unwrap();
    let desktop_source = CalendarSource::Device(Desktop);
    expect_rule(
        "T5 free text off",
        status(request(None, Some("hi"), None)).await,
        "status_text_disabled",
    );
    expect_rule(
        "I2 invisible off",
        status(choose(Chosen::Invisible)).await,
        "invisible_disabled",
    );
    expect_rule(
        "I2 offline custom status",
        b.use_custom_status("uri", None, &hidden.id).await,
        "invisible_disabled",
    );
    expect_rule(
        "K2 calendar from mobile",
        b.calendar("uri", "e".into(), true, CalendarSource::Device(Mobile))
            .await,
        "unsupported_event",
    );
    expect_rule(
        "K2 calendar from web",
        b.calendar("uri", "e".into(), true, CalendarSource::Device(Web))
            .await,
        "unsupported_event",
    );
    expect_rule(
        "K2 empty event id",
        b.calendar("uri", String::new(), true, desktop_source).await,
        "calendar_event_id_invalid",
    );
    expect_rule(
        "K2 control character in id",
        b.calendar("uri", "a\nb".into(), true, desktop_source).await,
        "calendar_event_id_invalid",
    );
    expect_rule(
        "X4 over the cap",
        b.enable_broadcast().await,
        "broadcast_enable_refused",
    );
    assert_eq!(
        b.self_state("uri").await.unwrap(),
        before,
        "refusals change nothing"
    );

    for i in 0..presence_core::MAX_CALENDAR_EVENTS {
        b.calendar("uri", format!("event-{i}"), true, desktop_source)
            .await
            .unwrap();
    }
    expect_rule(
        "K2 too many events",
        b.calendar("uri", "one-more".into(), true, desktop_source)
            .await,
        "too_many_calendar_events",
    );
}

// ---------------------------------------------------------------------------
// Helpers

fn offline_view() -> PublicView {
    PublicView {
        status: Shown::Offline,
        text: None,
    }
}

fn text(text: &Option<StatusText>) -> Option<&str> {
    text.as_ref().map(StatusText::as_str)
}

fn name(raw: &str) -> CustomStatusName {
    CustomStatusName::parse(raw).expect("a valid custom status name")
}

/// One second: below the production floor of S2, which only the gateway
/// enforces, so timer cases finish quickly.
fn one_second() -> IdleTimeLimit {
    IdleTimeLimit::with_floor(1, 0).expect("no floor")
}

async fn names(backend: &std::sync::Arc<dyn presence_backend::Backend>) -> Vec<String> {
    let all = backend.custom_statuses().await.unwrap();
    all.iter().map(|s| s.name.as_str().to_owned()).collect()
}

async fn username(
    backend: &std::sync::Arc<dyn presence_backend::Backend>,
    username: &str,
) -> Option<String> {
    let found = backend.user_by_username(username).await.unwrap();
    found.map(|id| id.to_string())
}

async fn set_cap(backend: &std::sync::Arc<dyn presence_backend::Backend>, cap: u64) {
    let patch = SettingsPatch {
        cap: Some(cap),
        ..SettingsPatch::default()
    };
    assert_eq!(backend.update_settings(patch).await.unwrap().cap, cap);
}

async fn enable_calendar(backend: &std::sync::Arc<dyn presence_backend::Backend>) {
    let patch = SettingsPatch {
        calendar_integration: Some(true),
        ..SettingsPatch::default()
    };
    backend.update_settings(patch).await.unwrap();
}

/// The cap state once its count is `count` (the cluster count may lag).
async fn wait_for_count(
    backend: &std::sync::Arc<dyn presence_backend::Backend>,
    count: u64,
) -> presence_core::CapState {
    wait_until(
        format_args!("a connection count of {count}"),
        DEADLINE,
        async || backend.cap_state().await.unwrap(),
        |state| state.count == count,
    )
    .await
}

async fn wait_for_counts(
    backend: &std::sync::Arc<dyn presence_backend::Backend>,
    expected: StatusCounts,
) -> StatusCounts {
    wait_until(
        format_args!("status counts {expected:?}"),
        DEADLINE,
        async || backend.status_counts().await.unwrap(),
        |counts| *counts == expected,
    )
    .await
}

/// The profile `users.presence` would show for a user who is not offline.
async fn listed_profile(
    backend: &std::sync::Arc<dyn presence_backend::Backend>,
    user: &str,
) -> Profile {
    listed(backend, user)
        .await
        .unwrap_or_else(|| panic!("{user} is not listed"))
}

async fn listed(
    backend: &std::sync::Arc<dyn presence_backend::Backend>,
    user: &str,
) -> Option<Profile> {
    let ids = [id(user)];
    let listings = backend.list_not_offline(Some(&ids)).await.unwrap();
    listings.into_iter().next().map(|l| l.profile)
}
