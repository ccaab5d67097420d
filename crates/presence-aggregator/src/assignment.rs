//! H5: which aggregator node should lead which shard, decided from the
//! live node set alone, so every node computes the same answer and no two
//! nodes fight over a shard.
//!
//! The rule is a *balanced rendezvous* assignment. Each (shard, node) pair
//! has a pseudo-random score from a fixed hash of the node id and the
//! shard number (the same on every build and machine). The pairs are taken
//! best score first; a pair is kept when its shard has no node yet and its
//! node has room. A node has room below `⌊S/N⌋` shards, and up to `⌈S/N⌉`
//! while fewer than `S mod N` nodes reached that. So every node ends with
//! `⌊S/N⌋` or `⌈S/N⌉` of the `S` shards, and a shard keeps its node across
//! a change of the set unless balance needs to move it: a node joining
//! takes about `S/N` shards from the others, a node leaving spreads its own
//! over the rest, and most other shards stay where they are.
//!
//! The order of the node list does not matter (it is sorted first), nor
//! does a node appearing twice.

/// The target leader of every shard `0..shards`, as an index into
/// `nodes` (sorted and deduplicated by the caller, see [`Assignment`]).
/// Empty when `nodes` is empty.
fn assign(shards: u16, nodes: &[String]) -> Vec<usize> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let s = usize::from(shards);
    let n = nodes.len();
    let floor = s / n;
    let mut ceil_slots = s % n;
    let node_hashes: Vec<u64> = nodes.iter().map(|node| fnv1a(node.as_bytes())).collect();
    let mut pairs: Vec<(u64, u16, usize)> = Vec::with_capacity(s * n);
    for shard in 0..shards {
        for (i, node_hash) in node_hashes.iter().enumerate() {
            pairs.push((score(*node_hash, shard), shard, i));
        }
    }
    // Best score first; ties (practically never) by shard, then node.
    pairs.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let mut target = vec![usize::MAX; s];
    let mut count = vec![0usize; n];
    let mut left = s;
    for (_, shard, node) in pairs {
        if left == 0 {
            break;
        }
        let slot = &mut target[usize::from(shard)];
        if *slot != usize::MAX {
            continue;
        }
        let room = if count[node] < floor {
            true
        } else if count[node] == floor && ceil_slots > 0 {
            ceil_slots -= 1;
            true
        } else {
            false
        };
        if room {
            *slot = node;
            count[node] += 1;
            left -= 1;
        }
    }
    debug_assert_eq!(left, 0, "every shard gets a node");
    target
}

/// H5: the node each shard `0..shards` should be led by, given the live
/// aggregator node ids (any order), by the rule every node applies. For
/// tests and tools that check where the cluster converges; empty with no
/// node.
pub fn target_leaders(shards: u16, nodes: &[String]) -> Vec<String> {
    let assignment = Assignment::new(shards, nodes.iter().cloned());
    (0..shards)
        .filter_map(|s| assignment.target(s).map(str::to_owned))
        .collect()
}

/// The target spread of `S` shards over a set of aggregator nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Assignment {
    /// The live nodes, sorted, without duplicates.
    nodes: Vec<String>,
    /// Per shard, the index in `nodes` of its target leader.
    target: Vec<usize>,
}

impl Assignment {
    /// The assignment of `shards` shards over `nodes` (any order,
    /// duplicates ignored).
    pub(crate) fn new(shards: u16, nodes: impl IntoIterator<Item = String>) -> Self {
        let mut nodes: Vec<String> = nodes.into_iter().collect();
        nodes.sort_unstable();
        nodes.dedup();
        let target = assign(shards, &nodes);
        Self { nodes, target }
    }

    /// The node that should lead `shard`; `None` with no live node.
    pub(crate) fn target(&self, shard: u16) -> Option<&str> {
        let index = *self.target.get(usize::from(shard))?;
        self.nodes.get(index).map(String::as_str)
    }

    /// The live nodes the assignment was made from, sorted.
    pub(crate) fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// How many shards `node` should lead.
    #[cfg(test)]
    fn count_for(&self, node: &str) -> usize {
        (0..self.target.len())
            .filter(|s| self.target(*s as u16) == Some(node))
            .count()
    }
}

/// FNV-1a 64 of `bytes` (stable across builds, unlike `std`'s hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The rendezvous score of a (node, shard) pair: the node's hash mixed
/// with the shard number through SplitMix64's finaliser, so that close
/// node ids and consecutive shards still get unrelated scores.
fn score(node_hash: u64, shard: u16) -> u64 {
    let mut z = node_hash ^ u64::from(shard).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    /// H5: every node leads ⌊S/N⌋ or ⌈S/N⌉ shards, every shard has one
    /// target, for many sizes (more nodes than shards included).
    #[test]
    fn h5_every_node_gets_floor_or_ceil_of_the_shards() {
        for shards in [1u16, 2, 4, 7, 16, 64, 256] {
            for n in 1..=20 {
                let nodes = nodes(n);
                let assignment = Assignment::new(shards, nodes.clone());
                let (floor, ceil) = (usize::from(shards) / n, usize::from(shards).div_ceil(n));
                let mut total = 0;
                for node in &nodes {
                    let count = assignment.count_for(node);
                    assert!(
                        count == floor || count == ceil,
                        "S={shards} N={n}: {node} gets {count}, not {floor} or {ceil}"
                    );
                    total += count;
                }
                assert_eq!(total, usize::from(shards), "S={shards} N={n}");
                for shard in 0..shards {
                    assert!(assignment.target(shard).is_some());
                }
            }
        }
    }

    /// H5: nodes that see the same set agree, whatever order they list it
    /// in and however often a node appears.
    #[test]
    fn h5_the_assignment_depends_on_the_set_only() {
        let a = Assignment::new(16, ["b".to_owned(), "a".into(), "c".into()]);
        let b = Assignment::new(16, ["c".to_owned(), "b".into(), "a".into(), "b".into()]);
        assert_eq!(a, b);
        assert_eq!(a.nodes(), ["a", "b", "c"]);
    }

    /// H5: no live node, no target.
    #[test]
    fn h5_no_node_no_target() {
        let assignment = Assignment::new(16, Vec::<String>::new());
        assert_eq!(assignment.target(0), None);
        let one = Assignment::new(4, ["solo".to_owned()]);
        assert!((0..4).all(|s| one.target(s) == Some("solo")));
    }

    /// H5: a join or a leave moves few shards: over many node sets, a
    /// node joining N nodes moves on average not much more than the
    /// ⌈S/(N+1)⌉ shards it must take, and a node leaving moves its own
    /// plus a few. (Every move is a planned handoff, so fewer is better;
    /// the bound is what this rule achieves, pinned so it does not get
    /// worse unnoticed.)
    #[test]
    fn h5_a_join_or_a_leave_moves_few_shards() {
        let shards = 16u16;
        for n in 1..=6 {
            let (mut moved, mut needed, trials) = (0usize, 0usize, 200);
            for trial in 0..trials {
                let before: Vec<String> = (0..n).map(|i| format!("pod-{trial}-{i}")).collect();
                let mut after = before.clone();
                after.push(format!("pod-{trial}-new"));
                let (a, b) = (
                    Assignment::new(shards, before),
                    Assignment::new(shards, after),
                );
                moved += (0..shards).filter(|s| a.target(*s) != b.target(*s)).count();
                needed += b.count_for(&format!("pod-{trial}-new"));
            }
            let ratio = moved as f64 / needed as f64;
            assert!(
                ratio <= 1.6,
                "N={n}→{}: {moved} moves for {needed} needed ({ratio:.2}×)",
                n + 1
            );
        }
    }

    /// The score is fixed: a change of hash would reshuffle every
    /// cluster's shards during a rolling upgrade (nodes of two builds
    /// would disagree). Pinned by a few values.
    #[test]
    fn h5_the_rule_is_the_same_on_every_build() {
        let assignment = Assignment::new(4, nodes(2));
        let targets: Vec<&str> = (0..4).map(|s| assignment.target(s).unwrap()).collect();
        assert_eq!(targets, PINNED);
    }

    const PINNED: [&str; 4] = ["node-0", "node-1", "node-1", "node-0"];
}
