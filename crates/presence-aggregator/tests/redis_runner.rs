//! The aggregator runner against a real Redis: leases, the stream loop,
//! failover, fencing of a deposed leader, sweeps (A5/H1, H2), the cap
//! (X1–X5), and a rough throughput measurement.

mod redis_support;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use presence_core::{ChosenStatus, DeviceEvent, DeviceId, DisplayedStatus};
use presence_protocol::cluster::{
    AdminCommand, ClusterCommand, CommandResult, ControlMessage, ReplyMessage, UpdateMessage,
    UserCommand, decode_update_batch,
};
use presence_redis::{Keys, RedisClient};
use presence_testkit::{RedisServer, wait_until};
use redis_support::*;

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn one_aggregator_takes_every_shard_and_publishes_updates_and_replies() {
    const S: u16 = 4;
    let server = RedisServer::start();
    let client = connect(&server).await;
    let aggregator = start(&server, aggregator_config("agg-1", S)).await;
    wait_held(&aggregator, u64::from(S), WAIT).await;
    assert_eq!(aggregator.stats().held_shards(), vec![0, 1, 2, 3]);
    register_node(&client, "g1", Duration::from_secs(60), 8).await;

    let mut subscriber = client.subscriber().await.unwrap();
    let channels: Vec<String> = (0..S)
        .flat_map(|s| {
            [
                Keys::new(s).updates_channel(),
                Keys::new(s).node_channel("g1"),
            ]
        })
        .collect();
    subscriber.subscribe(&channels).await.unwrap();

    let users: Vec<String> = (0..8).map(|i| format!("user-{i}")).collect();
    let too_long = "x".repeat(121);
    for user in &users {
        append(&client, S, user, "g1", connect_cmd("web-1", "g1", 1), None).await;
        let busy = set_status_cmd(ChosenStatus::Busy, Some("lunch"));
        append(&client, S, user, "g1", busy, Some(&format!("{user}/ok"))).await;
        let bad = set_status_cmd(ChosenStatus::Away, Some(&too_long));
        append(&client, S, user, "g1", bad, Some(&format!("{user}/bad"))).await;
        append(&client, S, user, "g1", disconnect_cmd("web-1", 1), None).await;
    }

    // Per user: online, busy, offline (at least three updates, maybe
    // merged when entries land in one batch, but always ending offline).
    let mut versions: HashMap<String, Vec<u64>> = HashMap::new();
    let mut last_public: HashMap<String, DisplayedStatus> = HashMap::new();
    let mut replies: BTreeMap<String, CommandResult> = BTreeMap::new();
    let done = |last: &HashMap<String, DisplayedStatus>, replies: &BTreeMap<String, _>| {
        replies.len() == 2 * users.len()
            && users
                .iter()
                .all(|u| last.get(u) == Some(&DisplayedStatus::Offline))
    };
    while !done(&last_public, &replies) {
        let (channel, payload) = next_message(&mut subscriber, WAIT).await;
        if channel.ends_with(":updates") {
            for update in decode_update_batch(&payload).unwrap() {
                versions
                    .entry(update.user.clone())
                    .or_default()
                    .push(update.version);
                if let Some(public) = update.public {
                    last_public.insert(update.user, public.status);
                }
            }
        } else {
            let reply: ReplyMessage = serde_json::from_str(&payload).unwrap();
            assert_eq!(reply.node, "g1");
            replies.insert(reply.r, reply.result);
        }
    }
    for user in &users {
        let seen = &versions[user];
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "{user}: versions not strictly increasing: {seen:?}"
        );
        match &replies[&format!("{user}/ok")] {
            CommandResult::Ok(ok) => {
                let me = ok.me.as_ref().expect("a user command answers with `me`");
                assert_eq!(me.view.text.as_ref().map(|t| t.as_str()), Some("lunch"));
            }
            other => panic!("{user}: set_status refused: {other:?}"),
        }
        match &replies[&format!("{user}/bad")] {
            CommandResult::Error(e) => assert_eq!(e.code, "status_text_too_long"),
            other => panic!("{user}: a 121-character text was accepted: {other:?}"),
        }
        let stored = view(&client, S, user).await.expect("a stored view");
        assert_eq!(stored.status, DisplayedStatus::Offline);
        assert_eq!(stored.version, *seen.last().unwrap());
    }
    let stats = aggregator.stats().snapshot();
    assert_eq!(stats.events_applied, 4 * users.len() as u64);
    assert!(stats.commits > 0);
    assert_eq!(stats.fenced_rejected, 0);

    // A clean shutdown releases every lease at once.
    aggregator.shutdown().await;
    for shard in 0..S {
        assert_eq!(client.lease_holder(shard).await.unwrap(), None);
    }
}

#[tokio::test]
async fn failover_moves_every_shard_and_loses_no_command() {
    const S: u16 = 4;
    let server = RedisServer::start();
    let client = connect(&server).await;
    register_node(&client, "g1", Duration::from_secs(60), 1).await;
    let first = start(&server, aggregator_config("agg-a", S)).await;
    wait_held(&first, u64::from(S), WAIT).await;
    let second = start(&server, aggregator_config("agg-b", S)).await;

    let users: Vec<String> = (0..12).map(|i| format!("member-{i}")).collect();
    for user in &users {
        append(&client, S, user, "g1", connect_cmd("d", "g1", 1), None).await;
        let before = set_status_cmd(ChosenStatus::Busy, Some("before"));
        append(&client, S, user, "g1", before, None).await;
    }
    // Hard kill: no release, the leases lapse after their TTL.
    first.abort();
    let killed = Instant::now();
    for user in &users {
        let during = set_status_cmd(ChosenStatus::Away, Some("during"));
        append(&client, S, user, "g1", during, None).await;
    }
    let ttl = Duration::from_secs(1);
    wait_held(&second, u64::from(S), ttl + Duration::from_secs(1)).await;
    println!("failover of {S} shards took {:?}", killed.elapsed());

    for user in &users {
        wait_until(
            format_args!("{user} to show the last command (away, \"during\")"),
            WAIT,
            async || {
                let v = view(&client, S, user).await?;
                Some((v.status, v.text.map(|t| t.as_str().to_owned())))
            },
            |shown| *shown == Some((DisplayedStatus::Away, Some("during".to_owned()))),
        )
        .await;
    }
    second.shutdown().await;
}

#[tokio::test]
async fn h2_deposed_leader_commit_is_rejected() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    register_node(&client, "g1", Duration::from_secs(60), 1).await;
    let deposed = start(&server, aggregator_config("agg-old", 1)).await;
    wait_held(&deposed, 1, WAIT).await;
    let old_epoch = deposed.stats().snapshot().lease_epoch[0];
    let successor = start(&server, aggregator_config("agg-new", 1)).await;

    let mut subscriber = client.subscriber().await.unwrap();
    subscriber
        .subscribe(&[Keys::new(0).updates_channel()])
        .await
        .unwrap();
    append(&client, 1, "alice", "g1", connect_cmd("d", "g1", 1), None).await;
    let (_, first) = next_message(&mut subscriber, WAIT).await;
    let first: UpdateMessage = only_update(&first);
    assert_eq!(first.epoch, old_epoch);

    // The old leader pauses right before its next commit, renewing
    // nothing; the command it applied is committed by the successor.
    deposed.freeze_leaders_for_test(Duration::from_millis(2500));
    let busy = set_status_cmd(ChosenStatus::Busy, Some("in a meeting"));
    append(&client, 1, "alice", "g1", busy, None).await;
    wait_held(&successor, 1, Duration::from_secs(3)).await;
    let new_epoch = successor.stats().snapshot().lease_epoch[0];
    assert!(new_epoch > old_epoch);

    // After the pause, the old leader's commit is fenced and counted.
    wait_until(
        "the deposed commit to be fenced (fenced_rejected ≥ 1)",
        WAIT,
        async || deposed.stats().snapshot().fenced_rejected,
        |&fenced| fenced >= 1,
    )
    .await;
    wait_held(&deposed, 0, WAIT).await;

    // Watchers saw only the successor's write for the busy status.
    let (_, payload) = next_message(&mut subscriber, WAIT).await;
    let update: UpdateMessage = only_update(&payload);
    assert_eq!(update.epoch, new_epoch, "only the new leader writes");
    assert!(update.version > first.version);
    assert_eq!(update.public.map(|p| p.status), Some(DisplayedStatus::Busy));
    // Nothing else arrives: the deposed leader published nothing.
    let more = tokio::time::timeout(Duration::from_millis(300), subscriber.recv()).await;
    assert!(more.is_err(), "unexpected message: {more:?}");
    let stored = view(&client, 1, "alice").await.unwrap();
    assert_eq!(stored.version, update.version);
    assert_eq!(
        client.lease_holder(0).await.unwrap().unwrap().epoch,
        new_epoch
    );
    deposed.shutdown().await;
    successor.shutdown().await;
}

#[tokio::test]
async fn a5_h1_a_device_whose_heartbeat_lapses_is_removed() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    register_node(&client, "g1", Duration::from_secs(60), 1).await;
    let mut config = aggregator_config("agg", 1);
    config.device_timeout = Duration::from_millis(400);
    let aggregator = start(&server, config).await;
    wait_held(&aggregator, 1, WAIT).await;

    append(&client, 1, "bob", "g1", connect_cmd("web", "g1", 7), None).await;
    wait_status(&client, 1, "bob", DisplayedStatus::Online).await;
    // Nobody refreshes the heartbeat member: it lapses, the sweep removes
    // the device, and bob goes offline (A1, A5).
    wait_status(&client, 1, "bob", DisplayedStatus::Offline).await;
    assert!(aggregator.stats().snapshot().devices_expired >= 1);
    assert_eq!(server.command(&["ZCARD", &Keys::new(0).heartbeats()]), "0");
    aggregator.shutdown().await;
}

#[tokio::test]
async fn h2_a_node_whose_lease_lapses_loses_all_its_devices() {
    const S: u16 = 2;
    let server = RedisServer::start();
    let client = connect(&server).await;
    register_node(&client, "g-live", Duration::from_secs(60), 1).await;
    register_node(&client, "g-dying", Duration::from_millis(800), 2).await;
    let aggregator = start(&server, aggregator_config("agg", S)).await;
    wait_held(&aggregator, u64::from(S), WAIT).await;

    let dying_users = ["carol", "dave", "erin"];
    for user in dying_users {
        append(
            &client,
            S,
            user,
            "g-dying",
            connect_cmd("m", "g-dying", 1),
            None,
        )
        .await;
    }
    append(
        &client,
        S,
        "frank",
        "g-live",
        connect_cmd("m", "g-live", 1),
        None,
    )
    .await;
    for user in dying_users.iter().chain(&["frank"]) {
        wait_status(&client, S, user, DisplayedStatus::Online).await;
    }
    // g-dying stops refreshing its node lease.
    for user in dying_users {
        wait_status(&client, S, user, DisplayedStatus::Offline).await;
    }
    let frank = view(&client, S, "frank").await.unwrap();
    assert_eq!(
        frank.status,
        DisplayedStatus::Online,
        "other nodes' devices stay"
    );
    // Issue 13: the lapse is counted once, for that node, by shard 0's
    // leader (this aggregator leads both shards, whose devices it removed).
    wait_until(
        "g-dying's lapse to be counted",
        WAIT,
        async || aggregator.stats().snapshot().node_lapses,
        |lapses| lapses.contains(&("g-dying".to_owned(), 1)),
    )
    .await;
    let stats = aggregator.stats().snapshot();
    assert!(stats.node_lapses.contains(&("g-live".to_owned(), 0)));
    assert!(stats.devices_expired >= 3);
    aggregator.shutdown().await;
}

#[tokio::test]
async fn x1_x5_cap_across_nodes_disables_and_enable_is_refused_until_below() {
    const S: u16 = 2;
    let server = RedisServer::start();
    let client = connect(&server).await;
    let mut subscriber = client.subscriber().await.unwrap();
    subscriber
        .subscribe(&[Keys::control_channel(), Keys::new(0).node_channel("n1")])
        .await
        .unwrap();
    let aggregator = start(&server, aggregator_config("agg", S)).await;
    wait_held(&aggregator, u64::from(S), WAIT).await;

    // X1: 150 + 100 sockets on two nodes exceed the default cap of 200.
    register_node(&client, "n1", Duration::from_secs(60), 150).await;
    register_node(&client, "n2", Duration::from_secs(60), 100).await;
    let (channel, payload) = next_message(&mut subscriber, WAIT).await;
    assert_eq!(channel, Keys::control_channel());
    let control: ControlMessage = serde_json::from_str(&payload).unwrap();
    assert_eq!(control, ControlMessage::Broadcast { active: false });
    let cap = stored_cap(&server);
    assert_eq!(
        (cap["count"].as_u64(), cap["peak"].as_u64()),
        (Some(250), Some(250))
    );
    assert_eq!(cap["enabled"].as_bool(), Some(false));

    // X4: refused while at or above the cap.
    append(
        &client,
        S,
        "admin",
        "n1",
        ClusterCommand::Admin(AdminCommand::EnableBroadcast),
        Some("e1"),
    )
    .await;
    let reply = next_reply(&mut subscriber).await;
    assert_eq!(reply.r, "e1");
    match reply.result {
        CommandResult::Error(e) => assert_eq!(e.code, "broadcast_enable_refused"),
        other => panic!("enable accepted at 250/200: {other:?}"),
    }

    // Below the cap, the admin's request is accepted and announced (X3).
    register_node(&client, "n1", Duration::from_secs(60), 10).await;
    register_node(&client, "n2", Duration::from_secs(60), 10).await;
    wait_until(
        "the cap owner to store a count of 20",
        WAIT,
        async || stored_cap(&server),
        |cap| cap["count"].as_u64() == Some(20),
    )
    .await;
    assert!(
        !stored_cap(&server)["enabled"].as_bool().unwrap(),
        "X4: never re-enables by itself"
    );
    append(
        &client,
        S,
        "admin",
        "n1",
        ClusterCommand::Admin(AdminCommand::EnableBroadcast),
        Some("e2"),
    )
    .await;
    let mut saw_reply = false;
    let mut saw_control = false;
    while !(saw_reply && saw_control) {
        let (channel, payload) = next_message(&mut subscriber, WAIT).await;
        if channel == Keys::control_channel() {
            let control: ControlMessage = serde_json::from_str(&payload).unwrap();
            assert_eq!(control, ControlMessage::Broadcast { active: true });
            saw_control = true;
        } else {
            let reply: ReplyMessage = serde_json::from_str(&payload).unwrap();
            assert_eq!(reply.r, "e2");
            assert!(matches!(reply.result, CommandResult::Ok(_)), "{reply:?}");
            saw_reply = true;
        }
    }
    let cap = stored_cap(&server);
    assert_eq!(cap["enabled"].as_bool(), Some(true));
    assert_eq!(cap["peak"].as_u64(), Some(250), "X5: the peak stays");
    aggregator.shutdown().await;
}

#[tokio::test]
async fn aggregation_throughput_of_one_shard_leader() {
    // Worst case: every entry of a 500-entry batch is another user, so
    // each commit writes 500 users. Then a hot set of 100 users, whose
    // events coalesce within a batch. DESIGN §6: ≥ 50k events/s, measured
    // in a release build on a quiet machine (BENCHMARKS.md).
    //
    // The floors are for a debug build on a loaded 2-core CI machine:
    // about half the lowest of several runs here with other agents
    // building and testing beside it (load average 10-12 on 2 cores,
    // after the commit script sent consecutive SETs as one MSET): 2 045 –
    // 2 875 events/s for distinct users, 7 274 – 8 031 for 100 hot users.
    // Below them, something made the leader several times slower.
    for (case, users, floor) in [
        ("distinct users", 1_000, 1_000.0),
        ("100 hot users", 100, 3_500.0),
    ] {
        let rate = measure_throughput(users, 20_000, floor).await;
        println!("one shard leader, {case}: {rate:.0} events/s (takeover included)");
        assert!(
            rate >= floor,
            "one shard leader, {case}: {rate:.0} events/s, below the floor of {floor:.0}"
        );
    }
}

/// Fills a stream with `events` commands for `users` users (connects,
/// then idle/active), then starts a leader and returns the events it
/// applied per second. Gives up when the leader is clearly slower than
/// `floor` events/s (half again the time the floor allows).
async fn measure_throughput(users: usize, events: usize, floor: f64) -> f64 {
    let server = RedisServer::start();
    let client = connect(&server).await;
    register_node(&client, "g1", Duration::from_secs(60), users as u64).await;

    // Fill the stream first (8 appenders), then time the leader alone.
    let mut appenders = Vec::new();
    for part in 0..8usize {
        let client = client.clone();
        appenders.push(tokio::spawn(async move {
            for i in (part..events).step_by(8) {
                let user = format!("load-{}", i % users);
                let command = if i < users {
                    connect_cmd("web", "g1", 1)
                } else {
                    let event = if (i / users).is_multiple_of(2) {
                        DeviceEvent::Idle
                    } else {
                        DeviceEvent::Active
                    };
                    ClusterCommand::User(UserCommand::DeviceEvent {
                        device: DeviceId::try_from("web").unwrap(),
                        event,
                    })
                };
                append(&client, 1, &user, "g1", command, None).await;
            }
        }));
    }
    for appender in appenders {
        appender.await.unwrap();
    }

    let started = Instant::now();
    let aggregator = start(&server, aggregator_config("agg", 1)).await;
    wait_until(
        format_args!("all {events} events applied (the floor is {floor:.0}/s)"),
        Duration::from_secs_f64(1.5 * events as f64 / floor),
        async || aggregator.stats().snapshot().events_applied,
        |&applied| applied == events as u64,
    )
    .await;
    let rate = events as f64 / started.elapsed().as_secs_f64();
    let stats = aggregator.stats().snapshot();
    assert_eq!(stats.fenced_rejected, 0);
    println!(
        "  {events} events, {users} users: {} commits",
        stats.commits
    );
    aggregator.shutdown().await;
    rate
}

/// Waits until `user`'s stored view shows `status`.
async fn wait_status(client: &RedisClient, shards: u16, user: &str, status: DisplayedStatus) {
    wait_until(
        format_args!("{user} to show {status:?}"),
        WAIT,
        async || view(client, shards, user).await.map(|v| v.status),
        |shown| *shown == Some(status),
    )
    .await;
}

fn stored_cap(server: &RedisServer) -> serde_json::Value {
    let json = server.command(&["GET", &Keys::cap()]);
    serde_json::from_str(&json).unwrap_or(serde_json::Value::Null)
}

async fn next_reply(subscriber: &mut presence_redis::RedisSubscriber) -> ReplyMessage {
    loop {
        let (channel, payload) = next_message(subscriber, WAIT).await;
        if channel == Keys::new(0).node_channel("n1") {
            return serde_json::from_str(&payload).unwrap();
        }
    }
}

#[tokio::test]
async fn k1_a_settings_change_applies_at_once_on_every_shard() {
    const S: u16 = 4;
    let server = RedisServer::start();
    let client = connect(&server).await;
    register_node(&client, "g1", Duration::from_secs(60), 1).await;
    let mut config = aggregator_config("agg", S);
    // Sweeps (which also re-read the settings) must not be what helps.
    config.sweep_interval = Duration::from_secs(30);
    let aggregator = start(&server, config).await;
    wait_held(&aggregator, u64::from(S), WAIT).await;
    let user = (0..)
        .map(|i| format!("pat-{i}"))
        .find(|u| presence_protocol::cluster::shard_of(u, S) != 0)
        .unwrap();
    let shard = presence_protocol::cluster::shard_of(&user, S);
    let mut subscriber = client.subscriber().await.unwrap();
    subscriber
        .subscribe(&[
            Keys::new(0).node_channel("g1"),
            Keys::new(shard).node_channel("g1"),
        ])
        .await
        .unwrap();
    append(&client, S, &user, "g1", connect_cmd("d", "g1", 1), None).await;

    let patch = presence_protocol::cluster::SettingsPatch {
        calendar_integration: Some(true),
        ..Default::default()
    };
    let update = ClusterCommand::Admin(AdminCommand::UpdateSettings { patch });
    append(&client, S, "admin", "g1", update, Some("settings")).await;
    let (_, payload) = next_message(&mut subscriber, WAIT).await;
    let reply: ReplyMessage = serde_json::from_str(&payload).unwrap();
    assert_eq!(reply.r, "settings");
    assert!(matches!(reply.result, CommandResult::Ok(_)), "{reply:?}");

    // Sent right after the answer, to another shard: already enabled.
    let calendar = ClusterCommand::User(UserCommand::Calendar {
        event_id: "standup".to_owned(),
        busy: true,
        source: presence_protocol::cluster::CalendarOrigin::Integration,
    });
    append(&client, S, &user, "g1", calendar, Some("calendar")).await;
    let (_, payload) = next_message(&mut subscriber, WAIT).await;
    let reply: ReplyMessage = serde_json::from_str(&payload).unwrap();
    assert_eq!(reply.r, "calendar");
    match reply.result {
        CommandResult::Ok(ok) => assert!(ok.me.unwrap().view.calendar_busy),
        other => panic!("the calendar command was refused: {other:?}"),
    }
    aggregator.shutdown().await;
}

/// The one update a commit of one user's change published.
fn only_update(payload: &str) -> UpdateMessage {
    let mut updates = decode_update_batch(payload).unwrap();
    assert_eq!(updates.len(), 1, "one user changed: {payload}");
    updates.remove(0)
}
