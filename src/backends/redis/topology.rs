//! Redis Cluster topology from `CLUSTER NODES`: who the masters and
//! replicas are, which slots each master serves, and which slots changed
//! owner between two looks. Pure, so it is tested on literal text.

use std::collections::{BTreeMap, BTreeSet};

/// One line of `CLUSTER NODES`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClusterNode {
    /// The node's id.
    pub(crate) id: String,
    /// `host:port` of the node's client port.
    pub(crate) addr: String,
    pub(crate) master: bool,
    /// Flagged `fail` or `fail?` by the node that answered.
    pub(crate) failed: bool,
    /// The slot ranges it serves, inclusive (masters only).
    pub(crate) slots: Vec<(u16, u16)>,
    /// A replica's master's id.
    pub(crate) replica_of: Option<String>,
}

/// Parses `CLUSTER NODES`. Lines that are not nodes, nodes without an
/// address (`noaddr`, `handshake`) and slot migration markers are skipped.
pub(crate) fn parse_cluster_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines().filter_map(parse_node).collect()
}

fn parse_node(line: &str) -> Option<ClusterNode> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.len() < 8 {
        return None;
    }
    let flags: Vec<&str> = fields[2].split(',').collect();
    if flags.iter().any(|f| matches!(*f, "noaddr" | "handshake")) {
        return None;
    }
    // `ip:port@cport[,hostname]`
    let addr = fields[1].split(['@', ',']).next()?;
    if addr.starts_with(':') || !addr.contains(':') {
        return None;
    }
    let master = flags.contains(&"master");
    let slots = fields[8..]
        .iter()
        .filter(|slot| !slot.starts_with('['))
        .filter_map(|slot| match slot.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => slot.parse().ok().map(|s| (s, s)),
        })
        .collect();
    Some(ClusterNode {
        id: fields[0].to_owned(),
        replica_of: Some(fields[3])
            .filter(|id| !master && *id != "-")
            .map(str::to_owned),
        addr: addr.to_owned(),
        master,
        failed: flags.iter().any(|f| matches!(*f, "fail" | "fail?")),
        slots,
    })
}

/// The healthy replicas of `master`, by address.
pub(crate) fn replicas_of(nodes: &[ClusterNode], master: &ClusterNode) -> Vec<String> {
    nodes
        .iter()
        .filter(|n| !n.failed && n.replica_of.as_deref() == Some(master.id.as_str()))
        .map(|n| n.addr.clone())
        .collect()
}

/// Which master serves each slot range, by range start.
pub(crate) type SlotOwners = BTreeMap<u16, (u16, String)>;

/// The slot map of the masters that serve slots.
pub(crate) fn slot_owners(nodes: &[ClusterNode]) -> SlotOwners {
    nodes
        .iter()
        .filter(|node| node.master && !node.failed)
        .flat_map(|node| {
            node.slots
                .iter()
                .map(move |&(start, end)| (start, (end, node.addr.clone())))
        })
        .collect()
}

/// The slot map to remember after a look: `now`, plus the ranges of
/// `before` that no master serves at the moment (a master failed and its
/// replica has not taken over yet), so the takeover still counts as a new
/// owner when it comes.
pub(crate) fn remember(before: Option<&SlotOwners>, mut now: SlotOwners) -> SlotOwners {
    let Some(before) = before else {
        return now;
    };
    let served = now.clone();
    let overlaps = |start: u16, end: u16| {
        served
            .range(..=end)
            .any(|(&s, (e, _))| s <= end && *e >= start)
    };
    for (&start, (end, addr)) in before {
        if !overlaps(start, *end) {
            now.insert(start, (*end, addr.clone()));
        }
    }
    now
}

/// How many masters took over slots that another master served before:
/// one per (new owner, old owner) pair, so a failover or one reshard step
/// counts once, however many slots it moved.
pub(crate) fn owner_changes(before: &SlotOwners, after: &SlotOwners) -> usize {
    let owner = |owners: &SlotOwners, slot: u16| -> Option<String> {
        let (_, (end, addr)) = owners.range(..=slot).next_back()?;
        (slot <= *end).then(|| addr.clone())
    };
    let mut pairs = BTreeSet::new();
    for (&start, (end, new)) in after {
        for slot in [start, *end] {
            if let Some(old) = owner(before, slot).filter(|old| old != new) {
                pairs.insert((new.clone(), old));
            }
        }
    }
    pairs.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODES: &str = "\
07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host-4 slave e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected
67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 127.0.0.1:30002@31002 master - 0 1426238316232 2 connected 5461-10922
292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30003@31003 master - 0 1426238318243 3 connected 10923-16383 [10924->-e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca]
6ec23923021cf3ffec47632106199cb7f496ce01 127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected
824fe116063bc5fcf9f4ffd895bc17aee7731ac3 127.0.0.1:30006@31006 slave,fail 292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 0 1426238317741 6 connected
e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 1 connected 0-5460 16000
abcdef :0@0 master,noaddr - 0 0 0 disconnected
";

    #[test]
    fn masters_replicas_failures_and_slots() {
        let nodes = parse_cluster_nodes(NODES);
        assert_eq!(nodes.len(), 6, "{nodes:?}");
        let masters: Vec<&str> = nodes
            .iter()
            .filter(|n| n.master)
            .map(|n| n.addr.as_str())
            .collect();
        assert_eq!(
            masters,
            ["127.0.0.1:30002", "127.0.0.1:30003", "127.0.0.1:30001"]
        );
        assert_eq!(nodes[0].addr, "127.0.0.1:30004");
        assert!(nodes[4].failed && !nodes[4].master);
        assert_eq!(nodes[2].slots, [(10923, 16383)]);
        assert_eq!(nodes[5].slots, [(0, 5460), (16000, 16000)]);
        assert!(parse_cluster_nodes("garbage\n\n").is_empty());
        assert_eq!(replicas_of(&nodes, &nodes[5]), ["127.0.0.1:30004"]);
        assert_eq!(replicas_of(&nodes, &nodes[1]), ["127.0.0.1:30005"]);
        // 30006, the replica of 30003, has failed.
        assert!(replicas_of(&nodes, &nodes[2]).is_empty());
        assert!(replicas_of(&nodes, &nodes[0]).is_empty());
    }

    #[test]
    fn a_failover_or_a_reshard_step_counts_once() {
        let before = slot_owners(&parse_cluster_nodes(NODES));
        assert_eq!(owner_changes(&before, &before), 0);
        // The replica of 30002 took over all its slots.
        let failover = NODES
            .replace("127.0.0.1:30002@31002 master", "127.0.0.1:30002@31002 master,fail")
            .replace(
                "127.0.0.1:30005@31005 slave 67ed2db8d677e59ec4a4cefb06858cf2a1a89fa1 0 1426238316232 5 connected",
                "127.0.0.1:30005@31005 master - 0 1426238316232 7 connected 5461-10922",
            );
        let after = slot_owners(&parse_cluster_nodes(&failover));
        assert_eq!(owner_changes(&before, &after), 1);
        // Seen through the gap: the master failed, its replica not yet master.
        let gap = NODES.replace(
            "127.0.0.1:30002@31002 master",
            "127.0.0.1:30002@31002 master,fail",
        );
        let remembered = remember(Some(&before), slot_owners(&parse_cluster_nodes(&gap)));
        assert_eq!(owner_changes(&before, &remembered), 0);
        assert_eq!(owner_changes(&remembered, &after), 1);
        // 100 slots moved from 30001 to 30003.
        let reshard = NODES
            .replace("connected 0-5460 16000", "connected 100-5460 16000")
            .replace("connected 10923-16383 [", "connected 0-99 10923-16383 [");
        let after = slot_owners(&parse_cluster_nodes(&reshard));
        assert_eq!(owner_changes(&before, &after), 1);
    }
}
