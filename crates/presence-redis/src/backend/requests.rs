//! Requests and their answers: a command is appended with a reply id
//! unique across nodes and restarts, and its caller waits for the
//! leader's [`ReplyMessage`](wire::ReplyMessage) — from pub/sub (the pump
//! resolves the waiter) or from the stored outcome
//! `presence:{s}:reply:<id>` (the reply recovery task reads it when the
//! pub/sub answer may have been lost). An append that failed
//! ambiguously is appended again with the same reply id, marked as a
//! retry, so the leader never applies it twice (R1).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use presence_core::CustomStatusId;
use presence_protocol::cluster::{
    self as wire, ClusterCommand, CommandOk, CommandResult, ShardCommand,
};
use tokio::sync::oneshot;

use crate::keys::shard_of;
use presence_backend::{BackendError, BackendResult};
use presence_core::Profile;

use super::methods::wire_profile;
use super::reply_errors::error_from_reply;
use super::{Inner, Waiter, now_ms, unavailable};

/// A request still unanswered after this long has its stored outcome
/// read from Redis (its pub/sub answer may have been lost).
const REPLY_CHECK_AFTER: Duration = Duration::from_millis(500);
/// How often the reply recovery looks at the requests still waiting.
const REPLY_CHECK_EVERY: Duration = Duration::from_millis(250);
/// Pause between appends of the same entry after an ambiguous failure.
const APPEND_RETRY: Duration = Duration::from_millis(100);
/// The stream entry's user for cluster-wide admin commands (the trait does
/// not say which admin asked).
const ADMIN_USER: &str = "admin";

impl Inner {
    /// Appends `command` for `user` to the user's shard (admin commands to
    /// shard 0) and waits for the leader's answer.
    pub(super) async fn request(
        &self,
        user: &str,
        command: ClusterCommand,
    ) -> BackendResult<CommandOk> {
        let shard = self.shard_for(user, &command);
        self.request_on(shard, user, command, None).await
    }

    /// Like [`request`](Self::request), with the profile the caller's token
    /// carried in the same stream entry: one `XADD`, and the leader records
    /// the profile in the same step as the command. An empty profile is
    /// not sent.
    pub(super) async fn request_with_profile(
        &self,
        user: &str,
        command: ClusterCommand,
        profile: Option<&Profile>,
    ) -> BackendResult<CommandOk> {
        let shard = self.shard_for(user, &command);
        let profile = profile
            .map(wire_profile)
            .filter(|profile| !profile.is_empty());
        self.request_on(shard, user, command, profile).await
    }

    /// Like [`request`](Self::request), on an explicit shard.
    ///
    /// The answer comes by pub/sub, or from the stored outcome when the
    /// reply recovery finds one first (the subscriber was away, or the
    /// answer is late): no subscription is needed to be answered.
    pub(super) async fn request_on(
        &self,
        shard: u16,
        user: &str,
        command: ClusterCommand,
        profile: Option<wire::Profile>,
    ) -> BackendResult<CommandOk> {
        self.check_running()?;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let reply = wire::reply_id(&self.config.node_id, self.nonce, n);
        let (tx, rx) = oneshot::channel();
        let deadline = tokio::time::Instant::now() + self.config.request_timeout;
        self.waiters.lock().insert(
            reply.clone(),
            Waiter {
                tx,
                shard,
                since: tokio::time::Instant::now(),
            },
        );
        let guard = WaiterGuard {
            inner: self,
            reply: &reply,
        };
        let entry = wire::StreamEntry {
            user: user.to_owned(),
            command,
            node: self.config.node_id.clone(),
            reply: Some(reply.clone()),
            retry: false,
            profile,
        };
        let appended = self.append_until(shard, entry, deadline);
        tokio::pin!(appended);
        tokio::pin!(rx);
        let mut appending = true;
        // Until the entry is in the stream, the appends' deadline; then a
        // request timeout for the leader to answer, as before retries.
        let mut answer_deadline = deadline;
        let answer = loop {
            tokio::select! {
                answer = &mut rx => break Some(answer),
                appended = &mut appended, if appending => {
                    appending = false;
                    appended?;
                    answer_deadline = tokio::time::Instant::now() + self.config.request_timeout;
                }
                () = tokio::time::sleep_until(answer_deadline) => break None,
            }
        };
        drop(guard);
        let answer = match answer {
            Some(Ok(result)) => result,
            Some(Err(_)) => return Err(BackendError::ShuttingDown),
            // The last word: the outcome may have been committed just now.
            None => match self.stored_outcome(shard, &reply).await {
                Some(result) => result,
                None => {
                    return Err(BackendError::Unavailable(format!(
                        "no shard leader answered within {:?}",
                        self.config.request_timeout
                    )));
                }
            },
        };
        match answer {
            CommandResult::Ok(ok) => Ok(ok),
            CommandResult::Error(e) => Err(error_from_reply(&e.code, &e.message)),
        }
    }

    /// Appends the request's entry, and appends it again (marked as a
    /// retry, same reply id) after each ambiguous failure until one
    /// succeeds or `deadline` passes. Fails at once only when the first
    /// append was never sent (Redis unreachable): then nothing can have
    /// been applied.
    pub(super) async fn append_until(
        &self,
        shard: u16,
        mut entry: wire::StreamEntry,
        deadline: tokio::time::Instant,
    ) -> BackendResult<()> {
        loop {
            if !self.client.is_connected() {
                if !entry.retry {
                    return Err(BackendError::Unavailable("redis is unreachable".into()));
                }
            } else {
                match self.client.append(shard, &entry.to_fields()).await {
                    Ok(_) => return Ok(()),
                    Err(error) => {
                        let reply = entry.reply.as_deref().unwrap_or_default();
                        tracing::debug!(%error, reply, "redis backend: an append failed; appending it again");
                    }
                }
                if !entry.retry {
                    self.append_retries.fetch_add(1, Ordering::Relaxed);
                }
                entry.retry = true;
            }
            if tokio::time::Instant::now() + APPEND_RETRY >= deadline {
                // The request's own deadline answers it (or the outcome, if
                // an append reached Redis after all).
                return std::future::pending().await;
            }
            tokio::time::sleep(APPEND_RETRY).await;
        }
    }

    /// The stored outcome of one request, if a leader committed it
    /// (`None` also when Redis cannot be read).
    pub(super) async fn stored_outcome(&self, shard: u16, reply: &str) -> Option<CommandResult> {
        let stored = self.client.read_reply_outcomes(shard, &[reply]).await;
        let json = stored.ok()?.into_iter().next().flatten()?;
        match serde_json::from_str(&json) {
            Ok(result) => Some(result),
            Err(error) => {
                tracing::warn!(%error, "redis backend: a stored outcome does not decode");
                None
            }
        }
    }

    /// An admin command on shard 0, then a [`ShardCommand::Sync`] through
    /// every other shard, so that when it returns every shard applies the
    /// change (S1, C3): users elsewhere show a renamed custom status, new
    /// settings, at once. A shard whose leader does not answer in time
    /// catches up at its next batch or sweep; the change itself is
    /// committed, so the admin still gets the answer.
    pub(super) async fn admin_request(&self, command: ClusterCommand) -> BackendResult<CommandOk> {
        let ok = self.request(ADMIN_USER, command).await;
        // Whatever happened, the cluster-wide state may have moved.
        self.invalidate_cluster();
        let ok = ok?;
        let syncs = (1..self.config.shards).map(|shard| async move {
            (
                shard,
                self.request_on(shard, "", ClusterCommand::Shard(ShardCommand::Sync), None)
                    .await,
            )
        });
        for (shard, synced) in futures_util::future::join_all(syncs).await {
            if let Err(error) = synced {
                tracing::warn!(shard, %error, "an admin change is not yet applied on a shard");
            }
        }
        Ok(ok)
    }

    /// The shard of a command about `user`.
    pub(super) fn shard_for(&self, user: &str, command: &ClusterCommand) -> u16 {
        if command.is_admin() {
            0
        } else {
            shard_of(user, self.config.shards)
        }
    }

    /// `XADD`s one entry; fails at once while Redis is unreachable.
    pub(super) async fn append(
        &self,
        user: &str,
        command: ClusterCommand,
        reply: Option<String>,
    ) -> BackendResult<()> {
        let shard = self.shard_for(user, &command);
        self.append_on(shard, user, command, reply).await
    }

    /// `XADD`s one entry to `shard`'s stream.
    pub(super) async fn append_on(
        &self,
        shard: u16,
        user: &str,
        command: ClusterCommand,
        reply: Option<String>,
    ) -> BackendResult<()> {
        if !self.client.is_connected() {
            return Err(BackendError::Unavailable("redis is unreachable".into()));
        }
        let entry = wire::StreamEntry {
            user: user.to_owned(),
            command,
            node: self.config.node_id.clone(),
            reply,
            retry: false,
            profile: None,
        };
        self.client
            .append(shard, &entry.to_fields())
            .await
            .map(drop)
            .map_err(unavailable)
    }

    pub(super) fn new_custom_status_id(&self) -> CustomStatusId {
        let node = crate::keys::fnv1a64(self.config.node_id.as_bytes()) & 0xffff_ffff;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        CustomStatusId::try_from(format!("cs{:x}{node:08x}{n:x}", now_ms()))
            .expect("a generated custom status id is short and printable")
    }
}

/// Removes a waiter whatever way its request ends (answer, timeout, error,
/// cancelled caller).
struct WaiterGuard<'a> {
    inner: &'a Inner,
    reply: &'a str,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.inner.waiters.lock().remove(self.reply);
    }
}

// ---- Reply recovery: stored outcomes of requests whose answer was missed ----

pub(super) async fn run_reply_recovery(inner: Arc<Inner>) {
    let mut ticker = tokio::time::interval(REPLY_CHECK_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let every_request = tokio::select! {
            _ = inner.stop.notified() => return,
            _ = inner.recover_replies.notified() => true,
            _ = ticker.tick() => false,
        };
        inner.recover_outcomes(every_request).await;
    }
}

impl Inner {
    /// Answers the waiting requests whose outcome a leader stored: every
    /// one (`every_request`, after a subscriber reconnect or lag) or those
    /// waiting longer than [`REPLY_CHECK_AFTER`]. One `MGET` per shard.
    pub(super) async fn recover_outcomes(&self, every_request: bool) {
        let now = tokio::time::Instant::now();
        let mut by_shard: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (reply, waiter) in self.waiters.lock().iter() {
            if every_request || now.saturating_duration_since(waiter.since) >= REPLY_CHECK_AFTER {
                by_shard
                    .entry(waiter.shard)
                    .or_default()
                    .push(reply.clone());
            }
        }
        for (shard, replies) in by_shard {
            let stored = match self.client.read_reply_outcomes(shard, &replies).await {
                Ok(stored) => stored,
                Err(error) => {
                    tracing::debug!(shard, %error, "redis backend: stored outcomes unreadable");
                    continue;
                }
            };
            for (reply, json) in replies.iter().zip(stored) {
                let Some(json) = json else { continue };
                let result: CommandResult = match serde_json::from_str(&json) {
                    Ok(result) => result,
                    Err(error) => {
                        tracing::warn!(%error, "redis backend: a stored outcome does not decode");
                        continue;
                    }
                };
                if let Some(waiter) = self.waiters.lock().remove(reply) {
                    self.replies_recovered.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(reply, "redis backend: answered from the stored outcome");
                    let _ = waiter.tx.send(result);
                }
            }
        }
    }
}
