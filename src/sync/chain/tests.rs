//! The guard against a cloud that replays, withholds, reorders, rolls back
//! or forks the log: each attack on a sequence of records is refused, and
//! nodes that read the same log agree on its head.

use std::sync::Arc;

use super::*;
use crate::store::ContentStore;

struct Db {
    _dir: tempfile::TempDir,
    meta: Meta,
}

fn db() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(ContentStore::open(dir.path().join("objects")).unwrap());
    let (meta, _) = Meta::open(&dir.path().join("db"), &dir.path().join("wal"), store).unwrap();
    Db { _dir: dir, meta }
}

fn keys() -> Keys {
    Keys::derive(&[7; 32])
}

const A: Uuid = Uuid::from_bytes([0xa; 16]);
const B: Uuid = Uuid::from_bytes([0xb; 16]);
const C: Uuid = Uuid::from_bytes([0xc; 16]);

/// A record of `node`: (mivui, payload, seq, seen, head).
struct Rec {
    mivui: u64,
    node: Uuid,
    payload: Vec<u8>,
    seq: u64,
    seen: u64,
    head: String,
}

fn rec(mivui: u64, node: Uuid, seq: u64) -> Rec {
    Rec {
        mivui,
        node,
        payload: format!("{node} {seq}").into_bytes(),
        seq,
        seen: 0,
        head: hex(&[0; 32]),
    }
}

fn admit(g: &mut Guard, db: &Db, r: &Rec) -> Result<Vec<Record>, Breach> {
    admit_signed(g, db, r, None, None).map(|a| {
        assert_eq!(a.refused, None);
        a.state
    })
}

/// Admits `r` signed with `signer` (a public key), maybe removing `forgets`.
fn admit_signed(
    g: &mut Guard,
    db: &Db,
    r: &Rec,
    signer: Option<&str>,
    forgets: Option<Uuid>,
) -> Result<Admitted, Breach> {
    let link = Link {
        seq: r.seq,
        seen: r.seen,
        head: &r.head,
        signer,
        box_key: None,
        forgets,
    };
    g.admit(
        &db.meta,
        &keys(),
        r.mivui,
        &r.node,
        &r.payload,
        Some((r.node, link)),
    )
}

#[test]
fn an_ordered_log_is_admitted_and_every_reader_agrees_on_its_head() {
    let (d1, d2) = (db(), db());
    let (mut g1, mut g2) = (
        Guard::load(&d1.meta, 0).unwrap().unwrap(),
        Guard::load(&d2.meta, 0).unwrap().unwrap(),
    );
    for r in [rec(1, A, 1), rec(2, B, 1), rec(3, A, 2), rec(4, B, 2)] {
        admit(&mut g1, &d1, &r).unwrap();
        admit(&mut g2, &d2, &r).unwrap();
        assert_eq!(g1.head(), g2.head());
    }
    assert_eq!(g1.cursor(), 4);
    assert_eq!(g1.last_seq(&d1.meta, A), Some(2));
}

#[test]
fn a_replayed_record_is_refused() {
    let d = db();
    let mut g = Guard::load(&d.meta, 0).unwrap().unwrap();
    for r in [rec(1, A, 1), rec(2, A, 2), rec(3, A, 3)] {
        admit(&mut g, &d, &r).unwrap();
    }
    // The provider copies A's second record to the end of the log.
    let mut replay = rec(4, A, 2);
    replay.payload = rec(2, A, 2).payload;
    assert!(matches!(
        admit(&mut g, &d, &replay),
        Err(Breach::Replayed {
            got: 2,
            want: 4,
            ..
        })
    ));
}

#[test]
fn a_withheld_or_reordered_record_is_refused() {
    let d = db();
    let mut g = Guard::load(&d.meta, 0).unwrap().unwrap();
    admit(&mut g, &d, &rec(1, A, 1)).unwrap();
    // A's record 2 is withheld: its record 3 comes next.
    assert!(matches!(
        admit(&mut g, &d, &rec(2, A, 3)),
        Err(Breach::Withheld {
            got: 3,
            want: 2,
            ..
        })
    ));
}

#[test]
fn a_log_rolled_back_under_the_cursor_is_refused() {
    let d = db();
    let mut g = Guard::load(&d.meta, 0).unwrap().unwrap();
    for r in [rec(1, A, 1), rec(2, B, 1), rec(3, A, 2)] {
        admit(&mut g, &d, &r).unwrap();
    }
    assert!(matches!(
        admit(&mut g, &d, &rec(2, B, 2)),
        Err(Breach::RolledBack {
            mivui: 2,
            cursor: 3
        })
    ));
    assert!(g.check_append(3).is_err());
    assert!(g.check_append(4).is_ok());
}

#[test]
fn a_legacy_record_after_a_chained_one_is_refused() {
    let d = db();
    let mut g = Guard::load(&d.meta, 0).unwrap().unwrap();
    admit(&mut g, &d, &rec(1, A, 0)).unwrap(); // from before chains
    admit(&mut g, &d, &rec(2, A, 1)).unwrap();
    assert!(matches!(
        admit(&mut g, &d, &rec(3, A, 0)),
        Err(Breach::Unchained { .. })
    ));
}

#[test]
fn a_fork_shows_when_one_side_reads_the_others_record() {
    // The provider shows node X and node Y different second records.
    let (dx, dy) = (db(), db());
    let (mut x, mut y) = (
        Guard::load(&dx.meta, 0).unwrap().unwrap(),
        Guard::load(&dy.meta, 0).unwrap().unwrap(),
    );
    let first = rec(1, A, 1);
    admit(&mut x, &dx, &first).unwrap();
    admit(&mut y, &dy, &first).unwrap();
    admit(&mut x, &dx, &rec(2, A, 2)).unwrap();
    admit(&mut y, &dy, &rec(2, C, 1)).unwrap();
    assert_ne!(x.head(), y.head());
    // B (on Y's side) publishes, saying what it read; the provider now
    // shows it to X too. B's own chain is in order: only the head tells.
    let mut from_y = rec(3, B, 1);
    from_y.seen = 2;
    from_y.head = y.head();
    assert!(matches!(
        admit(&mut x, &dx, &from_y),
        Err(Breach::Forked { seen: 2, .. })
    ));
    // The same record on an honest log is admitted.
    let mut honest = rec(3, B, 1);
    honest.seen = 2;
    honest.head = x.head();
    admit(&mut x, &dx, &honest).unwrap();
}

#[test]
fn the_guard_picks_up_where_the_journal_left_it() {
    let d = db();
    let mut g = Guard::load(&d.meta, 0).unwrap().unwrap();
    let mut state = Vec::new();
    for r in [rec(1, A, 1), rec(2, A, 2)] {
        state.extend(admit(&mut g, &d, &r).unwrap());
    }
    d.meta.append(&state).unwrap();
    d.meta.commit_pending().unwrap();
    let mut again = Guard::load(&d.meta, 2).unwrap().unwrap();
    assert_eq!(again.head(), g.head());
    assert!(matches!(
        admit(&mut again, &d, &rec(3, A, 2)),
        Err(Breach::Replayed { .. })
    ));
    admit(&mut again, &d, &rec(3, A, 3)).unwrap();
}

#[test]
fn a_database_that_read_the_log_before_heads_were_kept_has_no_head() {
    let d = db();
    // It read up to 5, but no head was kept: the head is rebuilt from the
    // log's records, never guessed.
    assert!(Guard::load(&d.meta, 5).unwrap().is_none());
    let mut h = [0; 32];
    for m in 1..=2u64 {
        h = keys().log_head(&h, m, A.as_bytes(), format!("{A} {m}").as_bytes());
    }
    let mut g = Guard::load(&d.meta, 0).unwrap().unwrap();
    for r in [rec(1, A, 1), rec(2, A, 2)] {
        admit(&mut g, &d, &r).unwrap();
    }
    assert_eq!(Guard::at(2, h).head(), g.head());
}

#[test]
fn a_record_signed_with_another_key_than_its_nodes_is_refused() {
    let d = db();
    let mut g = Guard::load(&d.meta, 0).unwrap().unwrap();
    let a = admit_signed(&mut g, &d, &rec(1, A, 1), Some("aaaa"), None).unwrap();
    assert_eq!(a.refused, None);
    // Another holder of the volume key publishes as A, with its own key.
    let forged = admit_signed(&mut g, &d, &rec(2, A, 2), Some("ffff"), None).unwrap();
    assert!(matches!(
        forged.refused,
        Some(Refusal::Forged { mivui: 2, .. })
    ));
    // ... or unsigned, as records were before signatures.
    let unsigned = admit_signed(&mut g, &d, &rec(3, A, 2), None, None).unwrap();
    assert!(matches!(unsigned.refused, Some(Refusal::Unsigned { .. })));
    // A's real next record is still its record 2: the forgeries took no
    // place in its chain.
    let real = admit_signed(&mut g, &d, &rec(4, A, 2), Some("aaaa"), None).unwrap();
    assert_eq!(real.refused, None);
    assert_eq!(g.cursor(), 4);
}

#[test]
fn a_removed_nodes_later_records_are_refused_and_the_node_itself_stops() {
    let d = db();
    let mut g = Guard::load(&d.meta, 0).unwrap().unwrap();
    let mut state = Vec::new();
    for (r, key, forgets) in [
        (rec(1, A, 1), "aaaa", None),
        (rec(2, B, 1), "bbbb", None),
        (rec(3, A, 2), "aaaa", Some(B)),
    ] {
        state.extend(
            admit_signed(&mut g, &d, &r, Some(key), forgets)
                .unwrap()
                .state,
        );
    }
    let late = admit_signed(&mut g, &d, &rec(4, B, 2), Some("bbbb"), None).unwrap();
    assert!(matches!(
        late.refused,
        Some(Refusal::Removed { node: B, .. })
    ));
    // Kept with the cursor: a guard loaded again knows it too.
    d.meta.append(&state).unwrap();
    d.meta.append(&late.state).unwrap();
    d.meta.commit_pending().unwrap();
    let mut again = Guard::load(&d.meta, 4).unwrap().unwrap();
    let later = admit_signed(&mut again, &d, &rec(5, B, 2), Some("bbbb"), None).unwrap();
    assert!(later.refused.is_some());
    let forged = admit_signed(&mut again, &d, &rec(6, A, 3), Some("ffff"), None).unwrap();
    assert!(matches!(forged.refused, Some(Refusal::Forged { .. })));
    // B's own guard reads its removal and stops.
    let db_b = db();
    let mut gb = Guard::load(&db_b.meta, 0).unwrap().unwrap().for_node(B);
    admit_signed(&mut gb, &db_b, &rec(1, A, 1), Some("aaaa"), None).unwrap();
    admit_signed(&mut gb, &db_b, &rec(2, B, 1), Some("bbbb"), None).unwrap();
    assert!(matches!(
        admit_signed(&mut gb, &db_b, &rec(3, A, 2), Some("aaaa"), Some(B)),
        Err(Breach::Removed { mivui: 3 })
    ));
}
