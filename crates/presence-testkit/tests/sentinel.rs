//! The Sentinel harness: a primary, a replica, three sentinels, and a
//! manual failover.

use presence_testkit::SentinelCluster;

#[test]
fn sentinel_cluster_starts_and_fails_over() {
    let cluster = SentinelCluster::start();
    let url = cluster.url();
    assert!(url.starts_with("redis+sentinel://127.0.0.1:"));
    assert!(url.ends_with("/mymaster"));
    assert_eq!(cluster.sentinel_addrs().len(), 3);
    let old = cluster.primary_port();
    assert_eq!(old, cluster.servers()[0].port());
    cluster.primary().command(&["SET", "k", "v"]);
    // Replicated (WAIT for one replica, at most 5 s).
    assert_eq!(cluster.primary().command(&["WAIT", "1", "5000"]), "1");
    assert_eq!(cluster.replica().command(&["GET", "k"]), "v");

    let (new, took) = cluster.failover();
    assert_ne!(new, old);
    let demoted = cluster.wait_demoted(old);
    assert_eq!(cluster.primary_port(), new);
    assert_eq!(cluster.primary().port(), new);
    assert_eq!(cluster.primary().command(&["GET", "k"]), "v");
    cluster.primary().command(&["SET", "after", "1"]);
    let refused = cluster.replica().query(&["SET", "x", "1"]);
    assert!(
        refused.to_string().starts_with("READONLY"),
        "the demoted primary refuses writes: {refused}"
    );
    eprintln!("sentinel failover: promoted in {took:?}, former primary demoted {demoted:?} later");
}
