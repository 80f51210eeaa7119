//! The web app in a real headless Chromium (driven through chromedriver's
//! WebDriver API), against two mounted nodes sharing a `dir:` cloud:
//! pin a folder and watch it finish, resolve a conflict, restore a folder
//! to an earlier time. And its doors, by raw HTTP: no token, a foreign
//! Host, a change without the form token.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cloud::{Backend, sync_wait, unique};
use crate::harness::*;
use crate::sync::{
    conflict_copies, converge, go_offline, go_online_in_order, mounted_on, read, rewrite,
};
use crate::webdriver::{Browser, screenshot_dir};

const WAIT: Duration = Duration::from_secs(30);

fn ui_url(m: &Mounted) -> String {
    m.latus(&["ui", "--print-url"])
        .expect_ok()
        .stdout
        .trim()
        .to_string()
}

/// `http://127.0.0.1:PORT` of a `ui` URL.
fn origin(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap();
    &url[..7 + rest.find('/').unwrap()]
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn utc_text(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = latus::sync::utc_fields(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

#[test]
fn pin_resolve_and_restore_in_the_browser() {
    let scratch = tempfile::tempdir().unwrap();
    let shots = screenshot_dir(scratch.path());
    let n = mounted_on(
        &Backend::Dir(scratch.path().join(unique("cloud"))),
        &["laptop", "desk"],
    );
    let (a, b) = (&n[0], &n[1]);
    fs::create_dir(a.p("photos")).unwrap();
    let photos: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("photos/img{i}.jpg"),
                pattern(i, 700_000 + i as usize),
            )
        })
        .collect();
    for (p, data) in &photos {
        fs::write(a.p(p), data).unwrap();
    }
    fs::write(a.p("report.txt"), b"the first report").unwrap();
    sync_wait(a);
    converge(&[a, b], None, "setup");
    sync_wait(b);

    let browser = Browser::start();
    browser.goto(&ui_url(b));
    // The token became a cookie and left the address bar.
    assert!(!browser.url().contains("token="), "{}", browser.url());
    browser.wait_text("#sync-state", WAIT, |t| t == "in sync");
    assert_eq!(browser.text("#node"), "desk");
    browser.wait_text("main", WAIT, |t| {
        t.contains("laptop") && t.contains("online")
    });
    browser.screenshot(&shots.join("overview.png"));

    // Pin a folder whose files are in the cloud only here (reading the
    // trees downloaded them: free them first), and watch it finish.
    b.latus(&["free", b.p("photos").to_str().unwrap()])
        .expect_ok();
    for (p, _) in &photos {
        assert_eq!(b.path_status(p)["state"], "cloud");
    }
    let home = origin(&browser.url()).to_string();
    browser.goto(&format!("{home}/files?path=photos"));
    browser.wait_text("#progress", WAIT, |t| t.contains("in the cloud only"));
    browser.click("#pinned-here");
    browser.wait_text("#rule", WAIT, |t| t == "pinned");
    browser.wait_text("#progress", WAIT, |t| t.contains("everything is here"));
    browser.screenshot(&shots.join("files.png"));
    for (p, data) in &photos {
        assert_eq!(b.path_status(p)["state"], "local", "{p}");
        assert_eq!(&read(&b.p(p)), data);
    }

    // A conflict: both edit the report offline; desk's edit is newer.
    go_offline(&[a, b]);
    rewrite(&a.p("report.txt"), b"laptop's report");
    rewrite(&b.p("report.txt"), b"desk's report");
    go_online_in_order(&[a, b]);
    converge(&[a, b], None, "conflict");
    assert_eq!(conflict_copies(&b.mnt, "report.txt").len(), 1);
    // A new daemon: a new session.
    browser.goto(&ui_url(b));
    let home = origin(&browser.url()).to_string();
    browser.wait_text("#sync-state", WAIT, |t| t == "in sync");
    browser.goto(&format!("{home}/conflicts"));
    browser.wait_text("#conflicts", WAIT, |t| t.contains("laptop"));
    browser.screenshot(&shots.join("conflicts.png"));
    // The copy holds laptop's version: "theirs", seen from desk.
    browser.click("#keep-theirs-0");
    browser.wait_text("#msg", WAIT, |t| t.contains("Resolved report.txt"));
    browser.wait_for("#no-conflicts", WAIT);
    sync_wait(b);
    sync_wait(a);
    converge(&[a, b], None, "resolved");
    for m in [a, b] {
        assert_eq!(read(&m.p("report.txt")), b"laptop's report");
        assert!(conflict_copies(&m.mnt, "report.txt").is_empty());
    }

    // Restore the folder as it was before three changes on laptop.
    let before = now_secs() + 1;
    while now_secs() <= before {
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::remove_file(a.p("photos/img0.jpg")).unwrap();
    fs::write(a.p("photos/new.jpg"), b"a new photo").unwrap();
    rewrite(&a.p("photos/img1.jpg"), b"edited");
    sync_wait(a);
    converge(&[a, b], None, "later changes");
    browser.goto(&format!("{home}/files?path=photos"));
    browser.click("#history-link");
    browser.type_into("#at", &utc_text(before));
    browser.click("#preview");
    let plan = browser.wait_text("#plan", WAIT, |t| t.contains("Restore"));
    assert!(plan.contains("create photos/img0.jpg"), "{plan}");
    assert!(plan.contains("replace photos/img1.jpg"), "{plan}");
    assert!(plan.contains("remove photos/new.jpg"), "{plan}");
    // The preview changed nothing.
    assert!(b.p("photos/new.jpg").exists());
    browser.screenshot(&shots.join("history.png"));
    browser.click("#restore");
    browser.wait_text("#msg", WAIT, |t| t.contains("Restored photos"));
    sync_wait(b);
    sync_wait(a);
    converge(&[a, b], None, "restored");
    for m in [a, b] {
        assert!(
            wait_until(Duration::from_secs(10), || !m.p("photos/new.jpg").exists()),
            "{:?}\n{}",
            crate::sync::names_in(&m.p("photos")),
            m.latus(&["log"]).stdout
        );
        for (p, data) in &photos {
            assert_eq!(&read(&m.p(p)), data, "{p}");
        }
    }
    browser.goto(&format!("{home}/activity"));
    browser.wait_text("#activity", WAIT, |t| t.contains("new.jpg"));
    browser.screenshot(&shots.join("activity.png"));
}

/// Status code and body of one raw request.
fn raw(addr: &str, head: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

#[test]
fn the_web_app_opens_only_with_its_token_host_and_form_token() {
    let m = Mounted::new();
    fs::write(m.p("keep.txt"), b"x").unwrap();
    let url = ui_url(&m);
    let addr = origin(&url).trim_start_matches("http://").to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let token = url.rsplit_once("token=").unwrap().1;
    let cookie = format!("Cookie: latus_session={token}");
    let host = format!("Host: {addr}");

    // No token, a wrong one, or a foreign Host (DNS rebinding): refused.
    let (c, _) = raw(&addr, &format!("GET / HTTP/1.1\r\n{host}"), "");
    assert_eq!(c, 401);
    let (c, _) = raw(
        &addr,
        &format!("GET / HTTP/1.1\r\n{host}\r\nCookie: latus_session=00"),
        "",
    );
    assert_eq!(c, 401);
    let port = addr.rsplit_once(':').unwrap().1;
    let (c, _) = raw(
        &addr,
        &format!("GET / HTTP/1.1\r\nHost: evil.example:{port}\r\n{cookie}"),
        "",
    );
    assert_eq!(c, 403);
    let (c, _) = raw(
        &addr,
        &format!("GET /?token={token} HTTP/1.1\r\nHost: localhost:{port}"),
        "",
    );
    assert_eq!(c, 403);
    // The token in the URL gives the cookie; the cookie opens pages.
    let (c, out) = raw(
        &addr,
        &format!("GET /?token={token} HTTP/1.1\r\n{host}"),
        "",
    );
    assert_eq!(c, 303, "{out}");
    assert!(out.contains("HttpOnly; SameSite=Strict"), "{out}");
    let (c, page) = raw(
        &addr,
        &format!("GET /files HTTP/1.1\r\n{host}\r\n{cookie}"),
        "",
    );
    assert_eq!(c, 200);
    let csrf = page
        .split("csrf=")
        .nth(1)
        .map(|s| s[..64].to_string())
        .unwrap();

    // A change needs the form token, and our Origin when one is sent.
    let form = "path=keep.txt&rule=local-only";
    let post = |extra: &str, q: &str| {
        raw(
            &addr,
            &format!(
                "POST /files/placement{q} HTTP/1.1\r\n{host}\r\n{cookie}\r\nContent-Type: application/x-www-form-urlencoded{extra}"
            ),
            form,
        )
        .0
    };
    assert_eq!(post("", ""), 403);
    assert_eq!(post("", &format!("?csrf={token}")), 403);
    assert_eq!(
        post("\r\nOrigin: http://evil.example", &format!("?csrf={csrf}")),
        403
    );
    assert_eq!(m.path_status("keep.txt")["placement"]["rule"], "auto");
    assert_eq!(
        post(
            &format!("\r\nOrigin: http://{addr}"),
            &format!("?csrf={csrf}")
        ),
        303
    );
    assert_eq!(m.path_status("keep.txt")["placement"]["rule"], "local-only");
    // Only loopback: the port is not open on other addresses.
    assert!(Path::new("/proc/net/tcp").exists());
    let listening = fs::read_to_string("/proc/net/tcp").unwrap();
    let hex_port = format!(":{:04X}", port.parse::<u16>().unwrap());
    for line in listening.lines().filter(|l| l.contains(&hex_port)) {
        let local = line.split_whitespace().nth(1).unwrap();
        if local.ends_with(&hex_port) && line.split_whitespace().nth(3) == Some("0A") {
            assert!(local.starts_with("0100007F"), "listening on {local}");
        }
    }
}
