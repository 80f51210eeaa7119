//! What the log says about nodes, and which old versions a retention rule
//! lets go (`latus nodes`, `latus prune`). Pure functions over the log as
//! this node read it.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use uuid::Uuid;

use crate::event::{ChunkRef, EventType};
use crate::home::Retention;
use crate::meta::LogEntry;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: Uuid,
    pub name: String,
    /// The newest record's time (ns since the epoch, that node's clock).
    pub last_seen: i64,
    /// Changes it published (node records not counted).
    pub events_published: u64,
    pub this_node: bool,
}

/// Every node of the volume, oldest first; forgotten nodes are left out
/// unless they published again after being forgotten.
pub fn nodes(log: &[LogEntry], this_node: Uuid) -> Vec<NodeInfo> {
    let mut by_id: BTreeMap<Uuid, (u64, NodeInfo)> = BTreeMap::new();
    let mut forgotten: HashMap<Uuid, u64> = HashMap::new();
    for e in log {
        if e.event.event_type == EventType::ForgetNode
            && let Ok(id) = e.event.file_path.parse::<Uuid>()
        {
            forgotten.insert(id, e.mivui);
        }
        let (_, info) = by_id.entry(e.originator).or_insert_with(|| {
            (
                e.mivui,
                NodeInfo {
                    id: e.originator,
                    name: String::new(),
                    last_seen: 0,
                    events_published: 0,
                    this_node: e.originator == this_node,
                },
            )
        });
        if !e.node_name.is_empty() {
            info.name = super::names::display_node_name(&e.node_name);
        }
        info.last_seen = info.last_seen.max(e.event.time);
        if !e.event.event_type.is_node_record() {
            info.events_published += 1;
        }
    }
    let last_record: HashMap<Uuid, u64> = log
        .iter()
        .filter(|e| e.event.event_type != EventType::ForgetNode)
        .map(|e| (e.originator, e.mivui))
        .collect();
    let mut out: Vec<(u64, NodeInfo)> = by_id
        .into_values()
        .filter(|(_, n)| {
            forgotten
                .get(&n.id)
                .is_none_or(|&f| last_record.get(&n.id).is_some_and(|&l| l > f))
        })
        .collect();
    out.sort_by_key(|(first, _)| *first);
    out.into_iter().map(|(_, n)| n).collect()
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct PrunePlan {
    /// Log entries whose versions go.
    pub versions: Vec<u64>,
    /// Cloud objects no kept version uses.
    pub chunks: Vec<String>,
    /// Plaintext bytes of those chunks.
    pub bytes: u64,
}

/// The versions `rule` no longer keeps and the chunks only they use.
/// Versions whose object is in `live` (current files, conflict copies,
/// versions waiting for upload) are always kept, and so is every chunk any
/// kept version uses.
pub fn plan_prune(
    log: &[LogEntry],
    chunks_of: &dyn Fn(&str) -> Option<Vec<ChunkRef>>,
    live: &HashSet<String>,
    rule: &Retention,
    now_ns: i64,
) -> PrunePlan {
    if rule.keep_versions.is_none() && rule.keep_days.is_none() {
        return PrunePlan::default();
    }
    // Cooled, not deleted.
    let cooled = rule
        .cold_after_days
        .map(|d| cold_versions(log, live, d, now_ns))
        .unwrap_or_default();
    let mut by_path: HashMap<&str, Vec<&LogEntry>> = HashMap::new();
    for e in log
        .iter()
        .filter(|e| e.event.event_type.carries_content() && e.event.object.is_some())
    {
        by_path.entry(&e.event.file_path).or_default().push(e);
    }
    let min_time = rule
        .keep_days
        .map(|d| now_ns - i64::from(d) * 86_400 * 1_000_000_000);
    let mut doomed: Vec<&LogEntry> = Vec::new();
    let mut kept: Vec<&LogEntry> = Vec::new();
    for versions in by_path.values() {
        let n = versions.len();
        for (i, e) in versions.iter().enumerate() {
            let newest_rank = n - 1 - i; // 0 = newest
            let by_count = rule.keep_versions.is_some_and(|k| newest_rank < k as usize);
            let by_age = min_time.is_some_and(|t| e.event.time >= t);
            let object = e.event.object.as_deref().expect("filtered");
            if by_count || by_age || live.contains(object) || cooled.contains(object) {
                kept.push(e);
            } else {
                doomed.push(e);
            }
        }
    }
    let mut keep_chunks: HashSet<String> = HashSet::new();
    for e in &kept {
        for c in chunks_of(e.event.object.as_deref().expect("filtered")).unwrap_or_default() {
            keep_chunks.insert(c.name);
        }
    }
    for o in live {
        for c in chunks_of(o).unwrap_or_default() {
            keep_chunks.insert(c.name);
        }
    }
    let mut plan = PrunePlan::default();
    let mut seen = HashSet::new();
    doomed.sort_by_key(|e| e.mivui);
    for e in doomed {
        plan.versions.push(e.mivui);
        for c in chunks_of(e.event.object.as_deref().expect("filtered")).unwrap_or_default() {
            if !keep_chunks.contains(&c.name) && seen.insert(c.name.clone()) {
                plan.bytes += c.size;
                plan.chunks.push(c.name);
            }
        }
    }
    plan
}

/// Versions that are no longer current (not in `live`) and older than
/// `days` days at `now_ns`: with `cold_after_days`, they belong in the cold
/// tier (`sync::cold`) and `prune` keeps them.
pub fn cold_versions(
    log: &[LogEntry],
    live: &HashSet<String>,
    days: u32,
    now_ns: i64,
) -> HashSet<String> {
    let before = now_ns - i64::from(days) * 86_400 * 1_000_000_000;
    log.iter()
        .filter(|e| e.event.event_type.carries_content() && e.event.time <= before)
        .filter_map(|e| e.event.object.clone())
        .filter(|o| !live.contains(o))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Event;

    fn entry(
        mivui: u64,
        node: Uuid,
        ty: EventType,
        path: &str,
        object: &str,
        time: i64,
    ) -> LogEntry {
        let mut ev = Event::node_record(node, ty, path.to_string(), time);
        if ty.carries_content() {
            ev.object = Some(object.to_string());
            ev.size = 1;
        }
        LogEntry {
            mivui,
            originator: node,
            node_name: format!("n{}", node.as_u128() % 10),
            event: ev,
        }
    }

    #[test]
    fn nodes_are_counted_and_forgotten() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut log = vec![
            entry(1, a, EventType::Node, "", "", 10),
            entry(2, a, EventType::Create, "x", "o1", 20),
            entry(3, b, EventType::Create, "y", "o2", 30),
        ];
        let n = nodes(&log, a);
        assert_eq!(n.len(), 2);
        assert_eq!(
            (
                n[0].id,
                n[0].events_published,
                n[0].last_seen,
                n[0].this_node
            ),
            (a, 1, 20, true)
        );
        assert_eq!(
            (n[1].id, n[1].events_published, n[1].name.as_str()),
            (b, 1, "n2")
        );
        log.push(entry(4, a, EventType::ForgetNode, &b.to_string(), "", 40));
        assert_eq!(nodes(&log, a).len(), 1);
        log.push(entry(5, b, EventType::Modify, "y", "o3", 50));
        assert_eq!(
            nodes(&log, a).len(),
            2,
            "a node that comes back is listed again"
        );
    }

    #[test]
    fn pruning_never_takes_a_chunk_a_kept_version_uses() {
        let a = Uuid::from_u128(1);
        let log = vec![
            entry(1, a, EventType::Create, "f", "v1", 1),
            entry(2, a, EventType::Modify, "f", "v2", 2),
            entry(3, a, EventType::Modify, "f", "v3", 3),
            entry(4, a, EventType::Create, "g", "g1", 4),
        ];
        let chunks = |o: &str| -> Option<Vec<ChunkRef>> {
            let c = |n: &str| ChunkRef {
                name: n.to_string(),
                size: 10,
            };
            Some(match o {
                "v1" => vec![c("shared"), c("only1")],
                "v2" => vec![c("only2")],
                "v3" => vec![c("shared"), c("only3")],
                "g1" => vec![c("g")],
                _ => return None,
            })
        };
        let live: HashSet<String> = ["v3", "g1"].iter().map(|s| s.to_string()).collect();
        let all = plan_prune(&log, &chunks, &live, &Retention::default(), 100);
        assert!(all.versions.is_empty(), "no rule: keep everything");
        let rule = Retention {
            keep_versions: Some(1),
            keep_days: None,
            cold_after_days: None,
        };
        let plan = plan_prune(&log, &chunks, &live, &rule, 100);
        assert_eq!(plan.versions, vec![1, 2]);
        let mut c = plan.chunks.clone();
        c.sort();
        assert_eq!(c, vec!["only1", "only2"]);
        assert_eq!(plan.bytes, 20);
        let rule = Retention {
            keep_versions: Some(2),
            keep_days: None,
            cold_after_days: None,
        };
        assert_eq!(
            plan_prune(&log, &chunks, &live, &rule, 100).versions,
            vec![1]
        );
        let rule = Retention {
            keep_versions: None,
            keep_days: Some(1),
            cold_after_days: None,
        };
        let day = 86_400 * 1_000_000_000i64;
        assert_eq!(
            plan_prune(&log, &chunks, &live, &rule, day + 2).versions,
            vec![1]
        );
    }

    #[test]
    fn old_versions_cool_instead_of_going() {
        let a = Uuid::from_u128(1);
        let day = 86_400 * 1_000_000_000i64;
        let log = vec![
            entry(1, a, EventType::Create, "f", "v1", 0),
            entry(2, a, EventType::Modify, "f", "v2", 5 * day),
            entry(3, a, EventType::Modify, "f", "v3", 9 * day),
        ];
        let live: HashSet<String> = ["v3".to_string()].into();
        let now = 10 * day;
        let cold = |d| {
            let mut v: Vec<String> = cold_versions(&log, &live, d, now).into_iter().collect();
            v.sort();
            v
        };
        assert_eq!(cold(3), vec!["v1", "v2"], "the current version never cools");
        assert_eq!(cold(6), vec!["v1"]);
        assert!(cold(11).is_empty());
        assert_eq!(cold(0), vec!["v1", "v2"]);
        let chunks = |o: &str| -> Option<Vec<ChunkRef>> {
            Some(vec![ChunkRef {
                name: format!("c-{o}"),
                size: 1,
            }])
        };
        let rule = Retention {
            keep_versions: Some(1),
            keep_days: None,
            cold_after_days: Some(6),
        };
        let plan = plan_prune(&log, &chunks, &live, &rule, now);
        assert_eq!(plan.versions, vec![2], "v1 is cold, kept; v2 goes");
        assert_eq!(plan.chunks, vec!["c-v2"]);
    }
}
