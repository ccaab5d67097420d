//! The pub/sub pump: the task that owns the [`RedisSubscriber`], proves
//! each subscription with a probe, and hands every message to its
//! handler — answers to their waiters, [`UpdateMessage`]s to the
//! [`Update`] channel (only those of users the gateway's
//! [`Interest`](crate::Interest) wants, seen by the user id that leads each
//! line of a commit's batch, before any JSON is decoded; and dropping
//! versions not newer than the last one emitted, W3), [`ControlMessage`]s to the cached cluster state and the
//! gateway — and starts a resync whenever messages may have been lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_core::DisplayedStatus;
use presence_protocol::cluster::{
    self as wire, CommandOk, CommandResult, ControlMessage, NodeMessage, UpdateMessage,
};

use crate::keys::Keys;
use crate::subscriber::{ResyncReason, SubscriberEvent};
use presence_backend::{ConnId, PresenceSnapshot, SelfSnapshot, Update};

use super::Inner;
use super::seen::{Offer, Source};

/// Pause before building the subscriber again after it failed or closed.
const SUBSCRIBER_RETRY: Duration = Duration::from_millis(200);
/// How long a subscription probe may take to come back, and how many are
/// sent before the subscriber is rebuilt.
const PROBE_WAIT: Duration = Duration::from_millis(500);
const PROBE_TRIES: usize = 6;
/// Pause before retrying a resync whose reads failed.
const RESYNC_RETRY: Duration = Duration::from_millis(250);

/// A message of this node's channel: an answer (by far the most common) or
/// a replacement notice. Decoded directly as each shape rather than
/// through an untagged enum, whose buffering does not round-trip every
/// field type of an answer.
fn decode_node_message(payload: &str) -> Result<NodeMessage, serde_json::Error> {
    serde_json::from_str::<wire::ReplyMessage>(payload)
        .map(|reply| NodeMessage::Reply(Box::new(reply)))
        .or_else(|reply_error| {
            serde_json::from_str::<wire::ReplacedMessage>(payload)
                .map(NodeMessage::Replaced)
                .map_err(|_| reply_error)
        })
}

// ---- The pump: pub/sub → waiters and updates ----

#[derive(Clone, Copy)]
enum Channel {
    Updates,
    /// This node's own channel of each shard: answers and notices.
    Node,
    Control,
}

pub(super) async fn run_pump(inner: Arc<Inner>) {
    let mut channels: HashMap<String, Channel> = HashMap::new();
    for shard in 0..inner.config.shards {
        let keys = Keys::new(shard);
        channels.insert(keys.updates_channel(), Channel::Updates);
        channels.insert(keys.node_channel(&inner.config.node_id), Channel::Node);
    }
    channels.insert(Keys::control_channel(), Channel::Control);
    let names: Vec<String> = channels.keys().cloned().collect();
    let mut first = true;
    loop {
        let mut subscriber = match inner.client.subscriber().await {
            Ok(subscriber) => subscriber,
            Err(error) => {
                tracing::warn!(%error, "redis backend: no subscriber yet; retrying");
                tokio::time::sleep(SUBSCRIBER_RETRY).await;
                continue;
            }
        };
        if let Err(error) = subscriber.subscribe(&names).await {
            tracing::warn!(%error, "redis backend: subscribing failed; retrying");
            tokio::time::sleep(SUBSCRIBER_RETRY).await;
            continue;
        }
        // SUBSCRIBE's answer may come before Redis routes messages to us:
        // only a message seen on the connection proves it listens.
        if !inner.confirm_subscription(&mut subscriber, &channels).await {
            tracing::warn!("redis backend: the subscription was not confirmed; subscribing again");
            subscriber.quit().await;
            tokio::time::sleep(SUBSCRIBER_RETRY).await;
            continue;
        }
        inner.subscribed.store(true, Ordering::Release);
        inner.subscribed_changed.notify_waiters();
        // A resync whose reads failed (Redis not fully back yet) is retried
        // until it completes.
        // When a resync whose reads failed is tried again; kept across
        // messages so a busy channel never postpones it.
        let mut resync_retry: Option<tokio::time::Instant> = None;
        let retry_after = |done: bool| (!done).then(|| tokio::time::Instant::now() + RESYNC_RETRY);
        if !first {
            // A new subscriber after the old one closed: like a reconnect.
            inner.recover_replies.notify_one();
            inner.refresh_soon.notify_one();
            inner.reregister.notify_one();
            resync_retry = retry_after(inner.resync(ResyncReason::Reconnected).await);
        }
        first = false;
        loop {
            tokio::select! {
                event = subscriber.recv() => match event {
                    Some(SubscriberEvent::Message { channel, payload }) => {
                        inner.dispatch(&channels, &channel, &payload);
                    }
                    Some(SubscriberEvent::Resync(reason)) => {
                        // Answers may have been lost with the connection or
                        // the lag: read the pending requests' outcomes now,
                        // without waiting for the subscription's proof
                        // (stored outcomes do not depend on it).
                        inner.recover_replies.notify_one();
                        if reason == ResyncReason::Reconnected {
                            // Redis may be back from an outage: refresh the
                            // node lease and heartbeats at once (H4).
                            inner.refresh_soon.notify_one();
                            // Read the stored views only once messages flow
                            // again, or a change between the read and the
                            // subscription would be lost.
                            if !inner.confirm_subscription(&mut subscriber, &channels).await {
                                break;
                            }
                            inner.reregister.notify_one();
                        }
                        resync_retry = retry_after(inner.resync(reason).await);
                    }
                    None => break,
                },
                _ = tokio::time::sleep_until(resync_retry.unwrap_or_else(tokio::time::Instant::now)),
                    if resync_retry.is_some() => {
                    resync_retry = retry_after(inner.resync(ResyncReason::Lagged { missed: 0 }).await);
                }
            }
        }
        inner.subscribed.store(false, Ordering::Release);
        tracing::warn!("redis backend: the subscriber closed; building a new one");
        tokio::time::sleep(SUBSCRIBER_RETRY).await;
    }
}

impl Inner {
    /// Publishes a probe on this node's own channel of shard 0 until this node's
    /// subscriber receives it (messages that arrive meanwhile are handled
    /// as usual); `false` if it never does within a few tries.
    async fn confirm_subscription(
        &self,
        subscriber: &mut crate::subscriber::RedisSubscriber,
        channels: &HashMap<String, Channel>,
    ) -> bool {
        let probe = format!("probe-{:x}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let message = wire::ReplyMessage {
            node: self.config.node_id.clone(),
            r: probe.clone(),
            result: CommandResult::Ok(CommandOk::default()),
        };
        let payload = serde_json::to_string(&message).expect("a reply serialises");
        let channel = Keys::new(0).node_channel(&self.config.node_id);
        for _ in 0..PROBE_TRIES {
            if let Err(error) = self.client.publish(&channel, &payload).await {
                tracing::debug!(%error, "redis backend: the subscription probe was not published");
            }
            let deadline = tokio::time::Instant::now() + PROBE_WAIT;
            loop {
                let event = match tokio::time::timeout_at(deadline, subscriber.recv()).await {
                    Err(_) => break,
                    Ok(None) => return false,
                    Ok(Some(event)) => event,
                };
                match event {
                    SubscriberEvent::Message {
                        channel: on,
                        payload: got,
                    } => {
                        if on == channel && got == payload {
                            return true;
                        }
                        self.dispatch(channels, &on, &got);
                    }
                    // Subscribed again by the client: probe again.
                    SubscriberEvent::Resync(_) => break,
                }
            }
        }
        false
    }

    /// Waits up to `limit` for the subscriber to listen; whether it does.
    pub(super) async fn wait_subscribed(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.subscribed_changed.notified();
            if self.subscribed.load(Ordering::Acquire) {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.subscribed.load(Ordering::Acquire);
            }
        }
    }

    /// Hands a pub/sub message to the handler of its channel's kind.
    fn dispatch(&self, channels: &HashMap<String, Channel>, channel: &str, payload: &str) {
        match channels.get(channel) {
            Some(kind) => self.handle_message(*kind, payload),
            None => tracing::debug!(%channel, "redis backend: a message on an unknown channel"),
        }
    }

    fn handle_message(&self, kind: Channel, payload: &str) {
        match kind {
            Channel::Node => match decode_node_message(payload) {
                Ok(NodeMessage::Reply(reply)) if reply.node == self.config.node_id => {
                    if let Some(waiter) = self.waiters.lock().remove(&reply.r) {
                        let _ = waiter.tx.send(reply.result);
                    }
                }
                Ok(NodeMessage::Replaced(notice)) if notice.node == self.config.node_id => {
                    let _ = self.updates.send(Update::Replaced {
                        user: Arc::from(notice.user),
                        conn: ConnId(notice.replaced),
                    });
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(%error, "redis backend: an undecodable reply"),
            },
            Channel::Updates => self.handle_updates(payload),
            Channel::Control => match serde_json::from_str::<ControlMessage>(payload) {
                Ok(control) => self.handle_control(control),
                Err(error) => {
                    tracing::warn!(%error, "redis backend: an undecodable control message")
                }
            },
        }
    }

    /// A commit's batch of updates: each line whose user nobody here wants
    /// is skipped before its JSON is decoded; the others are emitted.
    fn handle_updates(&self, payload: &str) {
        let interest = self.interest.read().clone();
        for line in wire::update_lines(payload) {
            if let (Some(user), Some(interest)) = (line.user, &interest)
                && !interest.wants(user)
                && !self.seen.lock().has_socket(user)
            {
                // Skipping leaves the user's remembered versions behind,
                // never ahead: a later read or update of them is newer.
                self.updates_skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            match line.decode() {
                Ok(update) => self.emit_update(update, Source::PubSub),
                Err(error) => tracing::warn!(%error, "redis backend: an undecodable update"),
            }
        }
    }

    /// W3: emits each view only if newer than the last one emitted (see
    /// `seen.rs`, which also says what `source` changes).
    pub(super) fn emit_update(&self, update: UpdateMessage, source: Source) {
        let user: Arc<str> = Arc::from(update.user.as_str());
        let offer = Offer {
            version: update.version,
            public: update.public.is_some(),
            // A user never read nor heard of reads as offline at version 0
            // here (and from the store): a leader's first view of a new
            // user still offline without text changes nothing anyone here
            // was shown.
            public_is_blank: update
                .public
                .as_ref()
                .is_some_and(|v| v.status == DisplayedStatus::Offline && v.text.is_none()),
            own: update.self_view.is_some(),
        };
        let admitted = self.seen.lock().admit(&user, offer, source);
        let public = update.public.filter(|_| admitted.public);
        let own = update.self_view.filter(|_| admitted.own);
        if let Some(view) = public {
            let _ = self.updates.send(Update::Presence {
                snapshot: Arc::new(PresenceSnapshot {
                    user: user.clone(),
                    view,
                    version: update.version,
                }),
                changed_at: committed_at(update.committed_at_us),
            });
        }
        if let Some(view) = own {
            let _ = self.updates.send(Update::SelfState(Arc::new(SelfSnapshot {
                user,
                view,
                version: update.version,
            })));
        }
    }

    pub(super) fn handle_control(&self, control: ControlMessage) {
        match control {
            ControlMessage::Broadcast { active } => {
                if let Some(cached) = self.cluster.lock().as_mut() {
                    cached.cap.enabled = active;
                }
                let _ = self.updates.send(Update::Broadcast { active });
            }
            ControlMessage::SettingsChanged { settings } => {
                let settings = Arc::new(settings);
                if let Some(cached) = self.cluster.lock().as_mut() {
                    cached.settings = settings.clone();
                    cached.cap.cap = settings.cap;
                }
                let _ = self.updates.send(Update::Settings(settings));
            }
            ControlMessage::CustomStatusesChanged { .. } => self.invalidate_cluster(),
        }
    }
}

/// When a change was committed, for the delivery latency: the leader's
/// stamp, or now for views without one (a resync's reads, older leaders).
fn committed_at(committed_at_us: Option<u64>) -> SystemTime {
    committed_at_us
        .map(|us| UNIX_EPOCH + Duration::from_micros(us))
        .unwrap_or_else(SystemTime::now)
}
