//! Where every piece of cluster state lives in Redis: the shard of a user,
//! and the name of every key and channel of `docs/cluster.md`.
//!
//! Two invariants make the keyspace safe for Redis Cluster and for any user
//! id:
//!
//! - **Architecture Invariant: one slot per shard.** Every per-shard key and
//!   channel starts with `presence:{s}:`, so Redis hashes only `s` (the
//!   *hash tag*) and every script of a shard touches one slot. Cluster-wide
//!   state lives in shard 0's slot (`presence:{0}:…`): shard 0's leader
//!   owns it and fences its writes with shard 0's lease, which a script can
//!   only do if both are in one slot. The one exception is
//!   [`Keys::meta`], which no script touches.
//! - **Architecture Invariant: the user id is always the suffix.** A user id
//!   may contain any character except control characters (`:`, `{`, `}`,
//!   spaces, emoji …), so it is never followed by anything in a key: the
//!   key of user `a:b` can never equal the key of another user. Redis takes
//!   the *first* `{…}` of a key as its hash tag, and ours comes before the
//!   id, so braces in an id cannot move a key to another slot. Heartbeat
//!   members are `<uid>\n<device>`: an id has no control character, so the
//!   first `\n` separates them whatever the device id holds.

use std::fmt;

/// FNV-1a 64-bit offset basis (`14695981039346656037`), from the FNV
/// specification (draft-eastlake-fnv).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a 64-bit prime (`2^40 + 2^8 + 0xb3`).
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The shard of a user: FNV-1a 64 of the id's UTF-8 bytes, modulo `shards`.
///
/// The mapping is part of the stored data's layout: changing it (or `S`)
/// strands every stored user in the wrong shard, which is why
/// [`crate::RedisClient::ensure_meta`] refuses a node started with
/// another `S`, and why a table test pins it.
///
/// # Panics
///
/// If `shards` is 0 (configuration rejects that long before).
pub fn shard_of(user: &str, shards: u16) -> u16 {
    assert!(shards > 0, "the shard count must be at least 1");
    let shard = fnv1a64(user.as_bytes()) % u64::from(shards);
    u16::try_from(shard).expect("a remainder modulo a u16 fits a u16")
}

/// FNV-1a, 64 bits: for each byte, xor it in, then multiply by the prime.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// The names of one shard's keys and channels, and (as associated
/// functions) of the cluster-wide ones.
///
/// ```
/// use presence_redis::Keys;
/// let keys = Keys::new(3);
/// assert_eq!(keys.user("alice"), "presence:{3}:user:alice");
/// assert_eq!(keys.heartbeats(), "presence:{3}:hb");
/// assert_eq!(Keys::control_channel(), "presence:{0}:control");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Keys {
    shard: u16,
    /// `presence:{s}:`
    prefix: String,
}

impl Keys {
    /// The keys of shard `shard`.
    pub fn new(shard: u16) -> Keys {
        Keys {
            shard,
            prefix: format!("presence:{{{shard}}}:"),
        }
    }

    /// The keys of the shard `user` belongs to.
    pub fn for_user(user: &str, shards: u16) -> Keys {
        Keys::new(shard_of(user, shards))
    }

    pub fn shard(&self) -> u16 {
        self.shard
    }

    /// `presence:{s}:users` (set): the user ids of the shard.
    pub fn users(&self) -> String {
        self.key("users")
    }

    /// `presence:{s}:user:<uid>` (string): the durable user document.
    pub fn user(&self, user: &str) -> String {
        self.user_key("user:", user)
    }

    /// `presence:{s}:devices:<uid>` (hash): device id → device JSON.
    pub fn devices(&self, user: &str) -> String {
        self.user_key("devices:", user)
    }

    /// `presence:{s}:view:<uid>` (string): what others see, with version.
    pub fn view(&self, user: &str) -> String {
        self.user_key("view:", user)
    }

    /// `presence:{s}:self:<uid>` (string): the user's own view.
    pub fn self_view(&self, user: &str) -> String {
        self.user_key("self:", user)
    }

    /// `presence:{s}:rate:<bucket>:<uid>` (string with TTL): when the
    /// user's rate-limit bucket is full again (µs, Redis's clock).
    pub fn rate(&self, bucket: &str, user: &str) -> String {
        self.user_key(&format!("rate:{bucket}:"), user)
    }

    /// `presence:{s}:reply:<id>` (string, PX ttl): the JSON
    /// `CommandResult` a leader gave the stream entry with reply id `id`,
    /// stored by the same fenced commit as the change (truthful replies:
    /// a gateway that missed the pub/sub answer reads it here, and a
    /// retried entry is answered from it instead of being applied twice).
    pub fn reply(&self, id: &str) -> String {
        self.user_key("reply:", id)
    }

    /// `presence:{s}:counts` (string): JSON users per displayed status
    /// (`StoredCounts`), written by the leader with the views.
    pub fn counts(&self) -> String {
        self.key("counts")
    }

    /// `presence:{s}:hb` (zset): [`heartbeat_member`] → deadline (ms).
    pub fn heartbeats(&self) -> String {
        self.key("hb")
    }

    /// `presence:{s}:events` (stream): commands from gateways.
    pub fn events(&self) -> String {
        self.key("events")
    }

    /// `presence:{s}:cursor` (string): the last applied stream id.
    pub fn cursor(&self) -> String {
        self.key("cursor")
    }

    /// `presence:{s}:lease` (string with TTL): `"<node>:<epoch>"`.
    pub fn lease(&self) -> String {
        self.key("lease")
    }

    /// `presence:{s}:epoch` (string): incremented on every acquisition.
    pub fn epoch(&self) -> String {
        self.key("epoch")
    }

    /// `presence:{s}:updates` (channel): presence changes of the shard.
    pub fn updates_channel(&self) -> String {
        self.key("updates")
    }

    /// `presence:{s}:node:<node>` (channel): what shard `s`'s leader has
    /// for gateway `node` alone — answers to its commands (`ReplyMessage`)
    /// and notices that a socket it holds was replaced (`ReplacedMessage`).
    /// One channel per shard and node, so a gateway receives only its own
    /// answers, and the channel carries the shard's hash tag (the commit
    /// script `SPUBLISH`es it in the shard's slot on Redis Cluster). The
    /// node id is the suffix: it may hold any character.
    pub fn node_channel(&self, node: &str) -> String {
        self.user_key("node:", node)
    }

    /// `presence:meta` (hash): `shards` = S. Outside every shard's slot: it
    /// is read and written with plain commands only.
    pub fn meta() -> String {
        "presence:meta".to_owned()
    }

    /// `presence:{0}:nodes` (zset): node id → node lease deadline (ms) (H2).
    pub fn nodes() -> String {
        Keys::new(0).key("nodes")
    }

    /// `presence:{0}:conns` (hash): node id → open sockets (X1).
    pub fn conns() -> String {
        Keys::new(0).key("conns")
    }

    /// `presence:{0}:aggregators` (zset): aggregator node id → membership
    /// deadline (ms). The live members decide the target spread of shard
    /// leadership (H5, `presence-aggregator` `assignment.rs`).
    pub fn aggregators() -> String {
        Keys::new(0).key("aggregators")
    }

    /// `presence:{0}:lapses` (hash): node id → the node lease deadline
    /// whose lapse was counted, so each lapse is counted once, whatever
    /// leader of shard 0 sees it.
    pub fn lapses() -> String {
        Keys::new(0).key("lapses")
    }

    /// `presence:{0}:cap` (string): JSON cap state, written by shard 0's
    /// leader with a fenced commit.
    pub fn cap() -> String {
        Keys::new(0).key("cap")
    }

    /// `presence:{0}:settings` (string): JSON workspace settings (fenced).
    pub fn settings() -> String {
        Keys::new(0).key("settings")
    }

    /// `presence:{0}:custom-statuses` (hash): id → JSON custom status
    /// (fenced).
    pub fn custom_statuses() -> String {
        Keys::new(0).key("custom-statuses")
    }

    /// `presence:{0}:control` (channel): cap transitions, settings and
    /// custom-status changes, published by shard 0's commit.
    pub fn control_channel() -> String {
        Keys::new(0).key("control")
    }

    fn key(&self, name: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + name.len());
        key.push_str(&self.prefix);
        key.push_str(name);
        key
    }

    fn user_key(&self, kind: &str, user: &str) -> String {
        let mut key = String::with_capacity(self.prefix.len() + kind.len() + user.len());
        key.push_str(&self.prefix);
        key.push_str(kind);
        key.push_str(user);
        key
    }
}

impl fmt::Display for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "shard {}", self.shard)
    }
}

/// The member of `presence:{s}:hb` for one device: `<uid>\n<device>`.
///
/// A user id never holds a control character, so the first `\n` is the
/// separator; the device id may hold anything.
pub fn heartbeat_member(user: &str, device: &str) -> String {
    debug_assert!(!user.contains('\n'), "user ids hold no control characters");
    let mut member = String::with_capacity(user.len() + 1 + device.len());
    member.push_str(user);
    member.push('\n');
    member.push_str(device);
    member
}

/// Splits a heartbeat member into `(user, device)`; `None` if it has no
/// `\n` (not written by [`heartbeat_member`]).
pub fn parse_heartbeat_member(member: &str) -> Option<(&str, &str)> {
    member.split_once('\n')
}

/// The hash tag Redis Cluster hashes for `key`: the text between the first
/// `{` and the first `}` after it, if that is not empty; otherwise `None`
/// (Redis then hashes the whole key).
pub fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let rest = &key[open + 1..];
    let close = rest.find('}')?;
    (close > 0).then(|| &rest[..close])
}

/// The shard whose slot `key` (or channel) lives in: its hash tag, if that
/// is a shard number written the way [`Keys`] writes it.
pub fn shard_of_key(key: &str) -> Option<u16> {
    let tag = hash_tag(key)?;
    let shard: u16 = tag.parse().ok()?;
    // "03" or "+3" parse too, but hash differently from "3".
    (shard.to_string() == tag).then_some(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The user → shard mapping is stored data's layout: these values must
    /// never change. (Published FNV-1a 64 vectors: "" → cbf29ce484222325,
    /// "a" → af63dc4c8601ec8c, "foobar" → 85944171f73967e8.)
    #[test]
    fn shard_of_is_fnv1a64_mod_s_and_never_changes() {
        #[track_caller]
        fn check(user: &str, hash: u64, s16: u16, s3: u16, s64: u16, s1000: u16) {
            assert_eq!(fnv1a64(user.as_bytes()), hash, "fnv1a64({user:?})");
            assert_eq!(shard_of(user, 16), s16, "{user:?} with S=16");
            assert_eq!(shard_of(user, 3), s3, "{user:?} with S=3");
            assert_eq!(shard_of(user, 64), s64, "{user:?} with S=64");
            assert_eq!(shard_of(user, 1000), s1000, "{user:?} with S=1000");
            assert_eq!(shard_of(user, 1), 0, "{user:?} with S=1");
        }
        check("", 0xcbf29ce484222325, 5, 2, 37, 37);
        check("a", 0xaf63dc4c8601ec8c, 12, 1, 12, 996);
        check("foobar", 0x85944171f73967e8, 8, 0, 40, 968);
        check("alice", 0x508b2abb65a03907, 7, 2, 7, 183);
        check("bob", 0x004d4419134a0a54, 4, 0, 20, 92);
        check("carol", 0xafbc913b09910c72, 2, 1, 50, 962);
        check("dave", 0x85544d67309d1dbf, 15, 0, 63, 967);
        check("üser-ø", 0x4530a2b8ca029a14, 4, 1, 20, 396);
        check("user:with:colons", 0x13165989664c3bc2, 2, 2, 2, 898);
        check("{curly}", 0x694db2c62c130eb6, 6, 1, 54, 982);
        check("a b", 0xe63f991904833892, 2, 1, 18, 298);
        check("admin@example.com", 0xb94ba94f8cf79c99, 9, 1, 25, 609);
        check("山田太郎", 0x9826979c92e771fe, 14, 2, 62, 86);
    }

    #[test]
    fn every_key_and_channel_name() {
        let k = Keys::new(3);
        let cases = [
            (k.users(), "presence:{3}:users"),
            (k.user("alice"), "presence:{3}:user:alice"),
            (k.devices("alice"), "presence:{3}:devices:alice"),
            (k.view("alice"), "presence:{3}:view:alice"),
            (k.self_view("alice"), "presence:{3}:self:alice"),
            (k.heartbeats(), "presence:{3}:hb"),
            (k.events(), "presence:{3}:events"),
            (k.cursor(), "presence:{3}:cursor"),
            (k.lease(), "presence:{3}:lease"),
            (k.epoch(), "presence:{3}:epoch"),
            (k.updates_channel(), "presence:{3}:updates"),
            (k.node_channel("gw-1"), "presence:{3}:node:gw-1"),
            (k.reply("0a.1f@node-a"), "presence:{3}:reply:0a.1f@node-a"),
            (Keys::meta(), "presence:meta"),
            (Keys::nodes(), "presence:{0}:nodes"),
            (Keys::conns(), "presence:{0}:conns"),
            (Keys::cap(), "presence:{0}:cap"),
            (Keys::settings(), "presence:{0}:settings"),
            (Keys::custom_statuses(), "presence:{0}:custom-statuses"),
            (Keys::control_channel(), "presence:{0}:control"),
        ];
        for (got, want) in cases {
            assert_eq!(got, want);
        }
        assert_eq!(Keys::for_user("alice", 16), Keys::new(7));
    }

    #[test]
    fn user_ids_with_separators_and_braces_stay_in_their_shard_and_unambiguous() {
        let k = Keys::new(3);
        for user in ["a:b", "{7}", "x{1}y", "user:1:view:x", "}{", "emoji 😀", ""] {
            let key = k.user(user);
            assert_eq!(shard_of_key(&key), Some(3), "{key}");
            assert_eq!(key.strip_prefix("presence:{3}:user:"), Some(user));
        }
        // Distinct ids give distinct keys, even when one id is a prefix of
        // another or looks like a key kind.
        assert_ne!(k.user("a"), k.user("a:"));
        assert_ne!(k.user("view:a"), k.view("a"));
    }

    #[test]
    fn heartbeat_members_split_at_the_first_newline() {
        let cases = [
            ("alice", "web-1"),
            ("a:b", "dev\nice"),
            ("u", ""),
            ("{3}", "d"),
        ];
        for (user, device) in cases {
            let member = heartbeat_member(user, device);
            assert_eq!(parse_heartbeat_member(&member), Some((user, device)));
        }
        assert_eq!(parse_heartbeat_member("no-separator"), None);
    }

    #[test]
    fn hash_tags_follow_the_redis_cluster_rule() {
        let cases = [
            ("presence:{3}:user:x", Some("3")),
            ("presence:{3}:user:{9}", Some("3")),
            ("{}x{1}", None),
            ("no-tag", None),
            ("open{only", None),
            ("a}b{c}", Some("c")),
        ];
        for (key, tag) in cases {
            assert_eq!(hash_tag(key), tag, "{key}");
        }
        assert_eq!(shard_of_key("presence:{03}:x"), None);
        assert_eq!(shard_of_key("presence:{12}:x"), Some(12));
        assert_eq!(shard_of_key("presence:meta"), None);
    }
}
