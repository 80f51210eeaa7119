//! Names and paths the sync engine reasons about: which paths from the log
//! a node can hold, conflict copy names (the same on every node), and the
//! touched-path test. Pure functions.

use std::collections::BTreeMap;

/// Whether a path from the log is one this platform can hold inside the
/// folder: relative, no `.`/`..`/empty components, no NUL, names of at most
/// 255 bytes.
pub fn safe_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 4096
        && !p.starts_with('/')
        && !p.contains('\0')
        && p.split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && c.len() <= 255)
}

/// Where a content event with an unusable path is kept instead (the same
/// on every node).
pub fn refuge_path(p: &str, mivui: u64) -> String {
    let mut name: String = p
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    while name.len() > 200 {
        name.pop();
    }
    let name = name.trim_start_matches('.');
    format!("latus-refused/{mivui} {name}")
}

/// The longest node name shown in a conflict copy's name, in bytes.
pub const MAX_NODE_NAME: usize = 64;

/// A node's name as it may appear in file names and on screen: no
/// control, format (bidi overrides, zero-width) or path characters, at
/// most `MAX_NODE_NAME` bytes. Any key holder chooses its node's name.
pub fn display_node_name(node: &str) -> String {
    let mut out = String::new();
    for c in node.chars() {
        let c = if c == '/' || c.is_control() || is_format_char(c) {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_NODE_NAME {
            break;
        }
        out.push(c);
    }
    if out.is_empty() { "?".into() } else { out }
}

/// Unicode format characters that reorder or hide text (bidi controls,
/// zero-width characters, the BOM).
fn is_format_char(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}' | '\u{061C}')
}

/// `name (conflict from NODE YYYY-MM-DD HHMMSS).ext`, at most 255 bytes
/// whatever the name and the node's name (the stem, then the extension,
/// give way).
pub fn conflict_name(name: &str, node: &str, time_ns: i64) -> String {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let node = display_node_name(node);
    let (y, mo, d, h, mi, s) = utc_fields(time_ns.div_euclid(1_000_000_000));
    let suffix = format!(" (conflict from {node} {y:04}-{mo:02}-{d:02} {h:02}{mi:02}{s:02})");
    let mut stem = stem.to_string();
    while stem.len() + suffix.len() + ext.len() > 255 && !stem.is_empty() {
        stem.pop();
    }
    let mut ext = ext.to_string();
    while stem.len() + suffix.len() + ext.len() > 255 && !ext.is_empty() {
        ext.pop();
    }
    format!("{stem}{suffix}{ext}")
}

/// Calendar fields of a Unix time in UTC (civil-from-days).
/// `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc_text(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = utc_fields(secs);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02} UTC")
}

pub fn utc_fields(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
    )
}

/// `q` itself, one of its ancestors, or one of its descendants is touched.
pub fn touched_related(touched: &BTreeMap<String, u64>, q: &str) -> bool {
    if q.is_empty() {
        return !touched.is_empty();
    }
    if touched.contains_key(q) {
        return true;
    }
    let mut end = q.len();
    while let Some(i) = q[..end].rfind('/') {
        if touched.contains_key(&q[..i]) {
            return true;
        }
        end = i;
    }
    let prefix = format!("{q}/");
    touched
        .range(prefix.clone()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

pub fn join(base: &str, name: &str) -> String {
    if base.is_empty() {
        name.to_string()
    } else {
        format!("{base}/{name}")
    }
}

pub fn split_parent(p: &str) -> (&str, &str) {
    match p.rfind('/') {
        Some(i) => (&p[..i], &p[i + 1..]),
        None => ("", p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "a/./b",
            "a\0b",
            "a/",
        ] {
            assert!(!safe_path(bad), "{bad:?}");
        }
        assert!(!safe_path(&"x".repeat(256)));
        for good in ["a", "a/b c/d.txt", "..a", "a..", ".hidden/x"] {
            assert!(safe_path(good), "{good:?}");
        }
        let r = refuge_path("../../etc/passwd", 7);
        assert!(safe_path(&r), "{r}");
        assert!(r.starts_with("latus-refused/7 "));
    }

    #[test]
    fn conflict_names_follow_the_pattern() {
        // 2026-11-26 14:05:09 UTC
        let t = 1_795_701_909i64 * 1_000_000_000;
        assert_eq!(utc_fields(1_795_701_909), (2026, 11, 26, 14, 5, 9));
        assert_eq!(
            conflict_name("report.txt", "laptop", t),
            "report (conflict from laptop 2026-11-26 140509).txt"
        );
        assert_eq!(
            conflict_name(".bashrc", "pc", t),
            ".bashrc (conflict from pc 2026-11-26 140509)"
        );
        assert_eq!(utc_fields(0), (1970, 1, 1, 0, 0, 0));
        assert!(conflict_name(&"x".repeat(255), "n", t).len() <= 255);
        // A hostile node name: long, with control and bidi characters.
        let evil = format!("{}\u{202E}\n/{}", "é".repeat(200), "z".repeat(300));
        for name in ["a.txt", &format!("a.{}", "e".repeat(250)), &"x".repeat(255)] {
            let c = conflict_name(name, &evil, t);
            assert!(c.len() <= 255, "{} bytes", c.len());
            assert!(
                !c.contains('/') && !c.contains('\n') && !c.contains('\u{202E}'),
                "{c:?}"
            );
        }
        assert_eq!(display_node_name("\u{202E}"), "_");
        assert!(display_node_name(&"é".repeat(100)).len() <= MAX_NODE_NAME);
    }

    #[test]
    fn touched_covers_ancestors_and_descendants() {
        let mut t = BTreeMap::new();
        t.insert("a/b".to_string(), 1);
        assert!(touched_related(&t, "a/b"));
        assert!(touched_related(&t, "a"));
        assert!(touched_related(&t, "a/b/c"));
        assert!(touched_related(&t, ""));
        assert!(!touched_related(&t, "a/bc"));
        assert!(!touched_related(&t, "ab"));
        assert!(!touched_related(&BTreeMap::new(), ""));
    }
}
