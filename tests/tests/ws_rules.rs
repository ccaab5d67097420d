//! The rules of DESIGN §1, end to end: real `presenced` processes, real
//! WebSocket clients, users with several devices on mixed platforms and
//! watchers who subscribed to them. Each test is named after the rule it
//! proves.
//!
//! Waiting is always for an event (a frame, an ack, an HTTP answer). Where
//! a test proves that nothing changed, it compares the user's `version`
//! (W3: every visible change bumps it) before and after, instead of
//! waiting for frames that should not come.

use std::time::{Duration, Instant};

use presence_e2e::{Server, ServerOptions, Ws, admin_token, rfc3339_from_now, token};
use presence_testkit::wait_until;
use serde_json::{Value, json};

/// A server whose rate limits never get in the way of a rule test.
async fn server() -> Server {
    server_with(ServerOptions::default()).await
}

async fn server_with(options: ServerOptions) -> Server {
    Server::start_with(options.relaxed_limits()).await
}

/// Two watchers on different platforms, both subscribed to the same users.
struct Watchers(Vec<Ws>);

impl Watchers {
    async fn new(server: &Server, users: &[&str]) -> Watchers {
        let mut all = vec![
            server.connect("watcher-bob", "bob-web", "web").await,
            server
                .connect("watcher-carol", "carol-phone", "mobile")
                .await,
        ];
        for w in &mut all {
            w.subscribe(users).await;
        }
        Watchers(all)
    }

    /// Every watcher sees `user` reach `status`; returns the last update.
    async fn see(&mut self, user: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for w in &mut self.0 {
            last = w.expect_update(user, status).await;
        }
        last
    }

    /// Every watcher sees `user` reach `status` with `text`.
    async fn see_text(&mut self, user: &str, status: &str, text: Option<&str>) {
        for w in &mut self.0 {
            loop {
                let update = w.expect_update(user, status).await;
                if update["text"] == json!(text) {
                    break;
                }
            }
        }
    }

    /// The next update every watcher gets about `user` says `status`.
    async fn next_is(&mut self, user: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for w in &mut self.0 {
            last = w.next_update(user).await;
            assert_eq!(last["status"], status, "unexpected update {last}");
        }
        last
    }

    fn first(&mut self) -> &mut Ws {
        &mut self.0[0]
    }
}

/// `user`'s entry as a query shows it (status, text, version).
async fn entry(ws: &mut Ws, user: &str) -> Value {
    ws.query(user).await
}

fn set_status(status: &str) -> Value {
    json!({"type": "set_status", "status": status})
}

fn set(fields: Value) -> Value {
    let mut frame = json!({"type": "set_status"});
    for (k, v) in fields.as_object().expect("fields") {
        frame[k] = v.clone();
    }
    frame
}

fn event(kind: &str) -> Value {
    json!({"type": kind})
}

// ---------------------------------------------------------------- A1–A4, I

#[tokio::test]
async fn a1_a4_watchers_see_the_best_of_four_devices() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    watchers.see("alice", "online").await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut phone = server.connect("alice", "alice-phone", "mobile").await;
    let mut laptop = server.connect("alice", "alice-laptop", "desktop").await;
    assert_eq!(laptop.ready_me()["devices"], 4);
    let online = entry(watchers.first(), "alice").await;
    assert_eq!(online["status"], "online");

    // A4: one online device is enough; three away devices do not move it.
    web.ok(event("idle")).await;
    desktop.ok(event("lock")).await;
    phone.ok(event("background")).await;
    let after = entry(watchers.first(), "alice").await;
    assert_eq!(after["status"], "online");
    assert_eq!(
        after["version"], online["version"],
        "nothing visible changed"
    );

    // The last online device goes away: the aggregate is away.
    laptop.ok(event("sleep")).await;
    watchers.next_is("alice", "away").await;
    laptop.ok(event("wake")).await;
    watchers.next_is("alice", "online").await;
    laptop.ok(event("lock")).await;
    watchers.next_is("alice", "away").await;
    phone.ok(event("foreground")).await;
    watchers.next_is("alice", "online").await;

    // A1: offline only when the last device leaves.
    phone.close().await;
    desktop.close().await;
    web.close().await;
    let me = laptop.expect_me(|m| m["devices"] == 1).await;
    assert_eq!(me["status"], "away");
    watchers.next_is("alice", "away").await;
    laptop.close().await;
    watchers.next_is("alice", "offline").await;
}

#[tokio::test]
async fn a1_no_device_means_offline_and_the_choice_is_kept() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let phone = server.connect("alice", "alice-phone", "mobile").await;
    desktop
        .ok(set(json!({"status": "busy", "text": "Focus"})))
        .await;
    watchers.see_text("alice", "busy", Some("Focus")).await;
    phone.close().await;
    desktop.close().await;
    watchers.next_is("alice", "offline").await;
    let offline = entry(watchers.first(), "alice").await;
    assert_eq!(offline["text"], Value::Null, "T3: no text while offline");

    // The choice survives the time without devices.
    let web = server.connect("alice", "alice-web", "web").await;
    assert_eq!(web.ready_me()["chosen"], "busy");
    assert_eq!(web.ready_me()["status"], "busy");
    assert_eq!(web.ready_me()["text"], "Focus");
    watchers.see_text("alice", "busy", Some("Focus")).await;
}

#[tokio::test]
async fn a2_busy_beats_online_devices_for_watchers() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice", "dave"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let _phone = server.connect("alice", "alice-phone", "mobile").await;
    let mut dave = server.connect("dave", "dave-web", "web").await;
    watchers.see("alice", "online").await;
    watchers.see("dave", "online").await;

    desktop.ok(set_status("busy")).await;
    watchers.next_is("alice", "busy").await;
    desktop.ok(set_status("away")).await;
    watchers.next_is("alice", "away").await;
    let me = desktop.expect_me(|m| m["chosen"] == "away").await;
    assert_eq!(me["connection"], "online", "devices are online underneath");

    // Another user's manual status is independent.
    dave.ok(set_status("busy")).await;
    watchers.next_is("dave", "busy").await;
    assert_eq!(entry(watchers.first(), "alice").await["status"], "away");
}

#[tokio::test]
async fn a3_i1_invisible_shows_offline_without_text_to_watchers_and_invisible_to_self() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    desktop
        .ok(set(json!({"status": "busy", "text": "Visible text"})))
        .await;
    watchers
        .see_text("alice", "busy", Some("Visible text"))
        .await;

    desktop
        .ok(set(json!({"status": "invisible", "text": "Secret"})))
        .await;
    let update = watchers.next_is("alice", "offline").await;
    assert_eq!(update["text"], Value::Null, "A3: no status text");
    let seen = entry(watchers.first(), "alice").await;
    assert_eq!(seen["status"], "offline");
    assert_eq!(seen["text"], Value::Null);

    // Both of her own sockets see `invisible` and her text.
    for own in [&mut desktop, &mut web] {
        let me = own.expect_me(|m| m["chosen"] == "invisible").await;
        assert_eq!(me["status"], "invisible");
        assert_eq!(me["text"], "Secret");
    }
    // A new device of hers learns it in `ready`.
    let phone = server.connect("alice", "alice-phone", "mobile").await;
    assert_eq!(phone.ready_me()["status"], "invisible");

    // Device events while invisible show nothing (M1).
    web.ok(event("idle")).await;
    let still = entry(watchers.first(), "alice").await;
    assert_eq!(still["status"], "offline");

    // Leaving invisible shows her again at once.
    desktop.ok(set_status("online")).await;
    watchers.next_is("alice", "online").await;
}

#[tokio::test]
async fn i2_allow_invisible_false_refuses_new_invisible_requests_and_keeps_existing() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice", "dave"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let _alice_phone = server.connect("alice", "alice-phone", "mobile").await;
    let mut dave = server.connect("dave", "dave-web", "web").await;
    watchers.see("dave", "online").await;
    alice.ok(set_status("invisible")).await;
    watchers.see("alice", "offline").await;

    server
        .admin_settings(json!({"allow_invisible": false}))
        .await;
    let before = entry(watchers.first(), "dave").await;
    dave.refused(set_status("invisible"), "invisible_disabled")
        .await;
    let after = entry(watchers.first(), "dave").await;
    assert_eq!(after, before, "a refused request changes nothing");

    // Alice stays invisible until she changes status herself.
    let me = alice.expect_me(|m| m["status"] == "invisible").await;
    assert_eq!(me["chosen"], "invisible");
    let newcomer = server.connect("alice", "alice-web", "web").await;
    assert_eq!(newcomer.ready_me()["status"], "invisible");
    assert_eq!(
        newcomer.ready.as_ref().unwrap()["settings"]["allow_invisible"],
        false
    );
    alice.ok(set_status("busy")).await;
    watchers.next_is("alice", "busy").await;
    alice
        .refused(set_status("invisible"), "invisible_disabled")
        .await;
}

// ---------------------------------------------------------------- D1–D8, S1

#[tokio::test]
async fn d1_reconnect_starts_online_even_if_idle_before() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    watchers.see("alice", "online").await;
    web.ok(event("idle")).await;
    watchers.next_is("alice", "away").await;

    // The network drops and the same device reconnects: online again.
    web.drop_connection();
    let web = server.connect("alice", "alice-web", "web").await;
    assert_eq!(web.ready_me()["status"], "online");
    assert_eq!(web.ready_me()["devices"], 1);
    watchers.see("alice", "online").await;

    // The same after a clean close.
    let mut web = web;
    web.ok(event("idle")).await;
    watchers.next_is("alice", "away").await;
    web.close().await;
    watchers.next_is("alice", "offline").await;
    let web = server.connect("alice", "alice-web", "web").await;
    assert_eq!(web.ready_me()["status"], "online");
    watchers.next_is("alice", "online").await;
}

#[tokio::test]
async fn d2_client_idle_and_active_move_web_and_desktop() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice", "dave"]).await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    let mut desktop = server.connect("dave", "dave-desktop", "desktop").await;
    watchers.see("alice", "online").await;
    watchers.see("dave", "online").await;

    web.ok(event("idle")).await;
    watchers.next_is("alice", "away").await;
    let me = web.expect_me(|m| m["status"] == "away").await;
    assert_eq!(me["connection"], "away");
    web.ok(event("active")).await;
    watchers.next_is("alice", "online").await;

    desktop.ok(event("idle")).await;
    watchers.next_is("dave", "away").await;
    // Activity also means the user is back.
    desktop.ok(event("activity")).await;
    watchers.next_is("dave", "online").await;
}

#[tokio::test]
async fn d2_server_idle_timer_turns_activity_into_away_after_the_limit() {
    let server = server_with(ServerOptions::default().arg("--min-idle-time-limit", 1)).await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    let mut phone = server.connect("alice", "alice-phone", "mobile").await;
    watchers.see("alice", "online").await;
    server
        .preferences("alice", json!({"auto_away": true, "idle_time_limit": 1}))
        .await;
    // The phone has no idle detection; background it so the web decides.
    phone.ok(event("background")).await;
    let me = web.expect_me(|m| m["idle_time_limit"] == 1).await;
    assert_eq!(me["auto_away"], true);

    let start = Instant::now();
    web.ok(event("activity")).await;
    watchers.next_is("alice", "away").await;
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "away only after the idle time limit, not after {:?}",
        start.elapsed()
    );
    web.ok(event("activity")).await;
    watchers.next_is("alice", "online").await;
}

#[tokio::test]
async fn s1_auto_away_off_keeps_idle_devices_online() {
    let server = server_with(ServerOptions::default().arg("--min-idle-time-limit", 1)).await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    watchers.see("alice", "online").await;
    assert_eq!(web.ready_me()["auto_away"], true, "S1: default on");
    assert_eq!(web.ready_me()["idle_time_limit"], 300, "S1: default 300 s");
    server
        .preferences("alice", json!({"auto_away": false}))
        .await;

    web.ok(event("idle")).await;
    desktop.ok(event("idle")).await;
    let seen = entry(watchers.first(), "alice").await;
    assert_eq!(seen["status"], "online");
    let me = web.expect_me(|m| m["auto_away"] == false).await;
    assert_eq!(me["status"], "online");

    // Turning auto-away back on makes the recorded idleness count.
    server
        .preferences("alice", json!({"auto_away": true}))
        .await;
    watchers.next_is("alice", "away").await;
}

#[tokio::test]
async fn d3_lock_and_unlock_on_desktop() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    watchers.see("alice", "online").await;
    desktop.ok(event("lock")).await;
    watchers.next_is("alice", "away").await;
    desktop.ok(event("unlock")).await;
    watchers.next_is("alice", "online").await;
}

#[tokio::test]
async fn d4_background_and_foreground_on_mobile() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut phone = server.connect("alice", "alice-phone", "mobile").await;
    watchers.see("alice", "online").await;
    phone.ok(event("background")).await;
    watchers.next_is("alice", "away").await;
    phone.ok(event("foreground")).await;
    watchers.next_is("alice", "online").await;
}

#[tokio::test]
async fn d5_lock_and_background_apply_with_auto_away_off() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice", "dave"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut phone = server.connect("dave", "dave-phone", "mobile").await;
    watchers.see("alice", "online").await;
    watchers.see("dave", "online").await;
    server
        .preferences("alice", json!({"auto_away": false}))
        .await;
    server
        .preferences("dave", json!({"auto_away": false}))
        .await;

    desktop.ok(event("lock")).await;
    watchers.next_is("alice", "away").await;
    phone.ok(event("background")).await;
    watchers.next_is("dave", "away").await;
    desktop.ok(event("unlock")).await;
    watchers.next_is("alice", "online").await;
}

#[tokio::test]
async fn d6_sleep_shows_away_then_lost_connection_goes_offline_after_grace() {
    let server = server_with(ServerOptions::default().arg("--disconnect-grace", "1s")).await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    watchers.see("alice", "online").await;
    desktop.ok(event("sleep")).await;
    watchers.next_is("alice", "away").await;

    let lost = Instant::now();
    desktop.drop_connection();
    watchers.next_is("alice", "offline").await;
    assert!(
        lost.elapsed() >= Duration::from_millis(800),
        "after the grace"
    );
}

#[tokio::test]
async fn d7_dropped_socket_shows_away_for_the_grace_then_offline() {
    let server = server_with(ServerOptions::default().arg("--disconnect-grace", "1s")).await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let web = server.connect("alice", "alice-web", "web").await;
    let mut phone = server.connect("alice", "alice-phone", "mobile").await;
    phone.ok(event("background")).await;
    watchers.see("alice", "online").await;

    let lost = Instant::now();
    web.drop_connection();
    watchers.next_is("alice", "away").await;
    let me = phone.expect_me(|m| m["status"] == "away").await;
    assert_eq!(me["devices"], 2, "the lost device is still counted");
    phone.close().await;
    // The phone left cleanly; the lost web device holds her away until
    // its grace ends.
    watchers.next_is("alice", "offline").await;
    assert!(
        lost.elapsed() >= Duration::from_millis(800),
        "after the grace"
    );
}

#[tokio::test]
async fn d7_bye_and_clean_close_go_offline_at_once() {
    // The default grace is 30 s: an offline within the deadline is at once.
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    watchers.see("alice", "online").await;

    web.send(json!({"type": "bye"})).await;
    assert_eq!(web.expect_close().await, Some(1000));
    let me = desktop.expect_me(|m| m["devices"] == 1).await;
    assert_eq!(me["status"], "online");
    desktop.close().await;
    // Straight to offline, never `away` in between.
    watchers.next_is("alice", "offline").await;
}

#[tokio::test]
async fn d7_close_frame_then_immediate_drop_is_still_clean() {
    // An app that quits sends its close frame and is gone, leaving frames
    // unread, so the connection ends with a reset; meanwhile the server
    // keeps writing updates to it. The default grace is 30 s, so an offline
    // within the deadline proves each close counted as clean.
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut noisy = server.connect("noisy", "noisy-desktop", "desktop").await;
    for round in 0..5 {
        let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
        let mut web = server.connect("alice", "alice-web", "web").await;
        watchers.see("alice", "online").await;
        web.subscribe(&["noisy"]).await;
        // A stream of updates the web client will never read.
        for _ in 0..50 {
            noisy.send(event("lock")).await;
            noisy.send(event("unlock")).await;
        }
        web.close_and_drop().await;
        let me = desktop.expect_me(|m| m["devices"] == 1).await;
        assert_eq!(me["connection"], "online", "round {round}");
        noisy.ok(event("unlock")).await;
        desktop.close().await;
        watchers.next_is("alice", "offline").await;
    }
}

#[tokio::test]
async fn d7_reconnect_within_grace_resumes_the_device() {
    let server = server_with(ServerOptions::default().arg("--disconnect-grace", "1s")).await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let web = server.connect("alice", "alice-web", "web").await;
    watchers.see("alice", "online").await;
    web.drop_connection();
    watchers.next_is("alice", "away").await;

    let mut web = server.connect("alice", "alice-web", "web").await;
    assert_eq!(web.ready_me()["devices"], 1, "the same device, resumed");
    watchers.next_is("alice", "online").await;
    // The old grace period must not remove the resumed device: still
    // online well after it would have ended.
    watchers
        .first()
        .expect_none(Duration::from_millis(1500), |f| {
            f["type"] == "presence" && f["user"] == "alice"
        })
        .await;
    let now = entry(watchers.first(), "alice").await;
    assert_eq!(now["status"], "online");
    web.ok(event("idle")).await;
    watchers.next_is("alice", "away").await;
}

/// Every event a platform cannot produce (D8).
const UNSUPPORTED: &[(&str, &[&str])] = &[
    (
        "web",
        &[
            "lock",
            "unlock",
            "sleep",
            "wake",
            "background",
            "foreground",
        ],
    ),
    ("desktop", &["background", "foreground"]),
    (
        "mobile",
        &[
            "activity", "idle", "active", "lock", "unlock", "sleep", "wake",
        ],
    ),
];

#[tokio::test]
async fn d8_unsupported_platform_events_are_refused_and_change_nothing() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut sockets = Vec::new();
    for (platform, _) in UNSUPPORTED {
        let device = format!("alice-{platform}");
        sockets.push(server.connect("alice", &device, platform).await);
    }
    watchers.see("alice", "online").await;
    let before = entry(watchers.first(), "alice").await;

    for ((platform, events), ws) in UNSUPPORTED.iter().zip(&mut sockets) {
        for kind in *events {
            let error = ws.refused(event(kind), "unsupported_event").await;
            let message = error["message"].as_str().unwrap();
            assert!(message.contains(kind), "{platform}/{kind}: {message}");
        }
    }
    let after = entry(watchers.first(), "alice").await;
    assert_eq!(after, before, "no refused event changed anything");
    // The sockets still work.
    sockets[1].ok(event("lock")).await;
    sockets[0].ok(event("idle")).await;
    sockets[2].ok(event("background")).await;
    watchers.next_is("alice", "away").await;
}

// ---------------------------------------------------------------- M1–M3

#[tokio::test]
async fn m1_manual_status_ignores_device_events() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    let mut phone = server.connect("alice", "alice-phone", "mobile").await;
    desktop.ok(set_status("busy")).await;
    watchers.see("alice", "busy").await;
    let before = entry(watchers.first(), "alice").await;

    desktop.ok(event("lock")).await;
    web.ok(event("idle")).await;
    phone.ok(event("background")).await;
    // The events are recorded: her own view says her devices are away...
    let me = desktop.expect_me(|m| m["connection"] == "away").await;
    assert_eq!(me["status"], "busy");
    // ...but nobody else sees a change.
    let after = entry(watchers.first(), "alice").await;
    assert_eq!(after["status"], "busy");
    assert_eq!(after["text"], before["text"]);

    // M2: back to automatic shows the aggregate of what was recorded.
    desktop.ok(set_status("online")).await;
    watchers.next_is("alice", "away").await;
}

#[tokio::test]
async fn m2_choosing_online_shows_the_device_aggregate_at_once() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut phone = server.connect("alice", "alice-phone", "mobile").await;
    desktop.ok(set_status("away")).await;
    watchers.see("alice", "away").await;
    // Devices are online underneath: choosing online shows online.
    desktop.ok(set_status("online")).await;
    watchers.next_is("alice", "online").await;

    desktop.ok(set_status("invisible")).await;
    watchers.next_is("alice", "offline").await;
    desktop.ok(event("lock")).await;
    phone.ok(event("background")).await;
    desktop.expect_me(|m| m["connection"] == "away").await;
    desktop.ok(set_status("online")).await;
    watchers.next_is("alice", "away").await;
    phone.ok(event("foreground")).await;
    watchers.next_is("alice", "online").await;
}

#[tokio::test]
async fn m3_kill9_and_restart_keep_chosen_status_and_text() {
    let mut server = server_with(ServerOptions::default().arg("--drain-window", "1s")).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    alice
        .ok(set(json!({"status": "busy", "text": "Deep work 🧠"})))
        .await;
    server.kill9().await;
    server.restart().await;

    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let offline = entry(watchers.first(), "alice").await;
    assert_eq!(offline["status"], "offline", "no devices after a restart");
    let mut alice = server.connect("alice", "alice-web", "web").await;
    let me = alice.ready_me();
    assert_eq!(me["chosen"], "busy");
    assert_eq!(me["status"], "busy");
    assert_eq!(me["text"], "Deep work 🧠");
    watchers
        .see_text("alice", "busy", Some("Deep work 🧠"))
        .await;

    // A graceful restart keeps it too.
    alice
        .ok(set(json!({"status": "away", "text": "Lunch"})))
        .await;
    assert_eq!(server.sigterm().await, Some(0));
    server.restart().await;
    let alice = server.connect("alice", "alice-phone", "mobile").await;
    assert_eq!(alice.ready_me()["chosen"], "away");
    assert_eq!(alice.ready_me()["text"], "Lunch");
}

#[tokio::test]
async fn m3_kill9_keeps_preferences() {
    let mut server = server().await;
    server
        .preferences("alice", json!({"auto_away": false, "idle_time_limit": 120}))
        .await;
    server.kill9().await;
    server.restart().await;
    let alice = server.connect("alice", "alice-web", "web").await;
    assert_eq!(alice.ready_me()["auto_away"], false);
    assert_eq!(alice.ready_me()["idle_time_limit"], 120);
}

// ---------------------------------------------------------------- T1–T6

#[tokio::test]
async fn t1_status_text_length_characters_and_emoji() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let _phone = server.connect("alice", "alice-phone", "mobile").await;
    alice.ok(set(json!({"text": "Before"}))).await;
    watchers.see_text("alice", "online", Some("Before")).await;
    let before = entry(watchers.first(), "alice").await;

    let refusals = [
        ("x".repeat(121), "status_text_too_long"),
        ("😀".repeat(121), "status_text_too_long"),
        ("y".repeat(10_000), "status_text_too_long"),
        ("line\nbreak".to_owned(), "status_text_invalid"),
        ("tab\tinside".to_owned(), "status_text_invalid"),
        ("nul\u{0}".to_owned(), "status_text_invalid"),
        ("bell\u{7}".to_owned(), "status_text_invalid"),
    ];
    for (text, code) in &refusals {
        alice.refused(set(json!({"text": text})), code).await;
        alice
            .refused(set(json!({"status": "busy", "text": text})), code)
            .await;
    }
    let after = entry(watchers.first(), "alice").await;
    assert_eq!(
        after, before,
        "refused texts change nothing, never truncate"
    );

    let emoji = "😀".repeat(120);
    alice.ok(set(json!({"text": emoji}))).await;
    watchers.see_text("alice", "online", Some(&emoji)).await;
    let exactly = "z".repeat(120);
    alice.ok(set(json!({"text": exactly}))).await;
    watchers.see_text("alice", "online", Some(&exactly)).await;
    // Trimmed.
    alice.ok(set(json!({"text": "   padded   "}))).await;
    watchers.see_text("alice", "online", Some("padded")).await;
}

#[tokio::test]
async fn t2_online_with_a_text_is_valid() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut alice = server.connect("alice", "alice-web", "web").await;
    alice
        .ok(set(json!({"status": "online", "text": "Out for lunch"})))
        .await;
    watchers
        .see_text("alice", "online", Some("Out for lunch"))
        .await;
    let me = alice.expect_me(|m| m["text"] == "Out for lunch").await;
    assert_eq!(me["status"], "online");
    assert_eq!(me["chosen"], "online");
}

#[tokio::test]
async fn t3_text_hidden_from_watchers_while_invisible_or_offline() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let phone = server.connect("alice", "alice-phone", "mobile").await;
    alice
        .ok(set(json!({"status": "invisible", "text": "Secret"})))
        .await;
    let update = watchers.see("alice", "offline").await;
    assert_eq!(update["text"], Value::Null);
    // Changing only the text while invisible shows watchers nothing.
    let before = entry(watchers.first(), "alice").await;
    alice.ok(set(json!({"text": "Still secret"}))).await;
    let me = alice.expect_me(|m| m["text"] == "Still secret").await;
    assert_eq!(me["status"], "invisible");
    let after = entry(watchers.first(), "alice").await;
    assert_eq!(after["text"], Value::Null);
    assert_eq!(after["status"], before["status"]);

    alice
        .ok(set(json!({"status": "online", "text": "Back"})))
        .await;
    watchers.see_text("alice", "online", Some("Back")).await;
    // Offline: no text, but the text is kept for later.
    alice.close().await;
    phone.close().await;
    let update = watchers.next_is("alice", "offline").await;
    assert_eq!(update["text"], Value::Null);
    assert_eq!(entry(watchers.first(), "alice").await["text"], Value::Null);
    let _web = server.connect("alice", "alice-web", "web").await;
    watchers.see_text("alice", "online", Some("Back")).await;
}

#[tokio::test]
async fn t4_built_in_status_clears_text_unless_set_together() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let _web = server.connect("alice", "alice-web", "web").await;
    let steps: &[(Value, &str, Option<&str>)] = &[
        (json!({"text": "A"}), "online", Some("A")),
        (json!({"status": "busy"}), "busy", None),
        (json!({"status": "away", "text": "B"}), "away", Some("B")),
        (json!({"text": "C"}), "away", Some("C")),
        (json!({"text": null}), "away", None),
        (json!({"text": "D"}), "away", Some("D")),
        (json!({"text": ""}), "away", None),
        (json!({"status": "busy", "text": "E"}), "busy", Some("E")),
        (json!({"status": "online"}), "online", None),
    ];
    for (fields, status, text) in steps {
        alice.ok(set(fields.clone())).await;
        watchers.see_text("alice", status, *text).await;
    }
}

#[tokio::test]
async fn t5_free_text_disabled_by_admin_custom_statuses_still_work() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let _phone = server.connect("alice", "alice-phone", "mobile").await;
    watchers.see("alice", "online").await;
    let meeting = server.create_custom_status("In a meeting", "busy").await;
    server
        .admin_settings(json!({"allow_custom_status_text": false}))
        .await;

    let before = entry(watchers.first(), "alice").await;
    alice
        .refused(set(json!({"text": "free text"})), "status_text_disabled")
        .await;
    alice
        .refused(
            set(json!({"status": "busy", "text": "free text"})),
            "status_text_disabled",
        )
        .await;
    assert_eq!(entry(watchers.first(), "alice").await, before);

    alice.ok(set_status("away")).await;
    watchers.next_is("alice", "away").await;
    alice
        .ok(json!({"type": "use_custom_status", "id": meeting}))
        .await;
    watchers
        .see_text("alice", "busy", Some("In a meeting"))
        .await;
    // Clearing a text is always allowed.
    alice.ok(set(json!({"text": null}))).await;
    watchers.see_text("alice", "busy", None).await;
}

#[tokio::test]
async fn t6_expiry_returns_watchers_to_the_previous_status() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let _web = server.connect("alice", "alice-web", "web").await;
    alice
        .ok(set(json!({"status": "busy", "text": "Focus"})))
        .await;
    watchers.see_text("alice", "busy", Some("Focus")).await;

    let set_at = Instant::now();
    alice
        .ok(set(json!({
            "status": "away",
            "text": "brb",
            "expires_at": rfc3339_from_now(1500),
        })))
        .await;
    watchers.see_text("alice", "away", Some("brb")).await;
    let me = alice.expect_me(|m| m["chosen"] == "away").await;
    assert!(
        me["expires_at"].is_string(),
        "own view shows the expiry: {me}"
    );

    let update = watchers.next_is("alice", "busy").await;
    assert_eq!(update["text"], "Focus", "the previous status returns");
    assert!(set_at.elapsed() >= Duration::from_millis(1000));
    let me = alice.expect_me(|m| m["chosen"] == "busy").await;
    assert_eq!(me["expires_at"], Value::Null);
}

#[tokio::test]
async fn t6_expiry_must_be_in_the_future_and_expire_something() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    watchers.see("alice", "online").await;
    let before = entry(watchers.first(), "alice").await;
    alice
        .refused(
            set(json!({"status": "busy", "expires_at": rfc3339_from_now(-60_000)})),
            "expiry_not_in_future",
        )
        .await;
    alice
        .refused(
            set(json!({"expires_at": rfc3339_from_now(60_000)})),
            "expiry_without_change",
        )
        .await;
    alice.refused(set(json!({})), "empty_status_change").await;
    assert_eq!(entry(watchers.first(), "alice").await, before);
}

// ---------------------------------------------------------------- C1–C3

#[tokio::test]
async fn c1_c2_custom_statuses_set_presence_and_text() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let _phone = server.connect("alice", "alice-phone", "mobile").await;
    watchers.see("alice", "online").await;
    let call = server.create_custom_status("On a call", "busy").await;
    let lunch = server.create_custom_status("Out to lunch", "away").await;
    let hidden = server.create_custom_status("Hidden", "offline").await;
    let here = server.create_custom_status("Available", "online").await;

    // C1: names are unique ignoring case; only admins manage them.
    let (status, body) = Server::call(
        server
            .post("/v1/admin/custom-statuses", &admin_token())
            .json(&json!({"name": "on A CALL", "status_type": "away"})),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "custom_status_name_taken");
    let (status, _) = Server::call(
        server
            .post("/v1/admin/custom-statuses", &token("alice", false))
            .json(&json!({"name": "Mine", "status_type": "busy"})),
    )
    .await;
    assert_eq!(status, 403);
    let (status, list) =
        Server::call(server.get("/v1/admin/custom-statuses", &admin_token())).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["statuses"].as_array().map(Vec::len), Some(4), "{list}");

    // C2: the mapped presence and the name as text.
    alice
        .ok(json!({"type": "use_custom_status", "id": call}))
        .await;
    watchers.see_text("alice", "busy", Some("On a call")).await;
    let me = alice.expect_me(|m| m["custom_status"] == json!(call)).await;
    assert_eq!(me["chosen"], "busy");
    alice
        .ok(json!({"type": "use_custom_status", "id": lunch}))
        .await;
    watchers
        .see_text("alice", "away", Some("Out to lunch"))
        .await;
    alice
        .ok(json!({"type": "use_custom_status", "id": hidden}))
        .await;
    let update = watchers.next_is("alice", "offline").await;
    assert_eq!(update["text"], Value::Null);
    let me = alice
        .expect_me(|m| m["custom_status"] == json!(hidden))
        .await;
    assert_eq!(me["status"], "invisible", "offline maps to invisible");
    alice
        .ok(json!({"type": "use_custom_status", "id": here}))
        .await;
    watchers
        .see_text("alice", "online", Some("Available"))
        .await;

    let before = entry(watchers.first(), "alice").await;
    alice
        .refused(
            json!({"type": "use_custom_status", "id": "no-such-status"}),
            "custom_status_not_found",
        )
        .await;
    assert_eq!(entry(watchers.first(), "alice").await, before);
}

#[tokio::test]
async fn c3_rename_remap_and_delete_reach_watchers() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice", "dave"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let mut dave = server.connect("dave", "dave-web", "web").await;
    let _dave_phone = server.connect("dave", "dave-phone", "mobile").await;
    let call = server.create_custom_status("On a call", "busy").await;
    for ws in [&mut alice, &mut dave] {
        ws.ok(json!({"type": "use_custom_status", "id": call}))
            .await;
    }
    watchers.see_text("alice", "busy", Some("On a call")).await;
    watchers.see_text("dave", "busy", Some("On a call")).await;

    let path = format!("/v1/admin/custom-statuses/{call}");
    let (status, body) = Server::call(
        server
            .patch(&path, &admin_token())
            .json(&json!({"name": "In a call"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    watchers.see_text("alice", "busy", Some("In a call")).await;
    watchers.see_text("dave", "busy", Some("In a call")).await;

    let (status, body) = Server::call(
        server
            .patch(&path, &admin_token())
            .json(&json!({"status_type": "away"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    watchers.see_text("alice", "away", Some("In a call")).await;
    watchers.see_text("dave", "away", Some("In a call")).await;

    alice
        .expect_me(|m| m["chosen"] == "away" && m["custom_status"] == json!(call))
        .await;
    let before = entry(watchers.first(), "alice").await;
    let (status, body) = Server::call(server.delete(&path, &admin_token())).await;
    assert!(status == 200 || status == 204, "{status} {body}");
    // Users keep their presence and the name as plain text.
    let me = alice.expect_me(|m| m["custom_status"].is_null()).await;
    assert_eq!(me["text"], "In a call");
    assert_eq!(me["chosen"], "away");
    let after = entry(watchers.first(), "alice").await;
    assert_eq!(after["status"], before["status"]);
    assert_eq!(after["text"], before["text"]);
    alice
        .refused(
            json!({"type": "use_custom_status", "id": call}),
            "custom_status_not_found",
        )
        .await;
}

// ---------------------------------------------------------------- K1–K3

#[tokio::test]
async fn k1_calendar_is_off_by_default_and_comes_only_from_desktop() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    let mut phone = server.connect("alice", "alice-phone", "mobile").await;
    assert_eq!(
        desktop.ready.as_ref().unwrap()["settings"]["calendar_integration"],
        false
    );
    watchers.see("alice", "online").await;
    let before = entry(watchers.first(), "alice").await;
    let meeting = json!({"type": "calendar", "event_id": "standup", "busy": true});
    desktop.refused(meeting.clone(), "calendar_disabled").await;
    web.refused(meeting.clone(), "unsupported_event").await;
    phone.refused(meeting, "unsupported_event").await;
    assert_eq!(entry(watchers.first(), "alice").await, before);
}

#[tokio::test]
async fn k2_calendar_busy_overlaps_restores_and_yields_to_the_user() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    watchers.see("alice", "online").await;
    server
        .admin_settings(json!({"calendar_integration": true}))
        .await;
    let calendar = |id: &str, busy: bool| json!({"type": "calendar", "event_id": id, "busy": busy});
    web.refused(calendar("e1", true), "unsupported_event").await;

    desktop.ok(calendar("e1", true)).await;
    watchers.next_is("alice", "busy").await;
    let me = desktop.expect_me(|m| m["calendar_busy"] == true).await;
    assert_eq!(
        me["chosen"], "online",
        "the calendar does not touch the choice"
    );
    desktop.ok(calendar("e2", true)).await;
    desktop.ok(calendar("e1", false)).await;
    let still = entry(watchers.first(), "alice").await;
    assert_eq!(still["status"], "busy", "overlapping events keep busy");
    desktop.ok(calendar("e2", false)).await;
    watchers.next_is("alice", "online").await;

    // The status in effect before the event comes back.
    desktop
        .ok(set(json!({"status": "away", "text": "Errand"})))
        .await;
    watchers.see_text("alice", "away", Some("Errand")).await;
    desktop.ok(calendar("e3", true)).await;
    watchers.next_is("alice", "busy").await;
    desktop.ok(calendar("e3", false)).await;
    watchers.see_text("alice", "away", Some("Errand")).await;

    // A choice during the event stands when it ends.
    desktop.ok(calendar("e4", true)).await;
    watchers.next_is("alice", "busy").await;
    web.ok(set_status("online")).await;
    watchers.next_is("alice", "online").await;
    desktop.ok(calendar("e4", false)).await;
    let after = entry(watchers.first(), "alice").await;
    assert_eq!(after["status"], "online");
}

#[tokio::test]
async fn k3_calls_are_unknown_messages_and_change_nothing() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut phone = server.connect("alice", "alice-phone", "mobile").await;
    watchers.see("alice", "online").await;
    let before = entry(watchers.first(), "alice").await;
    for kind in ["call_started", "call_ended", "video_conference", "in_call"] {
        desktop.refused(event(kind), "unknown_type").await;
        phone
            .refused(json!({"type": kind, "call_id": "c1"}), "unknown_type")
            .await;
    }
    assert_eq!(entry(watchers.first(), "alice").await, before);
}

// ---------------------------------------------------------------- X1–X5

#[tokio::test]
async fn x1_x3_over_the_cap_everyone_is_told_and_updates_freeze() {
    let server = server_with(ServerOptions::default().arg("--cap", 2)).await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    bob.subscribe(&["alice"]).await;
    assert_eq!(bob.ready.as_ref().unwrap()["presence_active"], true);

    // X1, X2: the third connection exceeds the cap.
    let mut carol = server.connect("carol", "carol-phone", "mobile").await;
    for ws in [&mut bob, &mut alice] {
        let notice = ws.expect_type("notice").await;
        assert_eq!(notice["kind"], "presence_inactive");
    }
    // The newcomer learns it from `ready` (or a notice).
    if carol.ready.as_ref().unwrap()["presence_active"] != false {
        let notice = carol.expect_type("notice").await;
        assert_eq!(notice["kind"], "presence_inactive");
    }

    // Changes are accepted and readable, but not pushed.
    alice
        .ok(set(json!({"status": "busy", "text": "Frozen"})))
        .await;
    let read = bob.query("alice").await;
    assert_eq!(read["status"], "busy");
    assert_eq!(read["text"], "Frozen");
    bob.expect_none(Duration::from_millis(300), |f| {
        f["type"] == "presence" && f["user"] == "alice"
    })
    .await;
    // Connections keep working: a new subscription still gets its snapshot.
    let snapshot = carol.subscribe(&["alice"]).await;
    assert_eq!(snapshot[0]["status"], "busy");
}

#[tokio::test]
async fn x4_x5_admin_reenables_only_below_the_cap_and_watchers_catch_up() {
    let server = server_with(ServerOptions::default().arg("--cap", 2)).await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    bob.subscribe(&["alice"]).await;
    let carol = server.connect("carol", "carol-phone", "mobile").await;
    assert_eq!(bob.expect_type("notice").await["kind"], "presence_inactive");
    alice
        .ok(set(json!({"status": "busy", "text": "Frozen"})))
        .await;

    // X5: count, cap, peak and state for admins only.
    let (status, cap) = Server::call(server.get("/v1/admin/cap", &admin_token())).await;
    assert_eq!(status, 200, "{cap}");
    assert_eq!(
        (
            cap["count"].clone(),
            cap["cap"].clone(),
            cap["peak"].clone()
        ),
        (json!(3), json!(2), json!(3))
    );
    assert_eq!(cap["enabled"], false);
    let (status, _) = Server::call(server.get("/v1/admin/cap", &token("bob", false))).await;
    assert_eq!(status, 403);

    // X4: refused while the count is not below the cap.
    let enable = || server.post("/v1/admin/cap/enable", &admin_token());
    let (status, body) = Server::call(enable()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "broadcast_enable_refused");
    carol.close().await;
    wait_for_count(&server, 2).await;
    let (status, body) = Server::call(enable()).await;
    assert_eq!(status, 409, "count 2 is not below cap 2: {body}");
    let (status, _) = Server::call(server.post("/v1/admin/cap/enable", &token("bob", false))).await;
    assert_eq!(status, 403);

    // Alice leaves unseen; now the count is below the cap.
    alice.close().await;
    wait_for_count(&server, 1).await;
    let (status, body) = Server::call(enable()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bob.expect_type("notice").await["kind"], "presence_active");
    // Caught up on what was missed, then live again.
    bob.expect_update("alice", "offline").await;
    let _alice = server.connect("alice", "alice-web", "web").await;
    let update = bob.next_update("alice").await;
    assert_eq!(update["status"], "busy");
    assert_eq!(update["text"], "Frozen");
    let (_, cap) = Server::call(server.get("/v1/admin/cap", &admin_token())).await;
    assert_eq!(cap["enabled"], true);
    assert_eq!(cap["peak"], 3);
}

#[tokio::test]
async fn x4_raising_the_cap_never_reenables_by_itself() {
    let server = server_with(ServerOptions::default().arg("--cap", 1)).await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    bob.subscribe(&["alice"]).await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    assert_eq!(bob.expect_type("notice").await["kind"], "presence_inactive");
    server.admin_settings(json!({"cap": 10})).await;
    let (_, cap) = Server::call(server.get("/v1/admin/cap", &admin_token())).await;
    assert_eq!(cap["enabled"], false, "{cap}");
    alice.ok(set_status("away")).await;
    assert_eq!(bob.query("alice").await["status"], "away");

    let (status, body) = Server::call(server.post("/v1/admin/cap/enable", &admin_token())).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bob.expect_type("notice").await["kind"], "presence_active");
    bob.expect_update("alice", "away").await;
    alice.ok(set_status("busy")).await;
    assert_eq!(bob.next_update("alice").await["status"], "busy");
}

/// Reads the cap state (X5) until the connection count is `n`: a closed
/// socket is counted out when the server has processed its close.
async fn wait_for_count(server: &Server, n: u64) {
    wait_until(
        format_args!("a connection count of {n}"),
        presence_e2e::DEADLINE,
        async || Server::call(server.get("/v1/admin/cap", &admin_token())).await,
        |(status, cap)| *status == 200 && cap["count"] == n,
    )
    .await;
}

// ---------------------------------------------------------------- W2, W3

#[tokio::test]
async fn w2_updates_only_for_subscribed_users_and_own() {
    let server = server().await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let _alice_phone = server.connect("alice", "alice-phone", "mobile").await;
    let mut dave = server.connect("dave", "dave-web", "web").await;
    let mut erin = server.connect("erin", "erin-phone", "mobile").await;
    let snapshot = bob.subscribe(&["alice", "erin"]).await;
    assert_eq!(snapshot.len(), 2);

    // Dave changes first, then alice: bob gets alice's and nothing of dave's.
    dave.ok(set_status("busy")).await;
    alice.ok(set_status("busy")).await;
    bob.expect_update("alice", "busy").await;
    // Own changes reach one's own sockets (with `me`), not as a watcher.
    bob.ok(set_status("away")).await;
    let me = bob.expect_me(|m| m["chosen"] == "away").await;
    assert_eq!(me["user"], "bob");
    erin.ok(event("background")).await;
    bob.expect_update("erin", "away").await;
    assert!(
        !bob.has_backlog(|f| f["type"] == "presence"
            && (f["user"] == "dave" || (f["user"] == "bob" && f.get("me").is_none()))),
        "updates only for subscriptions"
    );

    // Unsubscribe stops them; erin's later change proves delivery works.
    bob.ok(json!({"type": "unsubscribe", "users": ["alice"]}))
        .await;
    alice.ok(set_status("away")).await;
    erin.ok(event("foreground")).await;
    bob.expect_update("erin", "online").await;
    assert!(!bob.has_backlog(|f| f["user"] == "alice"));

    // A query answers without subscribing.
    let read = bob.query("dave").await;
    assert_eq!(read["status"], "busy");
    dave.ok(set_status("away")).await;
    erin.ok(event("background")).await;
    bob.expect_update("erin", "away").await;
    assert!(!bob.has_backlog(|f| f["type"] == "presence" && f["user"] == "dave"));
    let many = bob
        .request(json!({"type": "query", "users": ["alice", "dave", "nobody"]}))
        .await;
    let statuses: Vec<&Value> = many["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| &u["status"])
        .collect();
    assert_eq!(
        statuses,
        [&json!("away"), &json!("away"), &json!("offline")]
    );
}

#[tokio::test]
async fn w2_subscribe_answers_every_user_asked_in_order() {
    let server = server().await;
    let mut bob = server.connect("bob", "bob-web", "web").await;
    let mut alice = server.connect("alice", "alice-desktop", "desktop").await;
    let _dave = server.connect("dave", "dave-phone", "mobile").await;
    alice.ok(set_status("busy")).await;
    let users = |entries: &[Value]| -> Vec<(String, String)> {
        entries
            .iter()
            .map(|e| {
                (
                    e["user"].as_str().unwrap().into(),
                    e["status"].as_str().unwrap().into(),
                )
            })
            .collect()
    };
    let first = bob.subscribe(&["alice"]).await;
    assert_eq!(users(&first), [("alice".into(), "busy".into())]);
    // Already watched users are answered too, once each, in the order asked.
    let again = bob.subscribe(&["nobody", "alice", "dave", "alice"]).await;
    assert_eq!(
        users(&again),
        [
            ("nobody".into(), "offline".into()),
            ("alice".into(), "busy".into()),
            ("dave".into(), "online".into()),
        ]
    );
    // Watching twice does not deliver twice.
    alice.ok(set_status("away")).await;
    bob.expect_update("alice", "away").await;
    alice.ok(set_status("online")).await;
    bob.expect_update("alice", "online").await;
    assert!(!bob.has_backlog(|f| f["type"] == "presence" && f["user"] == "alice"));
}

#[tokio::test]
async fn w3_versions_strictly_increase_for_watchers() {
    let server = server().await;
    let mut watchers = Watchers::new(&server, &["alice"]).await;
    let mut desktop = server.connect("alice", "alice-desktop", "desktop").await;
    let mut web = server.connect("alice", "alice-web", "web").await;
    let first = watchers.see("alice", "online").await;
    // Changes back to back, from two devices, without waiting.
    for i in 0..15 {
        desktop
            .send(set_status(if i % 2 == 0 { "busy" } else { "away" }))
            .await;
        web.send(event(if i % 2 == 0 { "idle" } else { "active" }))
            .await;
    }
    desktop
        .ok(set(json!({"status": "busy", "text": "done"})))
        .await;
    let last = entry(&mut web, "alice").await;
    for w in &mut watchers.0 {
        let mut version = first["version"].as_u64().unwrap();
        loop {
            let update = w.next_update("alice").await;
            let v = update["version"].as_u64().unwrap();
            assert!(v > version, "W3: {v} after {version}");
            version = v;
            if update["text"] == "done" {
                assert_eq!(v, last["version"].as_u64().unwrap());
                break;
            }
        }
    }
    // Own updates are ordered too.
    let mut version = 0;
    loop {
        let me = desktop.expect_me(|_| true).await;
        let v = me["version"].as_u64().unwrap();
        assert!(v > version, "W3 (own): {v} after {version}");
        version = v;
        if me["text"] == "done" {
            break;
        }
    }
}
