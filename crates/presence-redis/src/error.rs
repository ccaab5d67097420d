//! What can go wrong talking to Redis, named so callers can react: a
//! transport failure (`backend_unavailable`: retry later, resync after) is
//! not a bug in a script (`internal`) nor a misconfigured cluster.

use fred::error::{Error as FredError, ErrorKind};
use thiserror::Error;

use presence_backend::BackendError;

/// An error of the Redis layer.
#[derive(Debug, Error)]
pub enum RedisError {
    /// Redis did not answer within the command timeout (it is down,
    /// partitioned, or overloaded).
    #[error("redis did not answer in time: {0}")]
    Timeout(String),
    /// The connection is down or broke while the command was in flight.
    #[error("redis is unreachable: {0}")]
    Connection(String),
    /// More commands are waiting for a reconnect than
    /// `RedisConfig::max_command_buffer`: the command failed at once
    /// instead of queueing without bound (H3).
    #[error("too many redis commands are waiting for a connection")]
    Backpressure,
    /// Redis refused the credentials.
    #[error("redis refused the credentials: {0}")]
    Auth(String),
    /// Fewer replicas than `RedisConfig::replica_acks` confirmed a write
    /// within `RedisConfig::replica_ack_timeout` (`WAIT`). The write may be
    /// on the primary, but a failover could lose it: it must not be
    /// acknowledged (R1).
    #[error("only {acked} of {wanted} redis replicas confirmed the write in time")]
    NotReplicated { acked: u64, wanted: u64 },
    /// The primary changed while the operation waited or was about to be
    /// sent (see `RedisClient::on_primary`): it was not sent, and what the
    /// caller holds in memory may include writes the new primary lost.
    #[error("the redis primary changed; the operation was not sent")]
    PrimaryChanged,
    /// A script was still unknown to Redis after loading it again.
    #[error("script {script} is not loaded on the server even after SCRIPT LOAD")]
    NoScript { script: &'static str },
    /// Redis answered something this code does not expect (a bug here or
    /// a foreign value in our keys).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// Redis answered with an error (e.g. `WRONGTYPE`, a script error).
    #[error("redis refused the command: {0}")]
    Server(String),
    /// The URL or another setting cannot work.
    #[error("invalid redis configuration: {0}")]
    Config(String),
    /// The cluster was initialised with another shard count (`presence:meta`):
    /// this node would put users in the wrong shards.
    #[error(
        "the cluster stores {stored} shards but this node is configured with {configured}; \
         start every node with the same shard count"
    )]
    ShardCountMismatch { stored: u16, configured: u16 },
    /// A commit batch names a key outside the shard it commits to: a bug in
    /// the caller (the script would break Redis Cluster's slot rule).
    #[error("key {key:?} is not in shard {shard}")]
    CrossShard { key: String, shard: u16 },
}

impl RedisError {
    /// The stable machine code: `backend_unavailable` for transport
    /// failures (the caller may retry; clients get 503), `internal` for
    /// bugs, and specific codes for configuration problems.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_)
            | Self::Connection(_)
            | Self::Backpressure
            | Self::Auth(_)
            | Self::NotReplicated { .. }
            | Self::PrimaryChanged => "backend_unavailable",
            Self::NoScript { .. }
            | Self::Protocol(_)
            | Self::Server(_)
            | Self::CrossShard { .. } => "internal",
            Self::Config(_) => "invalid_config",
            Self::ShardCountMismatch { .. } => "shard_count_mismatch",
        }
    }

    /// Whether the command failed for lack of a working connection (it may
    /// or may not have run).
    pub fn is_unavailable(&self) -> bool {
        self.code() == "backend_unavailable"
    }

    pub(crate) fn protocol(what: impl Into<String>) -> RedisError {
        RedisError::Protocol(what.into())
    }

    /// Whether this is Redis's `NOSCRIPT` answer to `EVALSHA`.
    pub(crate) fn is_noscript(&self) -> bool {
        matches!(self, Self::Server(details) if details.starts_with("NOSCRIPT"))
    }
}

impl From<FredError> for RedisError {
    fn from(error: FredError) -> Self {
        let error = Self::classify(error);
        super::stats::redis_stats().error(&error);
        error
    }
}

impl RedisError {
    fn classify(error: FredError) -> Self {
        let details = error.details().to_owned();
        match error.kind() {
            ErrorKind::Timeout => Self::Timeout(details),
            ErrorKind::Backpressure => Self::Backpressure,
            ErrorKind::IO
            | ErrorKind::Canceled
            | ErrorKind::Routing
            | ErrorKind::Cluster
            | ErrorKind::Sentinel
            | ErrorKind::Tls => Self::Connection(format!("{:?}: {details}", error.kind())),
            ErrorKind::Auth => Self::Auth(details),
            ErrorKind::Config | ErrorKind::Url => Self::Config(details),
            ErrorKind::Protocol | ErrorKind::Parse | ErrorKind::NotFound => Self::Protocol(details),
            ErrorKind::InvalidCommand | ErrorKind::InvalidArgument => Self::Server(details),
            ErrorKind::Unknown => unknown(details),
        }
    }
}

/// fred reports server error replies and its own "client is not
/// connected" conditions both as `Unknown`; tell them apart by text.
///
/// Some server errors are about the server's role, not the command: a
/// demoted primary (`READONLY`), a primary without enough replicas
/// (`NOREPLICAS`, `min-replicas-to-write`), a replica without its primary
/// (`MASTERDOWN`), a server loading its data (`LOADING`), a cluster
/// without a quorum (`CLUSTERDOWN`, `TRYAGAIN`). The command did not run;
/// another server (or the same one, later) will take it: transport.
fn unknown(details: String) -> RedisError {
    const TRANSPORT: [&str; 4] = [
        "Client is not initialized",
        "Failed to send command to router",
        "Connection closed",
        "Canceled",
    ];
    const ROLE: [&str; 6] = [
        "READONLY",
        "NOREPLICAS",
        "MASTERDOWN",
        "LOADING",
        "CLUSTERDOWN",
        "TRYAGAIN",
    ];
    let role = ROLE.iter().any(|p| details.trim_start().starts_with(p));
    if role || TRANSPORT.iter().any(|t| details.contains(t)) {
        RedisError::Connection(details)
    } else {
        RedisError::Server(details)
    }
}

/// Every Redis failure is, to the gateway, an unavailable backend (503):
/// the request did not happen, or its outcome is unknown.
impl From<presence_protocol::cluster::InvalidStreamId> for RedisError {
    fn from(error: presence_protocol::cluster::InvalidStreamId) -> Self {
        RedisError::protocol(error.to_string())
    }
}

impl From<RedisError> for BackendError {
    fn from(error: RedisError) -> Self {
        BackendError::Unavailable(error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_failures_are_backend_unavailable() {
        let cases = [
            (
                ErrorKind::Timeout,
                "Request timed out.",
                "backend_unavailable",
            ),
            (ErrorKind::IO, "Connection reset", "backend_unavailable"),
            (
                ErrorKind::Canceled,
                "Connection closed unexpectedly.",
                "backend_unavailable",
            ),
            (
                ErrorKind::Backpressure,
                "Max in-flight commands reached.",
                "backend_unavailable",
            ),
            (
                ErrorKind::Unknown,
                "Client is not initialized.",
                "backend_unavailable",
            ),
            (
                ErrorKind::Unknown,
                "READONLY You can't write against a read only replica.",
                "backend_unavailable",
            ),
            (
                ErrorKind::Unknown,
                "NOREPLICAS Not enough good replicas to write.",
                "backend_unavailable",
            ),
            (
                ErrorKind::Unknown,
                "NOSCRIPT No matching script.",
                "internal",
            ),
            (
                ErrorKind::InvalidArgument,
                "WRONGTYPE Operation",
                "internal",
            ),
            (ErrorKind::Protocol, "bad frame", "internal"),
            (ErrorKind::Config, "bad url", "invalid_config"),
        ];
        for (kind, details, code) in cases {
            let error = RedisError::from(FredError::new(kind.clone(), details));
            assert_eq!(error.code(), code, "{kind:?} {details}");
        }
        let noscript = RedisError::from(FredError::new(ErrorKind::Unknown, "NOSCRIPT No matching"));
        assert!(noscript.is_noscript());
    }
}
