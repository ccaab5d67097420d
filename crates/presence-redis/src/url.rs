//! The Redis URL an operator writes, parsed into where to connect.
//!
//! One string names every supported deployment:
//!
//! | URL | deployment |
//! |---|---|
//! | `redis://[[user]:password@]host[:port][/db]` | one server (a cluster is detected at connect) |
//! | `rediss://…` | the same over TLS |
//! | `redis://host:port,host:port[,…]` | Redis Cluster, these nodes as seeds |
//! | `redis+cluster://host:port[,…]` (`rediss+cluster://`) | Redis Cluster, explicitly |
//! | `redis+sentinel://[[user]:password@]host:port[,host:port]/service_name[/db]` | Sentinel (`rediss+sentinel://` for TLS) |
//!
//! The credentials in the URL are the Redis servers' (what commands
//! authenticate with). Sentinels that require their own credentials take
//! them as query parameters: `?sentinel_username=…&sentinel_password=…`.
//! Credentials are percent-decoded. Unknown query parameters are an error,
//! so a typo never silently changes the deployment.
//!
//! fred parses URLs too, but puts Sentinel's service name and extra hosts
//! in query parameters (`redis-sentinel://h:26379?sentinelServiceName=…&node=…`);
//! the comma-separated form here is the one operators know from other
//! clients and Helm charts.

use std::fmt;

use super::error::RedisError;

/// Redis's default port.
pub const DEFAULT_PORT: u16 = 6379;
/// Sentinel's default port.
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// Where and how to connect, parsed from a URL by [`RedisEndpoint::parse`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    pub topology: Topology,
    /// `rediss…` schemes.
    pub tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `SELECT`ed after connecting (not with Redis Cluster, which has only 0).
    pub database: Option<u8>,
}

/// The shape of the deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topology {
    /// One server (or a primary with replicas the client does not use).
    /// It may turn out to be a cluster node; see `RedisClient::connect`.
    Standalone(HostPort),
    /// Redis Cluster: any reachable seed discovers the others.
    Cluster { seeds: Vec<HostPort> },
    /// A primary found through Sentinel by its service (master) name.
    Sentinel {
        sentinels: Vec<HostPort>,
        service_name: String,
        sentinel_username: Option<String>,
        sentinel_password: Option<String>,
    },
}

/// `host:port`; IPv6 hosts are written `[::1]:6379` and stored without
/// brackets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl RedisEndpoint {
    /// Parses one of the URL forms of the module documentation.
    pub fn parse(url: &str) -> Result<RedisEndpoint, RedisError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(url, "expected scheme://…"))?;
        let (tls, kind) = match scheme {
            "redis" => (false, Kind::Auto),
            "rediss" => (true, Kind::Auto),
            "redis+cluster" | "redis-cluster" => (false, Kind::Cluster),
            "rediss+cluster" | "rediss-cluster" => (true, Kind::Cluster),
            "redis+sentinel" | "redis-sentinel" => (false, Kind::Sentinel),
            "rediss+sentinel" | "rediss-sentinel" => (true, Kind::Sentinel),
            other => {
                return Err(invalid(
                    url,
                    &format!(
                        "unknown scheme {other:?}; use redis, rediss, redis+cluster or redis+sentinel"
                    ),
                ));
            }
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        // The userinfo ends at the last '@', so a password may hold '/'.
        let (userinfo, rest) = match rest.rsplit_once('@') {
            Some((userinfo, rest)) => (Some(userinfo), rest),
            None => (None, rest),
        };
        let (authority, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path),
            None => (rest, ""),
        };
        let (username, password) = match userinfo {
            Some(userinfo) => parse_userinfo(url, userinfo)?,
            None => (None, None),
        };
        let default_port = if kind == Kind::Sentinel {
            DEFAULT_SENTINEL_PORT
        } else {
            DEFAULT_PORT
        };
        let hosts = authority
            .split(',')
            .map(|host| parse_host_port(url, host, default_port))
            .collect::<Result<Vec<_>, _>>()?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let params = parse_query(url, query)?;

        let (topology, database) = match kind {
            Kind::Auto | Kind::Cluster => {
                if let Some((name, _)) = params.first() {
                    return Err(invalid(url, &format!("unknown query parameter {name:?}")));
                }
                let database = match segments.as_slice() {
                    [] => None,
                    [db] => Some(parse_database(url, db)?),
                    _ => return Err(invalid(url, "the path may only hold a database number")),
                };
                if kind == Kind::Cluster || hosts.len() > 1 {
                    if database.is_some_and(|db| db != 0) {
                        return Err(invalid(url, "Redis Cluster has only database 0"));
                    }
                    (Topology::Cluster { seeds: hosts }, None)
                } else {
                    let host = hosts.into_iter().next().expect("split yields one item");
                    (Topology::Standalone(host), database)
                }
            }
            Kind::Sentinel => {
                let (service_name, database) = match segments.as_slice() {
                    [name] => (percent_decode(url, name)?, None),
                    [name, db] => (percent_decode(url, name)?, Some(parse_database(url, db)?)),
                    _ => {
                        return Err(invalid(
                            url,
                            "a sentinel URL names the service: redis+sentinel://host:port/service_name[/db]",
                        ));
                    }
                };
                let mut sentinel_username = None;
                let mut sentinel_password = None;
                for (name, value) in params {
                    match name.as_str() {
                        "sentinel_username" => sentinel_username = Some(value),
                        "sentinel_password" => sentinel_password = Some(value),
                        _ => {
                            return Err(invalid(url, &format!("unknown query parameter {name:?}")));
                        }
                    }
                }
                let topology = Topology::Sentinel {
                    sentinels: hosts,
                    service_name,
                    sentinel_username,
                    sentinel_password,
                };
                (topology, database)
            }
        };
        Ok(RedisEndpoint {
            topology,
            tls,
            username,
            password,
            database,
        })
    }

    /// Whether the URL already says Redis Cluster (a standalone URL may
    /// still turn out to be a cluster node when connecting).
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster { .. })
    }
}

/// Never prints passwords.
impl fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topology = match &self.topology {
            Topology::Sentinel {
                sentinels,
                service_name,
                sentinel_username,
                sentinel_password,
            } => format!(
                "Sentinel {{ sentinels: {sentinels:?}, service_name: {service_name:?}, \
                 sentinel_username: {sentinel_username:?}, sentinel_password: {} }}",
                redact(sentinel_password)
            ),
            other => format!("{other:?}"),
        };
        f.debug_struct("RedisEndpoint")
            .field("topology", &format_args!("{topology}"))
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &format_args!("{}", redact(&self.password)))
            .field("database", &self.database)
            .finish()
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// One host: standalone (cluster detected later); several: cluster.
    Auto,
    Cluster,
    Sentinel,
}

fn redact(secret: &Option<String>) -> &'static str {
    if secret.is_some() {
        "Some(<redacted>)"
    } else {
        "None"
    }
}

/// The error for a URL; the URL is not repeated (it may hold a password).
fn invalid(url: &str, what: &str) -> RedisError {
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    RedisError::Config(format!("redis URL ({scheme}://…): {what}"))
}

fn parse_userinfo(
    url: &str,
    userinfo: &str,
) -> Result<(Option<String>, Option<String>), RedisError> {
    let (user, password) = match userinfo.split_once(':') {
        Some((user, password)) => (user, Some(password)),
        None => (userinfo, None),
    };
    let user = Some(percent_decode(url, user)?).filter(|u| !u.is_empty());
    let password = match password {
        Some(p) => Some(percent_decode(url, p)?).filter(|p| !p.is_empty()),
        None => None,
    };
    Ok((user, password))
}

fn parse_host_port(url: &str, text: &str, default_port: u16) -> Result<HostPort, RedisError> {
    let (host, port) = if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| invalid(url, "an IPv6 host needs a closing ']'"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(invalid(url, "expected ':port' after an IPv6 host")),
            },
        }
    } else {
        match text.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() {
        return Err(invalid(url, "a host is missing"));
    }
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| invalid(url, &format!("bad port {port:?}")))?,
        None => default_port,
    };
    Ok(HostPort {
        host: host.to_owned(),
        port,
    })
}

fn parse_database(url: &str, text: &str) -> Result<u8, RedisError> {
    text.parse()
        .map_err(|_| invalid(url, &format!("bad database number {text:?}")))
}

fn parse_query(url: &str, query: Option<&str>) -> Result<Vec<(String, String)>, RedisError> {
    let Some(query) = query else {
        return Ok(Vec::new());
    };
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            Ok((percent_decode(url, name)?, percent_decode(url, value)?))
        })
        .collect()
}

/// `%XX` escapes to bytes, which must then be UTF-8 (RFC 3986 decoding).
/// Deliberately strict: a malformed escape (`%zz`, `%2`) or bytes that are
/// not UTF-8 are a configuration error, since a password that decodes to
/// something else fails later as a confusing authentication error. And `+`
/// stays a plus: this is a URL, not a form, and passwords contain pluses.
fn percent_decode(url: &str, text: &str) -> Result<String, RedisError> {
    let bytes = text.as_bytes();
    let well_formed = bytes.iter().enumerate().all(|(i, &b)| {
        b != b'%'
            || bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return Err(invalid(url, "bad percent escape"));
    }
    percent_encoding::percent_decode(bytes)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| invalid(url, "percent escapes are not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(host: &str, port: u16) -> HostPort {
        HostPort {
            host: host.to_owned(),
            port,
        }
    }

    fn sentinel(sentinels: Vec<HostPort>, service: &str) -> Topology {
        Topology::Sentinel {
            sentinels,
            service_name: service.to_owned(),
            sentinel_username: None,
            sentinel_password: None,
        }
    }

    #[track_caller]
    fn check(url: &str, topology: Topology, tls: bool, password: Option<&str>, db: Option<u8>) {
        let endpoint = RedisEndpoint::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(endpoint.topology, topology, "{url}");
        assert_eq!(endpoint.tls, tls, "{url}");
        assert_eq!(endpoint.password.as_deref(), password, "{url}");
        assert_eq!(endpoint.database, db, "{url}");
    }

    #[test]
    fn standalone_and_cluster_urls() {
        let one = |h, p| Topology::Standalone(hp(h, p));
        check(
            "redis://127.0.0.1:6400/0",
            one("127.0.0.1", 6400),
            false,
            None,
            Some(0),
        );
        check(
            "redis://localhost",
            one("localhost", 6379),
            false,
            None,
            None,
        );
        check(
            "rediss://:s3cret@redis.example:6380/2",
            one("redis.example", 6380),
            true,
            Some("s3cret"),
            Some(2),
        );
        check("redis://[::1]:7000", one("::1", 7000), false, None, None);
        check("redis://[::1]", one("::1", 6379), false, None, None);
        check(
            "redis://:p%40ss%2Fw@h:1",
            one("h", 1),
            false,
            Some("p@ss/w"),
            None,
        );
        check(
            "redis://:pa/ss@h:1",
            one("h", 1),
            false,
            Some("pa/ss"),
            None,
        );
        let seeds = Topology::Cluster {
            seeds: vec![hp("a", 7000), hp("b", 7001), hp("c", 6379)],
        };
        check("redis://a:7000,b:7001,c", seeds.clone(), false, None, None);
        check(
            "redis+cluster://a:7000,b:7001,c/0",
            seeds.clone(),
            false,
            None,
            None,
        );
        check(
            "rediss+cluster://:pw@a:7000,b:7001,c",
            seeds,
            true,
            Some("pw"),
            None,
        );
        check(
            "redis-cluster://n1:7000",
            Topology::Cluster {
                seeds: vec![hp("n1", 7000)],
            },
            false,
            None,
            None,
        );
    }

    #[test]
    fn sentinel_urls_name_sentinels_service_and_database() {
        check(
            "redis+sentinel://:secret@s1:26379,s2:26380/mymaster/3",
            sentinel(vec![hp("s1", 26379), hp("s2", 26380)], "mymaster"),
            false,
            Some("secret"),
            Some(3),
        );
        check(
            "redis+sentinel://s1/mymaster",
            sentinel(vec![hp("s1", 26379)], "mymaster"),
            false,
            None,
            None,
        );
        check(
            "rediss+sentinel://[fd00::1]:26379,s2/primary",
            sentinel(vec![hp("fd00::1", 26379), hp("s2", 26379)], "primary"),
            true,
            None,
            None,
        );
        let endpoint = RedisEndpoint::parse(
            "redis+sentinel://app:pw@s1:26379/mymaster?sentinel_username=sen&sentinel_password=p%26w",
        )
        .unwrap();
        assert_eq!(endpoint.username.as_deref(), Some("app"));
        assert_eq!(endpoint.password.as_deref(), Some("pw"));
        match endpoint.topology {
            Topology::Sentinel {
                sentinel_username,
                sentinel_password,
                ..
            } => {
                assert_eq!(sentinel_username.as_deref(), Some("sen"));
                assert_eq!(sentinel_password.as_deref(), Some("p&w"));
            }
            other => panic!("not sentinel: {other:?}"),
        }
    }

    #[test]
    fn bad_urls_are_config_errors_that_never_echo_the_password() {
        let cases = [
            "localhost:6379",
            "http://localhost",
            "redis://",
            "redis://:pw@h:0",
            "redis://:pw@h:notaport",
            "redis://h/1/2",
            "redis://h/x",
            "redis://h?foo=bar",
            "redis://a:1,b:2/3",
            "redis+sentinel://:pw@s1:26379",
            "redis+sentinel://s1/m/1/2",
            "redis+sentinel://s1/m?node=x",
            "redis://[::1:6379",
            "redis://:%zz@h",
        ];
        for url in cases {
            match RedisEndpoint::parse(url) {
                Err(e @ RedisError::Config(_)) => {
                    assert!(!e.to_string().contains("pw"), "{url}: {e}");
                    assert_eq!(e.code(), "invalid_config");
                }
                other => panic!("{url}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_decode_escapes_strictly_and_keep_pluses() {
        let password = |url: &str| RedisEndpoint::parse(url).map(|e| e.password.clone());
        let cases = [
            ("redis://:a+b@h", Some("a+b")),
            ("redis://:a%2Bb@h", Some("a+b")),
            ("redis://:a%20b@h", Some("a b")),
            ("redis://:%F0%9F%8C%B4@h", Some("🌴")),
        ];
        for (url, expected) in cases {
            let got = password(url).unwrap();
            assert_eq!(got.as_deref(), expected, "{url}");
        }
        for bad in [
            "redis://:%zz@h",
            "redis://:a%2@h",
            "redis://:%@h",
            "redis://:%ff@h",
        ] {
            let error = password(bad).unwrap_err();
            assert_eq!(error.code(), "invalid_config", "{bad}");
        }
    }

    #[test]
    fn debug_output_redacts_passwords() {
        let endpoint =
            RedisEndpoint::parse("redis+sentinel://:topsecret@s1/m?sentinel_password=alsosecret")
                .unwrap();
        let text = format!("{endpoint:?}");
        assert!(
            !text.contains("topsecret") && !text.contains("alsosecret"),
            "{text}"
        );
        assert!(text.contains("redacted"), "{text}");
    }
}
