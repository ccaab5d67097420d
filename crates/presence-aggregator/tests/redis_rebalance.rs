//! H5 and the liveness owner against a real Redis, with aggregators in
//! this process: shards spread evenly over the aggregators and move by
//! planned handoff (nothing lost, nothing applied twice, a short gap),
//! a node lease lapse is counted once for the whole cluster, and nodes
//! lapsed for long are forgotten (issue 11, issue 12 item 1, issue 13).

mod redis_support;

use std::time::{Duration, Instant};

use presence_aggregator::{AggregatorHandle, target_leaders};
use presence_core::{ChosenStatus, DisplayedStatus};
use presence_redis::{Keys, RedisClient};
use presence_testkit::{RedisServer, wait_until};
use redis_support::*;

const WAIT: Duration = Duration::from_secs(10);

/// The lease holder of every shard, by node id.
async fn holders(client: &RedisClient, shards: u16) -> Vec<Option<String>> {
    client
        .lease_holders(shards)
        .await
        .unwrap()
        .into_iter()
        .map(|l| l.map(|l| l.node))
        .collect()
}

/// Waits until the leases are held exactly as [`target_leaders`] spreads
/// `shards` over `nodes`.
async fn wait_spread(client: &RedisClient, shards: u16, nodes: &[&str]) {
    let nodes: Vec<String> = nodes.iter().map(|n| (*n).to_owned()).collect();
    let target: Vec<Option<String>> = target_leaders(shards, &nodes)
        .into_iter()
        .map(Some)
        .collect();
    wait_until(
        format_args!("the shards spread as {target:?}"),
        WAIT,
        async || holders(client, shards).await,
        |held| *held == target,
    )
    .await;
}

fn handoffs(handle: &AggregatorHandle) -> u64 {
    handle.stats().snapshot().handoffs
}

/// H5: a second and a third aggregator join: the shards spread to the
/// target (each holds ⌊S/N⌋ or ⌈S/N⌉) by planned handoffs; one leaves
/// cleanly and the others take its shards at once, each within 1 s of
/// its release. Commands appended all along are each applied once:
/// every user ends on its last command and its version counts one
/// change per command.
#[tokio::test]
async fn h5_aggregators_spread_the_shards_and_hand_them_off_by_plan() {
    const S: u16 = 8;
    let server = RedisServer::start();
    let client = connect(&server).await;
    register_node(&client, "g1", Duration::from_secs(120), 1).await;
    let a = start(&server, aggregator_config("agg-a", S)).await;
    wait_spread(&client, S, &["agg-a"]).await;

    let users: Vec<String> = (0..16).map(|i| format!("member-{i}")).collect();
    for user in &users {
        append(&client, S, user, "g1", connect_cmd("d", "g1", 1), None).await;
    }
    let write_round = async |round: usize| {
        for user in &users {
            let status = if round.is_multiple_of(2) {
                ChosenStatus::Busy
            } else {
                ChosenStatus::Away
            };
            let text = format!("round {round}");
            append(
                &client,
                S,
                user,
                "g1",
                set_status_cmd(status, Some(&text)),
                None,
            )
            .await;
        }
    };
    write_round(0).await;

    let b = start(&server, aggregator_config("agg-b", S)).await;
    write_round(1).await;
    let c = start(&server, aggregator_config("agg-c", S)).await;
    write_round(2).await;
    wait_spread(&client, S, &["agg-a", "agg-b", "agg-c"]).await;
    write_round(3).await;
    assert!(handoffs(&a) >= 1, "agg-a handed shards off");
    for handle in [&a, &b, &c] {
        let held = handle.stats().snapshot().shards_held;
        assert!((2..=3).contains(&held), "⌊8/3⌋ or ⌈8/3⌉, not {held}");
    }

    // A clean leave: c's shards go to a and b at once.
    let c_shards = c.stats().held_shards();
    let c_stats = c.stats().clone();
    let left = Instant::now();
    c.shutdown().await;
    let released = left.elapsed();
    let taken = wait_until(
        "c's shards taken by a and b",
        WAIT,
        async || holders(&client, S).await,
        |held| {
            c_shards.iter().all(|s| {
                held[usize::from(*s)]
                    .as_deref()
                    .is_some_and(|n| n != "agg-c")
            })
        },
    )
    .await;
    let gap = left.elapsed().saturating_sub(released);
    println!("c released {c_shards:?} after {released:?}; taken {gap:?} later: {taken:?}");
    assert!(
        gap <= Duration::from_secs(1),
        "H5: a planned handoff gap of {gap:?}"
    );
    wait_spread(&client, S, &["agg-a", "agg-b"]).await;
    write_round(4).await;

    for user in &users {
        wait_until(
            format_args!("{user} to show its last command"),
            WAIT,
            async || view(&client, S, user).await.map(|v| (v.status, v.text)),
            |shown| {
                shown.as_ref().is_some_and(|(s, t)| {
                    *s == DisplayedStatus::Busy
                        && t.as_ref().is_some_and(|t| t.as_str() == "round 4")
                })
            },
        )
        .await;
    }
    // Nothing applied twice: each leader applied each entry once, so the
    // events applied over all aggregators are the entries appended (one
    // connect and five changes per user).
    let applied: u64 = [a.stats(), b.stats(), &c_stats]
        .iter()
        .map(|s| s.snapshot().events_applied)
        .sum();
    assert_eq!(applied, 6 * users.len() as u64, "every entry applied once");
    a.shutdown().await;
    b.shutdown().await;
}

/// Issue 13: with several aggregators, a gateway node whose lease lapses
/// is counted once for the whole cluster (by shard 0's leader), under its
/// node id; every aggregator keeps a zero counter for the live node.
#[tokio::test]
async fn h2_a_lapse_is_counted_once_per_node_across_the_cluster() {
    const S: u16 = 4;
    let server = RedisServer::start();
    let client = connect(&server).await;
    register_node(&client, "g-live", Duration::from_secs(120), 1).await;
    register_node(&client, "g-dying", Duration::from_millis(1500), 1).await;
    let a = start(&server, aggregator_config("agg-a", S)).await;
    let b = start(&server, aggregator_config("agg-b", S)).await;
    wait_spread(&client, S, &["agg-a", "agg-b"]).await;
    for user in ["carol", "dave", "erin", "frank"] {
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
    let lapses = async || {
        let mut count = 0;
        for handle in [&a, &b] {
            for (node, n) in handle.stats().snapshot().node_lapses {
                if node == "g-dying" {
                    count += n;
                }
            }
        }
        count
    };
    wait_until("g-dying's lapse to be counted", WAIT, lapses, |n| *n >= 1).await;
    // Several sweeps (every 100 ms) later, still once: this pause proves
    // that nothing more is counted, it waits for nothing.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(lapses().await, 1, "one lapse, counted once");
    for handle in [&a, &b] {
        let live = handle.stats().snapshot().node_lapses;
        assert!(live.contains(&("g-live".to_owned(), 0)), "{live:?}");
    }
    a.shutdown().await;
    b.shutdown().await;
}

/// Issue 11 (`forget_node`), H2: shard 0's leader forgets gateway nodes
/// lapsed for longer than `forget_nodes_after`: their lease, socket count
/// and lapse record leave Redis; recent lapses and live nodes stay. A
/// forgotten node that comes back registers again.
#[tokio::test]
async fn h2_the_liveness_owner_forgets_long_lapsed_nodes() {
    const S: u16 = 2;
    let server = RedisServer::start();
    let client = connect(&server).await;
    let now = now_ms();
    client
        .refresh_node("g-live", now + 120_000, 3)
        .await
        .unwrap();
    client
        .refresh_node("g-gone", now - 60_000, 5)
        .await
        .unwrap();
    client
        .refresh_node("g-recent", now - 1_000, 2)
        .await
        .unwrap();
    client
        .join_aggregators("agg-gone", now - 60_000)
        .await
        .unwrap();
    let mut config = aggregator_config("agg", S);
    config.forget_nodes_after = Duration::from_secs(30);
    let aggregator = start(&server, config).await;
    wait_held(&aggregator, u64::from(S), WAIT).await;

    let nodes = Keys::nodes();
    let gone = async || {
        (
            server.command(&["ZSCORE", &nodes, "g-gone"]),
            server.command(&["HEXISTS", &Keys::conns(), "g-gone"]),
            server.command(&["HEXISTS", &Keys::lapses(), "g-gone"]),
            server.command(&["ZSCORE", &Keys::aggregators(), "agg-gone"]),
        )
    };
    wait_until(
        "g-gone and agg-gone to be forgotten",
        WAIT,
        gone,
        |(score, conns, lapse, member)| {
            score == "(nil)" && conns == "0" && lapse == "0" && member == "(nil)"
        },
    )
    .await;
    assert!(aggregator.stats().snapshot().nodes_forgotten >= 1);
    // The recent lapse is counted (and recorded), not forgotten.
    wait_until(
        "g-recent's lapse to be recorded",
        WAIT,
        async || server.command(&["HEXISTS", &Keys::lapses(), "g-recent"]),
        |exists| exists == "1",
    )
    .await;
    assert_ne!(server.command(&["ZSCORE", &nodes, "g-recent"]), "(nil)");
    assert_ne!(server.command(&["ZSCORE", &nodes, "g-live"]), "(nil)");
    assert_eq!(server.command(&["HGET", &Keys::conns(), "g-live"]), "3");
    // Coming back is registering again (a first registration).
    let previous = client
        .refresh_node("g-gone", now_ms() + 10_000, 1)
        .await
        .unwrap();
    assert_eq!(previous, None);
    aggregator.shutdown().await;
}
