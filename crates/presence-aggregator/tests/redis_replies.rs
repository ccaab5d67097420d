//! Truthful replies against a real Redis (R1): the leader's fenced commit
//! stores each answer under `presence:{s}:reply:<id>` with a short time to
//! live, and an entry appended again with the same reply id (a gateway's
//! retry after an ambiguous `XADD`) is answered from that stored outcome,
//! not applied again, even after a later change of the same user.

mod redis_support;

use std::time::Duration;

use presence_core::{ChosenStatus, DisplayedStatus};
use presence_protocol::cluster::{
    ClusterCommand, CommandResult, REPLY_OUTCOME_TTL_MS, ReplyMessage, StreamEntry, shard_of,
};
use presence_redis::{Keys, RedisClient};
use presence_testkit::{RedisServer, wait_until};
use redis_support::*;

const S: u16 = 2;
const WAIT: Duration = Duration::from_secs(5);

/// Waits for the stored outcome of reply id `r` in `user`'s shard.
async fn stored_outcome(client: &RedisClient, user: &str, r: &str) -> CommandResult {
    let stored = wait_until(
        format_args!("the outcome of {r} to be stored"),
        WAIT,
        async || {
            let mut stored = client
                .read_reply_outcomes(shard_of(user, S), &[r])
                .await
                .unwrap();
            stored.pop().flatten()
        },
        Option::is_some,
    )
    .await;
    serde_json::from_str(&stored.expect("accepted above")).unwrap()
}

/// Appends `command` for `user` with reply id `r`, as a retry or not.
async fn append_with_reply(
    client: &RedisClient,
    user: &str,
    command: ClusterCommand,
    r: &str,
    retry: bool,
) {
    let entry = StreamEntry {
        user: user.to_owned(),
        command,
        node: "g1".to_owned(),
        reply: Some(r.to_owned()),
        retry,
        profile: None,
    };
    client
        .append(shard_of(user, S), &entry.to_fields())
        .await
        .unwrap();
}

#[tokio::test]
async fn r1_a_retried_append_is_answered_from_the_stored_outcome_and_applied_once() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let aggregator = start(&server, aggregator_config("agg-1", S)).await;
    wait_held(&aggregator, u64::from(S), WAIT).await;
    register_node(&client, "g1", Duration::from_secs(60), 1).await;
    let user = "alice";
    let mut subscriber = client.subscriber().await.unwrap();
    let replies = Keys::new(shard_of(user, S)).node_channel("g1");
    subscriber
        .subscribe(std::slice::from_ref(&replies))
        .await
        .unwrap();

    append(&client, S, user, "g1", connect_cmd("web-1", "g1", 1), None).await;
    let busy = set_status_cmd(ChosenStatus::Busy, Some("lunch"));
    append_with_reply(&client, user, busy.clone(), "boot1.1@g1", false).await;
    let first = stored_outcome(&client, user, "boot1.1@g1").await;
    let CommandResult::Ok(ok) = &first else {
        panic!("set_status refused: {first:?}")
    };
    let me = ok.me.as_ref().expect("the outcome carries the own view");
    assert_eq!(me.view.text.as_ref().map(|t| t.as_str()), Some("lunch"));
    // Stored with a time to live, not forever.
    let key = Keys::new(shard_of(user, S)).reply("boot1.1@g1");
    let ttl: i64 = server.command(&["PTTL", &key]).parse().unwrap();
    assert!(
        ttl > 0 && ttl <= REPLY_OUTCOME_TTL_MS as i64,
        "ttl {ttl} ms of {key}"
    );

    // A later change, then the retry of the first request.
    let online = set_status_cmd(ChosenStatus::Online, Some("back"));
    append_with_reply(&client, user, online, "boot1.2@g1", false).await;
    stored_outcome(&client, user, "boot1.2@g1").await;
    append_with_reply(&client, user, busy, "boot1.1@g1", true).await;

    // The retry is answered (the second answer to that id on the
    // channel), with the first outcome.
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let (_, payload) = next_message(&mut subscriber, WAIT).await;
        if let Ok(reply) = serde_json::from_str::<ReplyMessage>(&payload)
            && reply.r == "boot1.1@g1"
        {
            answers.push(reply.result);
        }
    }
    let answer = answers.pop().expect("two answers");
    assert_eq!(answer, first, "the retry gets the first outcome");
    // And not applied again: the later change stands.
    let stored = view(&client, S, user).await.expect("a stored view");
    assert_eq!(stored.status, DisplayedStatus::Online, "{stored:?}");
    assert_eq!(stored.text.as_ref().map(|t| t.as_str()), Some("back"));
    aggregator.shutdown().await;
}

/// R1 across a leader change: the retry is applied by one leader, which
/// then goes away; the request's first append, which Redis ran late,
/// reaches the next leader. That leader never saw the retry, so its runner
/// looks first appends up in Redis for a while after the takeover and
/// answers this one from the retry's stored outcome instead of applying
/// it again over the later change.
#[tokio::test]
async fn r1_a_late_first_append_after_a_leader_change_is_answered_from_the_retry() {
    let server = RedisServer::start();
    let client = connect(&server).await;
    let first_leader = start(&server, aggregator_config("agg-1", S)).await;
    wait_held(&first_leader, u64::from(S), WAIT).await;
    register_node(&client, "g1", Duration::from_secs(60), 1).await;
    let user = "alice";
    append(&client, S, user, "g1", connect_cmd("web-1", "g1", 1), None).await;
    let busy = set_status_cmd(ChosenStatus::Busy, Some("lunch"));
    append_with_reply(&client, user, busy.clone(), "boot1.1@g1", true).await;
    let retried = stored_outcome(&client, user, "boot1.1@g1").await;
    assert!(matches!(retried, CommandResult::Ok(_)), "{retried:?}");
    let online = set_status_cmd(ChosenStatus::Online, Some("back"));
    append_with_reply(&client, user, online, "boot1.2@g1", false).await;
    stored_outcome(&client, user, "boot1.2@g1").await;
    first_leader.shutdown().await;

    let next_leader = start(&server, aggregator_config("agg-2", S)).await;
    wait_held(&next_leader, u64::from(S), WAIT).await;
    let mut subscriber = client.subscriber().await.unwrap();
    let replies = Keys::new(shard_of(user, S)).node_channel("g1");
    subscriber
        .subscribe(std::slice::from_ref(&replies))
        .await
        .unwrap();
    append_with_reply(&client, user, busy, "boot1.1@g1", false).await;
    let answer = loop {
        let (_, payload) = next_message(&mut subscriber, WAIT).await;
        if let Ok(reply) = serde_json::from_str::<ReplyMessage>(&payload)
            && reply.r == "boot1.1@g1"
        {
            break reply.result;
        }
    };
    assert_eq!(
        answer, retried,
        "the late first append gets the retry's outcome"
    );
    let stored = view(&client, S, user).await.expect("a stored view");
    assert_eq!(stored.status, DisplayedStatus::Online, "{stored:?}");
    assert_eq!(stored.text.as_ref().map(|t| t.as_str()), Some("back"));
    next_leader.shutdown().await;
}
