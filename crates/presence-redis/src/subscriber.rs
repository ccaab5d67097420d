//! The gateway's pub/sub connection, with the two ways it loses messages
//! turned into an event the caller cannot overlook.
//!
//! Pub/sub is at-most-once. Messages are lost when the connection drops
//! (Redis forgets a disconnected subscriber) and when the reader falls
//! behind fred's broadcast buffer (`Lagged`, DESIGN §5). Both surface from
//! [`RedisSubscriber::recv`] as [`SubscriberEvent::Resync`]: the caller
//! re-reads the views of every user it watches
//! ([`RedisClient::read_views`](super::RedisClient::read_views)); versions
//! make that idempotent.
//!
//! Ordering guarantee: `Resync(Reconnected)` is returned only once every
//! channel is subscribed again, so a resync that starts after it misses
//! nothing. fred's own resubscribe-on-reconnect task runs too, so
//! subscriptions come back even while nobody calls `recv`.
//!
//! It follows the primary: when the client follows a failover (see
//! `failover.rs`), the connection is dropped and the primary resolved
//! again before the new primary generation is published (so leaders
//! republish only once it listens there); the reconnect surfaces as
//! `Resync(Reconnected)` like any other, and the caller re-reads what it
//! watches from the new primary.
//!
//! On Redis Cluster every channel is a shard channel (`SSUBSCRIBE`; the
//! commit script uses `SPUBLISH`): each channel name carries its shard's
//! hash tag, so it is served by the node that owns the shard's slot.

use std::collections::BTreeSet;
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{ClientLike, EventInterface, PubsubInterface, Server};
use fred::types::Message;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::task::JoinHandle;

use super::client::{log_connection_events, quit_in_background};
use super::error::RedisError;

/// Pause between attempts to subscribe again after a reconnect.
const RESUBSCRIBE_PAUSE: Duration = Duration::from_millis(200);

/// What [`RedisSubscriber::recv`] returns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SubscriberEvent {
    /// A message published on a subscribed channel.
    Message { channel: String, payload: String },
    /// Messages may have been lost: re-read what you watch.
    Resync(ResyncReason),
}

/// Why messages may have been lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncReason {
    /// The connection dropped and came back; every channel is subscribed
    /// again.
    Reconnected,
    /// The reader fell behind and `missed` messages were dropped (raise
    /// `pubsub_broadcast_capacity` if this happens often).
    Lagged { missed: u64 },
}

/// A subscriber connection (see the module documentation). Made by
/// [`RedisClient::subscriber`](super::RedisClient::subscriber).
pub struct RedisSubscriber {
    client: SubscriberClient,
    cluster: bool,
    /// Every channel asked for, subscribed or not yet.
    channels: BTreeSet<String>,
    messages: Receiver<Message>,
    reconnects: Receiver<Server>,
    lagged_total: u64,
    manager: JoinHandle<()>,
    /// Moves the connection with the client's pool (see the module
    /// documentation); unregisters when dropped.
    _registration: super::failover::Registration,
}

impl RedisSubscriber {
    /// Wraps a connected subscriber client.
    pub(crate) fn new(
        client: SubscriberClient,
        cluster: bool,
        registration: super::failover::Registration,
    ) -> RedisSubscriber {
        log_connection_events(&client, "subscriber");
        let messages = client.message_rx();
        let reconnects = client.reconnect_rx();
        let manager = client.manage_subscriptions();
        RedisSubscriber {
            client,
            cluster,
            channels: BTreeSet::new(),
            messages,
            reconnects,
            lagged_total: 0,
            manager,
            _registration: registration,
        }
    }

    /// Subscribes to `channels` (`SSUBSCRIBE` on Redis Cluster,
    /// `SUBSCRIBE` otherwise). The channels are remembered even if the
    /// command fails, and subscribed again after every reconnect; on an
    /// error while connected the caller should retry.
    pub async fn subscribe(&mut self, channels: &[String]) -> Result<(), RedisError> {
        self.channels.extend(channels.iter().cloned());
        self.send_subscribe(channels.to_vec()).await
    }

    /// Unsubscribes from `channels` and forgets them.
    pub async fn unsubscribe(&mut self, channels: &[String]) -> Result<(), RedisError> {
        if channels.is_empty() {
            return Ok(());
        }
        for channel in channels {
            self.channels.remove(channel);
        }
        let channels = channels.to_vec();
        if self.cluster {
            for channel in channels {
                self.client.sunsubscribe(channel).await?;
            }
        } else {
            self.client.unsubscribe(channels).await?;
        }
        Ok(())
    }

    /// The channels asked for.
    pub fn channels(&self) -> impl Iterator<Item = &str> {
        self.channels.iter().map(String::as_str)
    }

    /// Messages dropped because the reader lagged, since creation.
    pub fn lagged_total(&self) -> u64 {
        self.lagged_total
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        self.client.is_connected()
    }

    /// The next message or resync; `None` once the subscriber was closed.
    pub async fn recv(&mut self) -> Option<SubscriberEvent> {
        loop {
            tokio::select! {
                biased;
                reconnect = self.reconnects.recv() => match reconnect {
                    Ok(_) | Err(RecvError::Lagged(_)) => {
                        if !self.resubscribe().await {
                            return None;
                        }
                        return Some(SubscriberEvent::Resync(ResyncReason::Reconnected));
                    }
                    Err(RecvError::Closed) => return None,
                },
                message = self.messages.recv() => match message {
                    Ok(message) => {
                        let channel = message.channel.to_string();
                        match message.value.convert::<String>() {
                            Ok(payload) => return Some(SubscriberEvent::Message { channel, payload }),
                            Err(e) => {
                                tracing::warn!(%channel, %e, "redis: dropped a pub/sub message that is not text");
                            }
                        }
                    }
                    Err(RecvError::Lagged(missed)) => {
                        self.lagged_total += missed;
                        return Some(SubscriberEvent::Resync(ResyncReason::Lagged { missed }));
                    }
                    Err(RecvError::Closed) => return None,
                },
            }
        }
    }

    /// Closes the connection; `recv` then returns `None`.
    pub async fn quit(self) {
        self.manager.abort();
        let _ = self.client.quit().await;
    }

    /// Subscribes every remembered channel again, retrying until it works;
    /// `false` if the client was closed meanwhile.
    async fn resubscribe(&mut self) -> bool {
        loop {
            let channels: Vec<String> = self.channels.iter().cloned().collect();
            match self.send_subscribe(channels).await {
                Ok(()) => {
                    self._registration.resubscribed();
                    return true;
                }
                Err(error) => {
                    tracing::warn!(%error, "redis: subscribing again after a reconnect failed; retrying");
                }
            }
            tokio::time::sleep(RESUBSCRIBE_PAUSE).await;
            if let Err(TryRecvError::Closed) = self.reconnects.try_recv() {
                return false;
            }
        }
    }

    async fn send_subscribe(&self, channels: Vec<String>) -> Result<(), RedisError> {
        if channels.is_empty() {
            return Ok(());
        }
        if self.cluster {
            // Sharded pub/sub: one SSUBSCRIBE may only name channels of
            // one slot (else CROSSSLOT); each of ours is its shard's slot.
            for channel in channels {
                self.client.ssubscribe(channel).await?;
            }
        } else {
            self.client.subscribe(channels).await?;
        }
        Ok(())
    }
}

impl Drop for RedisSubscriber {
    fn drop(&mut self) {
        self.manager.abort();
        quit_in_background(self.client.clone());
    }
}

impl super::client::RedisClient {
    /// Publishes `message` on `channel` (`SPUBLISH` on Redis Cluster);
    /// returns how many subscribers received it.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, RedisError> {
        let pool = self.pool()?;
        let client = pool.next_connected();
        let receivers: u64 = if self.is_cluster() {
            client.spublish(channel, message).await?
        } else {
            client.publish(channel, message).await?
        };
        Ok(receivers)
    }
}
