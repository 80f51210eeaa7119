//! Which local content objects take how much disk, and which was used
//! least recently: the index the cache cap is enforced with. The store
//! keeps it current (objects made, filled, removed); the core decides what
//! may go (only content safely in the cloud, not pinned, not open).

use std::collections::HashMap;

#[derive(Debug, Default)]
pub struct Usage {
    entries: HashMap<String, Entry>,
    total: u64,
    tick: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    bytes: u64,
    last_used: u64,
}

impl Usage {
    /// Bytes on disk of every object known.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// `object` now takes `bytes` on disk (made, grown, or filled).
    pub fn set(&mut self, object: &str, bytes: u64) {
        self.tick += 1;
        let tick = self.tick;
        let e = self.entries.entry(object.to_string()).or_insert(Entry {
            bytes: 0,
            last_used: tick,
        });
        self.total = self.total - e.bytes + bytes;
        e.bytes = bytes;
        e.last_used = tick;
    }

    /// Bytes `object` takes on disk, if it is here.
    pub fn bytes(&self, object: &str) -> Option<u64> {
        self.entries.get(object).map(|e| e.bytes)
    }

    pub fn touch(&mut self, object: &str) {
        self.tick += 1;
        if let Some(e) = self.entries.get_mut(object) {
            e.last_used = self.tick;
        }
    }

    pub fn remove(&mut self, object: &str) {
        if let Some(e) = self.entries.remove(object) {
            self.total -= e.bytes;
        }
    }

    /// Objects, least recently used first, with their sizes.
    pub fn least_recent(&self) -> Vec<(String, u64)> {
        let mut v: Vec<(&String, &Entry)> = self.entries.iter().collect();
        v.sort_by_key(|(_, e)| e.last_used);
        v.into_iter().map(|(k, e)| (k.clone(), e.bytes)).collect()
    }
}

/// Parses `512M`, `10G`, `1.5T`, `123` (bytes) into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = s[i..]
                .trim_end_matches(['B', 'b', 'i'])
                .to_ascii_uppercase();
            let m: u64 = match unit.as_str() {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return None,
            };
            (&s[..i], m)
        }
        None => (s, 1),
    };
    let n: f64 = num.trim().parse().ok()?;
    (n >= 0.0).then_some((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_changes_and_order_is_least_recent_first() {
        let mut u = Usage::default();
        u.set("a", 10);
        u.set("b", 20);
        u.set("c", 30);
        assert_eq!(u.total(), 60);
        u.touch("a");
        u.set("b", 5);
        assert_eq!(u.total(), 45);
        let order: Vec<String> = u.least_recent().into_iter().map(|(k, _)| k).collect();
        assert_eq!(order, ["c", "a", "b"]);
        u.remove("c");
        u.remove("missing");
        assert_eq!(u.total(), 15);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("10G"), Some(10 << 30));
        assert_eq!(parse_size("1.5GiB"), Some(3 << 29));
        assert_eq!(parse_size("2 MB"), Some(2 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("5Q"), None);
    }
}
