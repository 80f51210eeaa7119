//! The log as this node reads it, authenticated: the cloud orders records,
//! but it cannot replay, reorder, withhold or roll back any of them, nor
//! show two nodes different logs, without the nodes noticing.
//!
//! - Per-node chains: each sealed payload carries its node's sequence
//!   number (1, 2, 3, ... over everything the node publishes). A reader
//!   expects the next number of each node: a lower one is a replay, a
//!   higher one means records were withheld or reordered.
//! - The log head: every node hashes the records it reads, in order
//!   (`Keys::log_head`, keyed), so every node that read the same log holds
//!   the same head at each `mivui`. Each payload carries the head its
//!   author had read (`seen`, `head`); a reader compares it with its own
//!   head at `seen`: two nodes shown different logs (a fork) find out as
//!   soon as one reads a record of the other. `latus log head` prints it
//!   for comparing out of band.
//! - The cursor: a record at or below the last `mivui` read, or an append
//!   that the log numbers at or below it, means the log was rolled back.
//!
//! - Signatures: a node's records are signed with its own key
//!   (`crypto::NodeSigner`); the first key a node is seen with in the log
//!   is its key. A record claiming a node but signed with another key, or
//!   unsigned once the node signs, is refused (a holder of the volume key
//!   forging as another node), and so is every record of a node after the
//!   record that removed it (`latus nodes remove`). Refused records are
//!   skipped (counted, logged), not a breach: a removed node cannot stop
//!   the others.
//!
//! A breach stops applying the log (the node keeps serving its files and
//! queues its changes) and shows in `status` and the daemon log. A node
//! that reads its own removal stops publishing the same way.
//!
//! State (in the `text` table, journaled with the cursor): `head:<mivui>`,
//! `seq:<node id>`, `sign:<node id>` (its public key) and
//! `removed:<node id>` (the record that removed it).

use std::collections::{BTreeMap, HashMap};

use thiserror::Error;
use uuid::Uuid;

use crate::crypto::{Keys, decode_hex, hex};
use crate::meta::{Meta, MetaError, Record};

/// How many recent heads are kept in memory (older ones are read from the
/// database when an author's `seen` is that old).
const RECENT_HEADS: usize = 4096;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Breach {
    #[error(
        "the log was rolled back or reordered: record {mivui} is at or below what this node already read ({cursor})"
    )]
    RolledBack { mivui: u64, cursor: u64 },
    #[error(
        "record {mivui} of node {node} is its record {got} again (expected {want}): the cloud replayed an old record"
    )]
    Replayed {
        mivui: u64,
        node: Uuid,
        got: u64,
        want: u64,
    },
    #[error(
        "record {mivui} of node {node} is its record {got}, but {want} was next: the cloud withheld or reordered records"
    )]
    Withheld {
        mivui: u64,
        node: Uuid,
        got: u64,
        want: u64,
    },
    #[error(
        "record {mivui} of node {node} carries no sequence number after its records had one: an old record replayed"
    )]
    Unchained { mivui: u64, node: Uuid },
    #[error(
        "the cloud shows nodes different logs (a fork): node {node} read the log up to {seen} as {theirs}, this node as {ours}"
    )]
    Forked {
        node: Uuid,
        seen: u64,
        theirs: String,
        ours: String,
    },
    #[error("record {mivui} of node {node} claims to have read the log up to {seen}, past itself")]
    Impossible { mivui: u64, node: Uuid, seen: u64 },
    #[error(
        "this node was removed from the volume (record {mivui}): its changes are no longer accepted; to take part again, join as a new node (`latus init --key-file`)"
    )]
    Removed { mivui: u64 },
}

/// A record that is in the log but not taken: skipped by every node.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum Refusal {
    #[error(
        "record {mivui} claims node {node} but is signed with another key (forged by a holder of the volume key)"
    )]
    Forged { mivui: u64, node: Uuid },
    #[error("record {mivui} of node {node} is unsigned, but that node signs its records")]
    Unsigned { mivui: u64, node: Uuid },
    #[error("record {mivui} is from node {node}, which was removed from the volume")]
    Removed { mivui: u64, node: Uuid },
}

/// What admitting a record gives: the state to journal with the cursor,
/// and whether the record is refused (then it is not applied).
#[derive(Debug, Default)]
pub struct Admitted {
    pub state: Vec<Record>,
    pub refused: Option<Refusal>,
}

/// What a payload says of its place in the log (format 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link<'a> {
    /// The node's sequence number of this record (0: a legacy record).
    pub seq: u64,
    /// The `mivui` up to which its author had read the log, and its head
    /// there (hex).
    pub seen: u64,
    pub head: &'a str,
    /// The public key the record is signed with (verified), if signed.
    pub signer: Option<&'a str>,
    /// The node's box key (hex), if the signed record carries one.
    pub box_key: Option<&'a str>,
    /// The node a `forget_node` record removes.
    pub forgets: Option<Uuid>,
}

/// What the log says of a node's keys.
#[derive(Debug, Clone, Default)]
struct NodeAuth {
    /// Its public key, from its first signed record.
    key: Option<String>,
    /// Its box key, from its latest signed record.
    box_key: Option<String>,
    /// Removed from the volume (at this record).
    removed: Option<u64>,
}

pub struct Guard {
    /// The last `mivui` read, and the head there.
    cursor: u64,
    head: [u8; 32],
    recent: BTreeMap<u64, [u8; 32]>,
    /// The last sequence number read of each node (`None`: never seen a
    /// chained record of it).
    seqs: HashMap<Uuid, Option<u64>>,
    /// A walk of the whole log apart from the node's own reading (`latus
    /// check`): nothing is looked up in the database, every head is kept.
    standalone: bool,
    auth: HashMap<Uuid, NodeAuth>,
    /// This node, whose own removal stops it.
    me: Option<Uuid>,
}

/// Where this node's reading of the log stands: its cursor and the head
/// there, for comparing nodes out of band (`latus log head`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LogHead {
    pub mivui: u64,
    pub head: String,
}

pub fn log_head(meta: &Meta) -> Result<LogHead, MetaError> {
    meta.commit_pending()?;
    let mivui = meta.state(crate::meta::LOG_SEEN)?;
    let head = match mivui {
        0 => hex(&[0; 32]),
        m => meta.text(&head_key(m))?.unwrap_or_default(),
    };
    Ok(LogHead { mivui, head })
}

fn head_key(mivui: u64) -> String {
    format!("head:{mivui}")
}

fn seq_key(node: Uuid) -> String {
    format!("seq:{node}")
}

fn sign_key(node: Uuid) -> String {
    format!("sign:{node}")
}

fn box_key_name(node: Uuid) -> String {
    format!("box:{node}")
}

fn removed_key(node: Uuid) -> String {
    format!("removed:{node}")
}

fn parse_head(s: &str) -> Option<[u8; 32]> {
    decode_hex(s)?.try_into().ok()
}

/// Node `node`'s box key as this node's reading of the log has it, unless
/// it was removed (call `commit_pending` first).
pub fn box_key(meta: &Meta, node: Uuid) -> Option<String> {
    if meta.text(&removed_key(node)).ok().flatten().is_some() {
        return None;
    }
    meta.text(&box_key_name(node)).ok().flatten()
}

impl Guard {
    /// The guard at `cursor` (the node's `log_seen`), from the database
    /// (call `commit_pending` first).
    /// `None` when the database has no head at `cursor` (it read the log
    /// before heads were kept): the head is then rebuilt from the log's
    /// records (`rebuilt`), so this node's heads agree with every other's.
    pub fn load(meta: &Meta, cursor: u64) -> Result<Option<Self>, MetaError> {
        let head = match cursor {
            0 => Some([0; 32]),
            c => meta.text(&head_key(c))?.as_deref().and_then(parse_head),
        };
        Ok(head.map(|head| Self::at(cursor, head)))
    }

    /// The guard at `cursor` with the head there (computed by hashing the
    /// log's records up to it: `next_head`).
    pub fn at(cursor: u64, head: [u8; 32]) -> Self {
        Self {
            cursor,
            head,
            recent: BTreeMap::new(),
            seqs: HashMap::new(),
            standalone: false,
            auth: HashMap::new(),
            me: None,
        }
    }

    /// The record that keeps the head at `mivui`.
    pub fn head_record(mivui: u64, head: &[u8; 32]) -> Record {
        Record::SetText {
            key: head_key(mivui),
            value: hex(head),
        }
    }

    /// A guard for reading the whole log again from its start, on its own.
    pub fn fresh() -> Self {
        Self {
            cursor: 0,
            head: [0; 32],
            recent: BTreeMap::new(),
            seqs: HashMap::new(),
            standalone: true,
            auth: HashMap::new(),
            me: None,
        }
    }

    /// The guard of node `me`: a record removing `me` is a breach.
    pub fn for_node(mut self, me: Uuid) -> Self {
        self.me = Some(me);
        self
    }

    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The head at the cursor, hex (what `latus log head` prints and what
    /// this node's next records carry).
    pub fn head(&self) -> String {
        hex(&self.head)
    }

    /// Checks record `mivui` (clear originator `pseudonym`, sealed
    /// `payload`) against what was read before. `opened`: the real node
    /// and its link, if the payload opened. Returns the records that
    /// journal the new state (with the cursor, by the caller).
    #[allow(clippy::too_many_arguments)]
    pub fn admit(
        &mut self,
        meta: &Meta,
        keys: &Keys,
        mivui: u64,
        pseudonym: &Uuid,
        payload: &[u8],
        opened: Option<(Uuid, Link)>,
    ) -> Result<Admitted, Breach> {
        if mivui <= self.cursor {
            return Err(Breach::RolledBack {
                mivui,
                cursor: self.cursor,
            });
        }
        // Who signed it first: a refused record is not in its node's chain
        // (a forger cannot make the real node's next record look replayed).
        let refused = opened.and_then(|(node, link)| self.authenticate(meta, mivui, node, &link));
        let opened = opened.filter(|_| refused.is_none());
        // Every check first: a breaching record changes nothing.
        let mut advanced = None;
        if let Some((node, link)) = opened {
            let last = self.last_seq(meta, node);
            match (link.seq, last) {
                (0, Some(_)) => return Err(Breach::Unchained { mivui, node }),
                (0, None) => {} // a record from before chains
                (got, last) => {
                    // Every chain starts at 1, after any legacy records.
                    let want = last.unwrap_or(0).saturating_add(1);
                    if got < want {
                        return Err(Breach::Replayed {
                            mivui,
                            node,
                            got,
                            want,
                        });
                    }
                    if got > want {
                        return Err(Breach::Withheld {
                            mivui,
                            node,
                            got,
                            want,
                        });
                    }
                    advanced = Some((node, got));
                }
            }
            if link.seq > 0 {
                if link.seen >= mivui {
                    return Err(Breach::Impossible {
                        mivui,
                        node,
                        seen: link.seen,
                    });
                }
                if let Some(ours) = self.head_at(meta, link.seen)
                    && hex(&ours) != link.head
                {
                    return Err(Breach::Forked {
                        node,
                        seen: link.seen,
                        theirs: link.head.to_string(),
                        ours: hex(&ours),
                    });
                }
            }
        }
        if let Some((_, link)) = opened
            && let (Some(gone), Some(me)) = (link.forgets, self.me)
            && gone == me
        {
            return Err(Breach::Removed { mivui });
        }
        let mut out = Vec::new();
        if let Some((node, seq)) = advanced {
            self.seqs.insert(node, Some(seq));
            out.push(Record::SetText {
                key: seq_key(node),
                value: seq.to_string(),
            });
        }
        if let Some((node, link)) = opened {
            out.extend(self.learn(meta, node, mivui, &link));
        }
        self.head = keys.log_head(&self.head, mivui, pseudonym.as_bytes(), payload);
        self.cursor = mivui;
        self.recent.insert(mivui, self.head);
        while !self.standalone && self.recent.len() > RECENT_HEADS {
            self.recent.pop_first();
        }
        out.push(Record::SetText {
            key: head_key(mivui),
            value: hex(&self.head),
        });
        Ok(Admitted {
            state: out,
            refused,
        })
    }

    /// Whether record `mivui` of `node` must be refused: signed with
    /// another key than the node's, unsigned once the node signs, or from
    /// a node removed before it.
    fn authenticate(
        &mut self,
        meta: &Meta,
        mivui: u64,
        node: Uuid,
        link: &Link,
    ) -> Option<Refusal> {
        let auth = self.auth_of(meta, node);
        if auth.removed.is_some() {
            return Some(Refusal::Removed { mivui, node });
        }
        match (link.signer, auth.key.as_deref()) {
            (Some(signer), Some(known)) if signer != known => Some(Refusal::Forged { mivui, node }),
            (None, Some(_)) => Some(Refusal::Unsigned { mivui, node }),
            _ => None,
        }
    }

    /// What an admitted record teaches: its node's key (first use), the
    /// removal of a node.
    fn learn(&mut self, meta: &Meta, node: Uuid, mivui: u64, link: &Link) -> Vec<Record> {
        let mut out = Vec::new();
        if let Some(signer) = link.signer {
            let auth = self.auth.entry(node).or_default();
            if auth.key.is_none() {
                auth.key = Some(signer.to_string());
                out.push(Record::SetText {
                    key: sign_key(node),
                    value: signer.to_string(),
                });
            }
            if let Some(b) = link.box_key
                && auth.box_key.as_deref() != Some(b)
            {
                auth.box_key = Some(b.to_string());
                out.push(Record::SetText {
                    key: box_key_name(node),
                    value: b.to_string(),
                });
            }
        }
        if let Some(gone) = link.forgets {
            self.auth_of(meta, gone);
            let auth = self.auth.entry(gone).or_default();
            if auth.removed.is_none() {
                auth.removed = Some(mivui);
                out.push(Record::SetText {
                    key: removed_key(gone),
                    value: mivui.to_string(),
                });
            }
        }
        out
    }

    /// Where a new epoch key can be wrapped for `node`: its box key, if it
    /// was seen and it is not removed.
    pub fn box_key_of(&mut self, meta: &Meta, node: Uuid) -> Option<String> {
        let auth = self.auth_of(meta, node);
        auth.removed
            .is_none()
            .then(|| auth.box_key.clone())
            .flatten()
    }

    fn auth_of(&mut self, meta: &Meta, node: Uuid) -> &NodeAuth {
        let standalone = self.standalone;
        self.auth.entry(node).or_insert_with(|| {
            if standalone {
                return NodeAuth::default();
            }
            let text = |key: String| meta.text(&key).ok().flatten();
            NodeAuth {
                key: text(sign_key(node)),
                box_key: text(box_key_name(node)),
                removed: text(removed_key(node)).and_then(|v| v.parse().ok()),
            }
        })
    }

    /// An append of this node was numbered `mivui`: at or below the cursor
    /// means the log was rolled back under it.
    pub fn check_append(&self, mivui: u64) -> Result<(), Breach> {
        if mivui <= self.cursor {
            return Err(Breach::RolledBack {
                mivui,
                cursor: self.cursor,
            });
        }
        Ok(())
    }

    /// The head after record `mivui`, if this guard read it and keeps it
    /// (a standalone guard keeps every head).
    pub fn head_after(&self, mivui: u64) -> Option<String> {
        self.recent.get(&mivui).map(|h| hex(h))
    }

    /// The last sequence number read of `node`.
    pub fn last_seq(&mut self, meta: &Meta, node: Uuid) -> Option<u64> {
        if let Some(s) = self.seqs.get(&node) {
            return *s;
        }
        if self.standalone {
            return None;
        }
        let s = meta
            .text(&seq_key(node))
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok());
        self.seqs.insert(node, s);
        s
    }

    fn head_at(&self, meta: &Meta, mivui: u64) -> Option<[u8; 32]> {
        if mivui == 0 {
            return Some([0; 32]);
        }
        if mivui == self.cursor {
            return Some(self.head);
        }
        if let Some(h) = self.recent.get(&mivui) {
            return Some(*h);
        }
        if self.standalone {
            return None;
        }
        // Heads from before this format, or not read here: not checked.
        meta.text(&head_key(mivui))
            .ok()
            .flatten()
            .as_deref()
            .and_then(parse_head)
    }
}

#[cfg(test)]
mod tests;
