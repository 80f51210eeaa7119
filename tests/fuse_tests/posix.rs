//! POSIX behaviour of the mounted folder, one area per test.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt, symlink};
use std::path::Path;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::harness::{KIB, MIB, Mounted, check, cpath, errno, live_threads, pattern};

fn read_at(f: &File, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut done = 0;
    while done < len {
        let n = f
            .read_at(&mut buf[done..], off + done as u64)
            .expect("pread");
        if n == 0 {
            break;
        }
        done += n;
    }
    buf.truncate(done);
    buf
}

/// Writes `data` at `off` into the in-memory model of a file.
fn model_write(model: &mut Vec<u8>, off: usize, data: &[u8]) {
    if model.len() < off + data.len() {
        model.resize(off + data.len(), 0);
    }
    model[off..off + data.len()].copy_from_slice(data);
}

fn path_truncate(p: &Path, len: i64) -> std::io::Result<()> {
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::truncate(cpath(p).as_ptr(), len) })
}

#[test]
fn create_write_read_roundtrip() {
    let m = Mounted::new();
    let p = m.p("hello.txt");
    fs::write(&p, b"hello world").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"hello world");
    let md = fs::metadata(&p).unwrap();
    assert!(md.is_file());
    assert_eq!(md.len(), 11);

    // O_TRUNC rewrite with shorter content.
    fs::write(&p, b"bye").unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"bye");

    // Several MiB, written in one call and read in one call.
    let big = pattern(1, 9 * MIB + 123);
    fs::write(m.p("big.bin"), &big).unwrap();
    assert_eq!(fs::read(m.p("big.bin")).unwrap(), big);

    // Empty file.
    File::create(m.p("empty")).unwrap();
    assert_eq!(fs::metadata(m.p("empty")).unwrap().len(), 0);
    assert_eq!(fs::read(m.p("empty")).unwrap(), b"");

    assert_eq!(
        errno(OpenOptions::new().write(true).create_new(true).open(&p)),
        libc::EEXIST
    );
    assert_eq!(errno(File::open(m.p("missing"))), libc::ENOENT);
    assert_eq!(errno(File::open(m.p("missing/deeper"))), libc::ENOENT);
    assert_eq!(errno(File::open(m.p("hello.txt/below"))), libc::ENOTDIR);

    // Writing through a read-only descriptor is refused.
    let mut ro = File::open(&p).unwrap();
    assert_eq!(errno(ro.write(b"x")), libc::EBADF);
}

#[test]
fn reads_and_writes_at_any_offset() {
    let m = Mounted::new();
    let p = m.p("offsets.bin");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    let mut model = Vec::new();
    // Out of order, overlapping, across 1 MiB and 4 MiB boundaries, with holes.
    let writes: [(usize, usize, u64); 8] = [
        (3 * MIB + 5, 4, 1),
        (0, 4096, 2),
        (MIB - 100, 300, 3),
        (4 * MIB - 7, 20_000, 4),
        (10, 5, 5),
        (MIB - 50, 100, 6),
        (2 * MIB, 1, 7),
        (123_457, 65_536 + 3, 8),
    ];
    for (off, len, seed) in writes {
        let data = pattern(seed, len);
        f.write_all_at(&data, off as u64).unwrap();
        model_write(&mut model, off, &data);
        assert_eq!(
            f.metadata().unwrap().len(),
            model.len() as u64,
            "size after write at {off}"
        );
    }
    // Reads at odd offsets and lengths, through the same descriptor.
    for (off, len) in [
        (0, 10),
        (MIB - 120, 400),
        (2 * MIB - 1, 3),
        (3 * MIB, 10),
        (4 * MIB - 10, 20_010),
    ] {
        let want = &model[off..(off + len).min(model.len())];
        assert_eq!(
            read_at(&f, off as u64, len),
            want,
            "pread at {off} len {len}"
        );
    }
    // Past EOF reads return nothing.
    assert!(read_at(&f, model.len() as u64 + 10, 100).is_empty());
    drop(f);

    assert_eq!(fs::read(&p).unwrap(), model, "content after close");
    // Holes read as zeros.
    let f = File::open(&p).unwrap();
    assert_eq!(read_at(&f, (2 * MIB + 1) as u64, 1000), vec![0u8; 1000]);

    // Sequential read with seek.
    let mut f = File::open(&p).unwrap();
    f.seek(SeekFrom::Start(MIB as u64 - 100)).unwrap();
    let mut buf = vec![0u8; 300];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(buf, model[MIB - 100..MIB + 200]);
    assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), model.len() as u64);
}

#[test]
fn sparse_file_with_hole_at_start() {
    let m = Mounted::new();
    let p = m.p("sparse");
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(b"end", 64 * MIB as u64).unwrap();
    drop(f);
    let md = fs::metadata(&p).unwrap();
    assert_eq!(md.len(), 64 * MIB as u64 + 3);
    let f = File::open(&p).unwrap();
    assert_eq!(read_at(&f, 0, 4096), vec![0u8; 4096]);
    assert_eq!(read_at(&f, 33 * MIB as u64, 4096), vec![0u8; 4096]);
    assert_eq!(read_at(&f, 64 * MIB as u64 - 2, 10), b"\0\0end");
}

#[test]
fn append_mode() {
    let m = Mounted::new();
    let p = m.p("log.txt");
    let mut a = OpenOptions::new()
        .append(true)
        .create(true)
        .open(&p)
        .unwrap();
    let mut b = OpenOptions::new().append(true).open(&p).unwrap();
    a.write_all(b"one\n").unwrap();
    b.write_all(b"two\n").unwrap();
    a.write_all(b"three\n").unwrap();
    // A plain writer overwrites at offset 0; appenders still go to the end.
    let c = OpenOptions::new().write(true).open(&p).unwrap();
    c.write_all_at(b"ONE", 0).unwrap();
    b.write_all(b"four\n").unwrap();
    drop((a, b, c));
    assert_eq!(fs::read_to_string(&p).unwrap(), "ONE\ntwo\nthree\nfour\n");

    // Reopen in append mode after close: appends to the stored content.
    let mut d = OpenOptions::new().append(true).open(&p).unwrap();
    d.write_all(b"five\n").unwrap();
    drop(d);
    assert_eq!(
        fs::read_to_string(&p).unwrap(),
        "ONE\ntwo\nthree\nfour\nfive\n"
    );
}

#[test]
fn truncate_shrink_and_grow() {
    let m = Mounted::new();
    let p = m.p("t.bin");
    let orig = pattern(9, 3 * MIB);
    fs::write(&p, &orig).unwrap();

    // Path truncate (setattr without a handle): shrink.
    path_truncate(&p, 10_000).unwrap();
    assert_eq!(fs::metadata(&p).unwrap().len(), 10_000);
    assert_eq!(fs::read(&p).unwrap(), &orig[..10_000]);

    // ftruncate grow: new bytes are zeros, not the old content.
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    f.set_len(2 * MIB as u64).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 2 * MIB as u64);
    let got = read_at(&f, 0, 2 * MIB);
    assert_eq!(&got[..10_000], &orig[..10_000]);
    assert!(
        got[10_000..].iter().all(|b| *b == 0),
        "grown region must read as zeros"
    );

    // Write, shrink below it, grow again: the stale bytes must not come back.
    f.write_all_at(&[0xAB; 5000], MIB as u64).unwrap();
    f.set_len(MIB as u64 + 100).unwrap();
    f.set_len(MIB as u64 + 8000).unwrap();
    let got = read_at(&f, MIB as u64, 8000);
    assert_eq!(&got[..100], &[0xAB; 100]);
    assert!(
        got[100..].iter().all(|b| *b == 0),
        "bytes beyond a shrink must be zero after growing"
    );
    drop(f);
    let got = fs::read(&p).unwrap();
    assert_eq!(got.len(), MIB + 8000);
    assert!(got[MIB + 100..].iter().all(|b| *b == 0), "after close too");

    // Truncate to zero, and O_TRUNC on open.
    path_truncate(&p, 0).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"");
    fs::write(&p, b"abcdef").unwrap();
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 0);
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"");

    // A reader with the old content cached sees the truncation.
    fs::write(&p, pattern(10, 50_000)).unwrap();
    let reader = File::open(&p).unwrap();
    assert_eq!(read_at(&reader, 0, 50_000).len(), 50_000);
    path_truncate(&p, 1000).unwrap();
    assert_eq!(read_at(&reader, 0, 50_000).len(), 1000);

    // Truncating a folder fails.
    fs::create_dir(m.p("dir")).unwrap();
    assert_eq!(errno(path_truncate(&m.p("dir"), 0)), libc::EISDIR);
}

#[test]
fn fsync_and_fdatasync() {
    let m = Mounted::new();
    let mut f = File::create(m.p("synced")).unwrap();
    f.write_all(&pattern(3, 200_000)).unwrap();
    f.sync_all().unwrap();
    f.write_all(b"more").unwrap();
    f.sync_data().unwrap();
    drop(f);
    assert_eq!(fs::metadata(m.p("synced")).unwrap().len(), 200_004);
    // fsync of a folder.
    fs::create_dir(m.p("d")).unwrap();
    File::open(m.p("d")).unwrap().sync_all().unwrap();
    File::open(&m.mnt).unwrap().sync_all().unwrap();
}

#[test]
fn rename_files() {
    let m = Mounted::new();
    fs::write(m.p("a"), b"content a").unwrap();
    fs::write(m.p("b"), b"content b").unwrap();

    fs::rename(m.p("a"), m.p("c")).unwrap();
    assert_eq!(errno(fs::metadata(m.p("a"))), libc::ENOENT);
    assert_eq!(fs::read(m.p("c")).unwrap(), b"content a");

    // Over an existing file; a descriptor on the replaced file still reads it.
    let old_b = File::open(m.p("b")).unwrap();
    let ino_c = fs::metadata(m.p("c")).unwrap().ino();
    fs::rename(m.p("c"), m.p("b")).unwrap();
    assert_eq!(fs::read(m.p("b")).unwrap(), b"content a");
    assert_eq!(
        fs::metadata(m.p("b")).unwrap().ino(),
        ino_c,
        "rename keeps the inode"
    );
    assert_eq!(read_at(&old_b, 0, 100), b"content b");
    drop(old_b);

    // Into a subfolder and back, with an open descriptor across the move.
    fs::create_dir(m.p("sub")).unwrap();
    let mut open = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("b"))
        .unwrap();
    fs::rename(m.p("b"), m.p("sub/moved")).unwrap();
    open.seek(SeekFrom::End(0)).unwrap();
    open.write_all(b" + written after move").unwrap();
    drop(open);
    assert_eq!(
        fs::read(m.p("sub/moved")).unwrap(),
        b"content a + written after move"
    );

    // Renaming onto itself is a no-op.
    fs::rename(m.p("sub/moved"), m.p("sub/moved")).unwrap();
    assert_eq!(
        fs::read(m.p("sub/moved")).unwrap(),
        b"content a + written after move"
    );

    // Errors.
    assert_eq!(errno(fs::rename(m.p("nope"), m.p("x"))), libc::ENOENT);
    assert_eq!(
        errno(fs::rename(m.p("sub/moved"), m.p("missing/x"))),
        libc::ENOENT
    );
    fs::create_dir(m.p("adir")).unwrap();
    assert_eq!(
        errno(fs::rename(m.p("sub/moved"), m.p("adir"))),
        libc::EISDIR
    );

    let names: BTreeSet<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["adir", "sub"].iter().map(Into::into).collect());
}

fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> std::io::Result<()> {
    // SAFETY: valid NUL-terminated paths relative to the cwd.
    check(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cpath(from).as_ptr(),
            libc::AT_FDCWD,
            cpath(to).as_ptr(),
            flags,
        )
    })
}

#[test]
fn rename_noreplace() {
    let m = Mounted::new();
    fs::write(m.p("a"), b"A").unwrap();
    fs::write(m.p("b"), b"B").unwrap();
    assert_eq!(
        errno(renameat2(&m.p("a"), &m.p("b"), libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(fs::read(m.p("a")).unwrap(), b"A");
    assert_eq!(fs::read(m.p("b")).unwrap(), b"B");
    renameat2(&m.p("a"), &m.p("c"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(fs::read(m.p("c")).unwrap(), b"A");
    assert_eq!(errno(fs::metadata(m.p("a"))), libc::ENOENT);
    fs::create_dir(m.p("d")).unwrap();
    fs::create_dir(m.p("e")).unwrap();
    assert_eq!(
        errno(renameat2(&m.p("d"), &m.p("e"), libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert!(m.p("d").is_dir());
}

#[test]
fn rename_folders() {
    let m = Mounted::new();
    fs::create_dir_all(m.p("src/inner/deep")).unwrap();
    fs::write(m.p("src/f1"), b"one").unwrap();
    fs::write(m.p("src/inner/deep/f2"), b"two").unwrap();
    symlink("../f1", m.p("src/inner/link")).unwrap();
    let kept_open = File::open(m.p("src/inner/deep/f2")).unwrap();

    fs::rename(m.p("src"), m.p("dst")).unwrap();
    assert_eq!(errno(fs::metadata(m.p("src"))), libc::ENOENT);
    assert_eq!(fs::read(m.p("dst/f1")).unwrap(), b"one");
    assert_eq!(fs::read(m.p("dst/inner/deep/f2")).unwrap(), b"two");
    assert_eq!(fs::read(m.p("dst/inner/link")).unwrap(), b"one");
    assert_eq!(read_at(&kept_open, 0, 10), b"two");
    drop(kept_open);
    // New files land in the renamed folder.
    fs::write(m.p("dst/inner/deep/f3"), b"three").unwrap();
    assert_eq!(fs::read(m.p("dst/inner/deep/f3")).unwrap(), b"three");

    // Over an empty folder: allowed.
    fs::create_dir(m.p("empty")).unwrap();
    fs::rename(m.p("dst"), m.p("empty")).unwrap();
    assert_eq!(fs::read(m.p("empty/inner/deep/f2")).unwrap(), b"two");
    assert_eq!(errno(fs::metadata(m.p("dst"))), libc::ENOENT);

    // Over a non-empty folder: ENOTEMPTY, nothing changes.
    fs::create_dir(m.p("full")).unwrap();
    fs::write(m.p("full/x"), b"x").unwrap();
    assert_eq!(
        errno(fs::rename(m.p("empty"), m.p("full"))),
        libc::ENOTEMPTY
    );
    assert_eq!(fs::read(m.p("full/x")).unwrap(), b"x");
    assert_eq!(fs::read(m.p("empty/f1")).unwrap(), b"one");

    // Folder over a file, and into its own subfolder.
    fs::write(m.p("plain"), b"p").unwrap();
    assert_eq!(errno(fs::rename(m.p("empty"), m.p("plain"))), libc::ENOTDIR);
    assert_eq!(
        errno(fs::rename(m.p("empty"), m.p("empty/inner/x"))),
        libc::EINVAL
    );

    // Deep move between folders.
    fs::rename(m.p("empty/inner"), m.p("full/inner2")).unwrap();
    assert_eq!(fs::read(m.p("full/inner2/deep/f3")).unwrap(), b"three");
    let names: BTreeSet<_> = fs::read_dir(m.p("empty"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["f1"].iter().map(Into::into).collect());
}

#[test]
fn mkdir_rmdir_and_readdir() {
    let m = Mounted::new();
    fs::create_dir(m.p("a")).unwrap();
    assert!(fs::metadata(m.p("a")).unwrap().is_dir());
    assert_eq!(errno(fs::create_dir(m.p("a"))), libc::EEXIST);
    assert_eq!(errno(fs::create_dir(m.p("missing/b"))), libc::ENOENT);
    fs::create_dir_all(m.p("a/b/c")).unwrap();
    fs::write(m.p("a/f"), b"f").unwrap();
    symlink("f", m.p("a/l")).unwrap();

    assert_eq!(errno(fs::remove_dir(m.p("a"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_dir(m.p("a/f"))), libc::ENOTDIR);
    assert_eq!(errno(fs::remove_file(m.p("a/b"))), libc::EISDIR);
    assert_eq!(errno(fs::create_dir(m.p("a/f/x"))), libc::ENOTDIR);

    let mut listing: Vec<(String, &str)> = fs::read_dir(m.p("a"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let kind = if t.is_dir() {
                "dir"
            } else if t.is_symlink() {
                "symlink"
            } else if t.is_file() {
                "file"
            } else {
                "other"
            };
            (e.file_name().to_string_lossy().into_owned(), kind)
        })
        .collect();
    listing.sort();
    assert_eq!(
        listing,
        vec![
            ("b".into(), "dir"),
            ("f".into(), "file"),
            ("l".into(), "symlink")
        ]
    );

    fs::remove_dir(m.p("a/b/c")).unwrap();
    fs::remove_dir(m.p("a/b")).unwrap();
    fs::remove_file(m.p("a/f")).unwrap();
    fs::remove_file(m.p("a/l")).unwrap();
    fs::remove_dir(m.p("a")).unwrap();
    assert_eq!(errno(fs::metadata(m.p("a"))), libc::ENOENT);
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);

    // Same name again after removal.
    fs::create_dir(m.p("a")).unwrap();
    assert_eq!(fs::read_dir(m.p("a")).unwrap().count(), 0);
}

#[test]
fn unlink_open_file_stays_readable() {
    let m = Mounted::new();
    let p = m.p("victim");
    let content = pattern(4, 300_000);
    fs::write(&p, &content).unwrap();
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert_eq!(errno(fs::metadata(&p)), libc::ENOENT);
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);

    let mut got = Vec::new();
    f.read_to_end(&mut got).unwrap();
    assert_eq!(
        got, content,
        "unlinked file readable through its descriptor"
    );
    f.write_all(b"tail").unwrap();
    assert_eq!(f.metadata().unwrap().len(), 300_004);
    assert_eq!(read_at(&f, 300_000, 10), b"tail");

    // A new file with the same name is independent.
    fs::write(&p, b"new").unwrap();
    assert_eq!(read_at(&f, 0, 10), &content[..10]);
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), b"new");
    assert_eq!(errno(fs::remove_file(m.p("never"))), libc::ENOENT);
}

#[test]
fn symlinks_and_readlink() {
    let m = Mounted::new();
    fs::write(m.p("target.txt"), b"pointed at").unwrap();
    symlink("target.txt", m.p("link")).unwrap();
    assert_eq!(fs::read_link(m.p("link")).unwrap(), Path::new("target.txt"));
    assert!(
        fs::symlink_metadata(m.p("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        fs::symlink_metadata(m.p("link")).unwrap().len(),
        "target.txt".len() as u64
    );
    assert_eq!(fs::read(m.p("link")).unwrap(), b"pointed at");
    assert!(fs::metadata(m.p("link")).unwrap().is_file());

    // Writing through the link changes the target.
    fs::write(m.p("link"), b"via link").unwrap();
    assert_eq!(fs::read(m.p("target.txt")).unwrap(), b"via link");

    // Dangling.
    symlink("does/not/exist", m.p("dangling")).unwrap();
    assert_eq!(errno(fs::metadata(m.p("dangling"))), libc::ENOENT);
    assert_eq!(
        fs::read_link(m.p("dangling")).unwrap(),
        Path::new("does/not/exist")
    );

    // To a folder, traversed.
    fs::create_dir(m.p("dir")).unwrap();
    fs::write(m.p("dir/inside"), b"in").unwrap();
    symlink("dir", m.p("dirlink")).unwrap();
    assert_eq!(fs::read(m.p("dirlink/inside")).unwrap(), b"in");

    // Long target, absolute target outside the mount, existing name.
    let long: String = (0..200).map(|i| format!("seg{i}/")).collect::<String>() + "end";
    assert!(long.len() > 1000 && long.len() < 4000);
    symlink(&long, m.p("longlink")).unwrap();
    assert_eq!(fs::read_link(m.p("longlink")).unwrap(), Path::new(&long));
    let outside = m.scratch().join("outside.txt");
    fs::write(&outside, b"outside").unwrap();
    symlink(&outside, m.p("abs")).unwrap();
    assert_eq!(fs::read(m.p("abs")).unwrap(), b"outside");
    assert_eq!(errno(symlink("x", m.p("link"))), libc::EEXIST);
    // readlink of a non-link.
    assert_eq!(errno(fs::read_link(m.p("target.txt"))), libc::EINVAL);

    // Removing the link leaves the target.
    fs::remove_file(m.p("link")).unwrap();
    assert_eq!(fs::read(m.p("target.txt")).unwrap(), b"via link");
}

#[test]
fn hard_links_share_one_file_and_survive_a_remount() {
    let m = Mounted::new();
    fs::create_dir(m.p("d")).unwrap();
    fs::write(m.p("a"), b"first").unwrap();
    fs::hard_link(m.p("a"), m.p("d/b")).unwrap();
    let (a, b) = (
        fs::metadata(m.p("a")).unwrap(),
        fs::metadata(m.p("d/b")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino());
    assert_eq!((a.nlink(), b.nlink()), (2, 2));
    // Written through one name, read through the other; modes are shared.
    fs::write(m.p("d/b"), b"second").unwrap();
    assert_eq!(fs::read(m.p("a")).unwrap(), b"second");
    fs::set_permissions(m.p("a"), fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(fs::metadata(m.p("d/b")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(errno(fs::hard_link(m.p("d"), m.p("d2"))), libc::EPERM);
    assert_eq!(errno(fs::hard_link(m.p("a"), m.p("d/b"))), libc::EEXIST);

    // Both names are listed; renaming a name onto another name of the
    // same file does nothing.
    let names: BTreeSet<String> = fs::read_dir(m.p("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, BTreeSet::from(["b".to_string()]));
    fs::rename(m.p("a"), m.p("d/b")).unwrap();
    assert!(m.p("a").exists() && m.p("d/b").exists());

    m.remount();
    assert_eq!(fs::metadata(m.p("d/b")).unwrap().nlink(), 2);
    // Removing the first name keeps the file under the other one.
    fs::remove_file(m.p("a")).unwrap();
    assert_eq!(fs::read(m.p("d/b")).unwrap(), b"second");
    assert_eq!(fs::metadata(m.p("d/b")).unwrap().nlink(), 1);
    m.remount();
    assert_eq!(fs::read(m.p("d/b")).unwrap(), b"second");
    assert_eq!(errno(fs::metadata(m.p("a"))), libc::ENOENT);
    // A third name, moved and replacing a file with one name.
    fs::hard_link(m.p("d/b"), m.p("c")).unwrap();
    fs::write(m.p("e"), b"replaced").unwrap();
    fs::rename(m.p("c"), m.p("e")).unwrap();
    assert_eq!(fs::read(m.p("e")).unwrap(), b"second");
    assert_eq!(fs::metadata(m.p("d/b")).unwrap().nlink(), 2);
    // Replacing one name of a file with two leaves the other.
    fs::write(m.p("f"), b"other").unwrap();
    fs::rename(m.p("f"), m.p("d/b")).unwrap();
    assert_eq!(fs::read(m.p("e")).unwrap(), b"second");
    assert_eq!(fs::metadata(m.p("e")).unwrap().nlink(), 1);
    assert_eq!(fs::read(m.p("d/b")).unwrap(), b"other");
}

#[test]
fn a_hard_link_syncs_by_its_first_name_and_moves_on_when_that_goes() {
    let m = Mounted::new();
    fs::write(m.p("first"), b"content").unwrap();
    let since = m.last_id();
    fs::hard_link(m.p("first"), m.p("second")).unwrap();
    fs::write(m.p("marker"), b"m").unwrap();
    let evs = m.wait_events(since, Duration::from_secs(30), |e| {
        e.iter().any(|e| e.file_path == "marker")
    });
    assert!(
        evs.iter().all(|e| e.file_path != "second"),
        "a second name is local: {evs:?}"
    );
    let since = m.last_id();
    fs::remove_file(m.p("first")).unwrap();
    let evs = m.wait_events(since, Duration::from_secs(30), |e| {
        e.iter().any(|e| e.file_path == "second")
    });
    let seen: Vec<(&str, &str)> = evs
        .iter()
        .map(|e| (e.event_type.as_str(), e.file_path.as_str()))
        .collect();
    assert_eq!(seen, [("delete", "first"), ("create", "second")]);
    let created = evs.iter().find(|e| e.file_path == "second").unwrap();
    assert_eq!(created.size, Some(7));
}

#[test]
fn fifos_sockets_and_device_nodes_work_here_and_never_sync() {
    use std::os::unix::net::{UnixListener, UnixStream};
    let m = Mounted::new();
    let since = m.last_id();
    let fifo = cpath(&m.p("fifo"));
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }).unwrap();
    let reader = {
        let p = m.p("fifo");
        thread::spawn(move || fs::read(p).unwrap())
    };
    fs::write(m.p("fifo"), b"through the pipe").unwrap();
    assert_eq!(reader.join().unwrap(), b"through the pipe");

    let listener = UnixListener::bind(m.p("sock")).unwrap();
    let server = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"hello").unwrap();
    });
    let mut got = String::new();
    UnixStream::connect(m.p("sock"))
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    server.join().unwrap();
    assert_eq!(got, "hello");

    let dev = cpath(&m.p("null"));
    // SAFETY: valid NUL-terminated path; makedev of /dev/null's numbers.
    check(unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) })
        .unwrap();
    let md = fs::symlink_metadata(m.p("null")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &md.file_type()
    ));
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    // The folder is nodev: the node is listed but cannot open the device.
    assert!(File::open(m.p("null")).is_err());

    fs::write(m.p("marker"), b"m").unwrap();
    let evs = m.wait_events(since, Duration::from_secs(30), |e| {
        e.iter().any(|e| e.file_path == "marker")
    });
    let paths: Vec<&str> = evs.iter().map(|e| e.file_path.as_str()).collect();
    assert_eq!(paths, ["marker"], "special files never make events");
    assert_eq!(m.status()["special_files"], 3, "{}", m.status());

    m.remount();
    let ft = fs::symlink_metadata(m.p("fifo")).unwrap().file_type();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&ft));
    assert_eq!(
        fs::symlink_metadata(m.p("null")).unwrap().rdev(),
        libc::makedev(1, 3)
    );
    fs::rename(m.p("fifo"), m.p("fifo2")).unwrap();
    fs::remove_file(m.p("fifo2")).unwrap();
    fs::remove_file(m.p("sock")).unwrap();
    fs::remove_file(m.p("null")).unwrap();
    let paths: Vec<String> = m
        .events_since(since)
        .into_iter()
        .map(|e| e.file_path)
        .collect();
    assert_eq!(paths, ["marker"]);
}

fn set_times(p: &Path, atime: (i64, i64), mtime: (i64, i64), follow: bool) {
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let flags = if follow { 0 } else { libc::AT_SYMLINK_NOFOLLOW };
    // SAFETY: valid path and a two-element timespec array.
    check(unsafe { libc::utimensat(libc::AT_FDCWD, cpath(p).as_ptr(), ts.as_ptr(), flags) })
        .unwrap();
}

/// (mode, uid, gid, mtime, atime) of an entry, not following symlinks.
fn attrs(p: &Path) -> (u32, u32, u32, (i64, i64), (i64, i64)) {
    let md = fs::symlink_metadata(p).unwrap();
    (
        md.mode(),
        md.uid(),
        md.gid(),
        (md.mtime(), md.mtime_nsec()),
        (md.atime(), md.atime_nsec()),
    )
}

#[test]
fn chmod_chown_utimens_kept_across_remount() {
    let m = Mounted::new();
    fs::write(m.p("f"), b"data").unwrap();
    fs::create_dir(m.p("d")).unwrap();
    symlink("f", m.p("l")).unwrap();

    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(m.p("d"), fs::Permissions::from_mode(0o711)).unwrap();
    std::os::unix::fs::chown(m.p("f"), Some(1234), Some(5678)).unwrap();
    std::os::unix::fs::chown(m.p("d"), Some(42), Some(43)).unwrap();
    std::os::unix::fs::lchown(m.p("l"), Some(7), Some(8)).unwrap();
    set_times(
        &m.p("f"),
        (1_400_000_000, 500_000_000),
        (1_500_000_000, 123_456_789),
        true,
    );
    set_times(
        &m.p("d"),
        (1_300_000_000, 0),
        (1_300_000_001, 999_999_999),
        true,
    );

    let expected = [
        (
            m.p("f"),
            (
                libc::S_IFREG | 0o640,
                1234,
                5678,
                (1_500_000_000, 123_456_789),
                (1_400_000_000, 500_000_000),
            ),
        ),
        (
            m.p("d"),
            (
                libc::S_IFDIR | 0o711,
                42,
                43,
                (1_300_000_001, 999_999_999),
                (1_300_000_000, 0),
            ),
        ),
    ];
    let check_all = |when: &str| {
        for (p, (mode, uid, gid, mtime, atime)) in &expected {
            let got = attrs(p);
            assert_eq!(got.0, *mode, "{when}: mode of {}", p.display());
            assert_eq!(
                (got.1, got.2),
                (*uid, *gid),
                "{when}: owner of {}",
                p.display()
            );
            assert_eq!(got.3, *mtime, "{when}: mtime of {}", p.display());
            assert_eq!(got.4, *atime, "{when}: atime of {}", p.display());
        }
        let l = attrs(&m.p("l"));
        assert_eq!((l.1, l.2), (7, 8), "{when}: symlink owner (lchown)");
    };
    check_all("before remount");
    m.remount();
    check_all("after remount");
    assert_eq!(fs::read(m.p("f")).unwrap(), b"data", "content");

    // chmod does not touch the content; chmod 000 as root still readable.
    fs::set_permissions(m.p("f"), fs::Permissions::from_mode(0o000)).unwrap();
    assert_eq!(fs::metadata(m.p("f")).unwrap().mode() & 0o7777, 0);
    assert_eq!(fs::read(m.p("f")).unwrap(), b"data");
}

#[test]
fn writes_update_mtime_and_ctime() {
    let m = Mounted::new();
    let p = m.p("f");
    fs::write(&p, b"x").unwrap();
    set_times(&p, (1_000_000, 0), (1_000_000, 0), true);
    let before = fs::metadata(&p).unwrap();
    assert_eq!(before.mtime(), 1_000_000);
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.write_all(b"y").unwrap();
    drop(f);
    let after = fs::metadata(&p).unwrap();
    assert!(
        after.mtime() >= start - 1,
        "mtime after write: {} (test started {start})",
        after.mtime()
    );
    assert!(
        after.ctime() >= start - 1,
        "ctime after write: {}",
        after.ctime()
    );

    // Creating an entry updates the parent folder's mtime.
    set_times(&m.p(""), (1_000_000, 0), (1_000_000, 0), true);
    fs::write(m.p("g"), b"").unwrap();
    assert!(
        fs::metadata(&m.mnt).unwrap().mtime() >= start - 1,
        "folder mtime after create"
    );

    // Inode numbers: stable per file, distinct between files.
    let a = fs::metadata(&p).unwrap().ino();
    assert_eq!(a, fs::metadata(&p).unwrap().ino());
    assert_ne!(a, fs::metadata(m.p("g")).unwrap().ino());
}

fn xattr_set(p: &Path, name: &str, value: &[u8], flags: libc::c_int) -> std::io::Result<()> {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid path, name and value buffer.
    check(unsafe {
        libc::setxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
}

fn xattr_get(p: &Path, name: &str) -> std::io::Result<Vec<u8>> {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: size query with a null buffer.
    let size = unsafe { libc::getxattr(cpath(p).as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    if size < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut buf = vec![0u8; size as usize + 16];
    // SAFETY: buffer of the given length.
    let got = unsafe {
        libc::getxattr(
            cpath(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    assert_eq!(got, size, "getxattr size query and read disagree");
    buf.truncate(got as usize);
    Ok(buf)
}

fn xattr_list(p: &Path) -> BTreeSet<String> {
    let mut buf = vec![0u8; 64 * KIB];
    // SAFETY: buffer of the given length.
    let n = unsafe { libc::listxattr(cpath(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    // SAFETY: size query.
    let size = unsafe { libc::listxattr(cpath(p).as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(size, n, "listxattr size query and list disagree");
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn xattr_remove(p: &Path, name: &str) -> std::io::Result<()> {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid path and name.
    check(unsafe { libc::removexattr(cpath(p).as_ptr(), n.as_ptr()) })
}

#[test]
fn user_xattrs() {
    let m = Mounted::new();
    let f = m.p("f");
    fs::write(&f, b"x").unwrap();
    fs::create_dir(m.p("d")).unwrap();

    xattr_set(&f, "user.color", b"blue", 0).unwrap();
    xattr_set(&f, "user.empty", b"", 0).unwrap();
    let binary: Vec<u8> = (0..=255u8).chain(0..=255u8).collect();
    xattr_set(&f, "user.binary", &binary, 0).unwrap();
    xattr_set(&m.p("d"), "user.on_dir", b"yes", 0).unwrap();
    assert_eq!(xattr_get(&f, "user.color").unwrap(), b"blue");
    assert_eq!(xattr_get(&f, "user.empty").unwrap(), b"");
    assert_eq!(xattr_get(&f, "user.binary").unwrap(), binary);
    assert_eq!(xattr_get(&m.p("d"), "user.on_dir").unwrap(), b"yes");
    let listed = xattr_list(&f);
    for n in ["user.color", "user.empty", "user.binary"] {
        assert!(listed.contains(n), "listxattr lacks {n}: {listed:?}");
    }

    assert_eq!(errno(xattr_get(&f, "user.missing")), libc::ENODATA);
    assert_eq!(
        errno(xattr_set(&f, "user.color", b"red", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(xattr_set(&f, "user.new", b"v", libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    xattr_set(&f, "user.color", b"green", libc::XATTR_REPLACE).unwrap();
    assert_eq!(xattr_get(&f, "user.color").unwrap(), b"green");

    xattr_remove(&f, "user.empty").unwrap();
    assert_eq!(errno(xattr_get(&f, "user.empty")), libc::ENODATA);
    assert_eq!(errno(xattr_remove(&f, "user.empty")), libc::ENODATA);
    assert!(!xattr_list(&f).contains("user.empty"));

    // xattrs do not change the content and survive a rename and a remount.
    fs::rename(&f, m.p("g")).unwrap();
    m.remount();
    let g = m.p("g");
    assert_eq!(fs::read(&g).unwrap(), b"x");
    assert_eq!(xattr_get(&g, "user.color").unwrap(), b"green");
    assert_eq!(xattr_get(&g, "user.binary").unwrap(), binary);
    assert_eq!(xattr_get(&m.p("d"), "user.on_dir").unwrap(), b"yes");
}

#[test]
fn statfs_reports_sane_values() {
    let m = Mounted::new();
    // SAFETY: zeroed plain-data struct filled by the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    check(unsafe { libc::statvfs(cpath(&m.mnt).as_ptr(), &mut s) }).unwrap();
    assert!(s.f_bsize > 0, "f_bsize {}", s.f_bsize);
    assert!(s.f_namemax >= 255, "f_namemax {}", s.f_namemax);
    assert!(s.f_blocks > 0, "f_blocks {}", s.f_blocks);
    assert!(
        s.f_bavail <= s.f_blocks && s.f_bfree <= s.f_blocks,
        "free > total: {} {} {}",
        s.f_bavail,
        s.f_bfree,
        s.f_blocks
    );
    // df works on it.
    let out = crate::harness::run_cmd(
        std::process::Command::new("df").arg(&m.mnt),
        Duration::from_secs(30),
    );
    assert!(out.ok(), "{out}");
}

#[test]
fn mmap_reads_and_writes() {
    let m = Mounted::new();
    let p = m.p("mapped");
    let orig = pattern(5, 3 * 4096 + 100);
    fs::write(&p, &orig).unwrap();

    let f = File::open(&p).unwrap();
    // SAFETY: nobody truncates the file while the map is alive.
    let map = unsafe { memmap2::Mmap::map(&f) }.unwrap();
    assert_eq!(&map[..], &orig[..]);
    drop(map);
    drop(f);

    // MAP_SHARED write + msync.
    let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    // SAFETY: as above.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.unwrap();
    let mut expected = orig.clone();
    for off in [0usize, 4095, 4096, 9000, orig.len() - 1] {
        map[off] = 0xEE;
        expected[off] = 0xEE;
    }
    map.flush().unwrap();
    drop(map);
    drop(f);
    assert_eq!(fs::read(&p).unwrap(), expected, "after msync/munmap/close");

    // A new file grown with ftruncate and written only through the map,
    // unmapped without msync: visible after close.
    let q = m.p("mapped_new");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&q)
        .unwrap();
    f.set_len(2 * MIB as u64).unwrap();
    // SAFETY: as above.
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f) }.unwrap();
    let content = pattern(6, 2 * MIB);
    map.copy_from_slice(&content);
    drop(map);
    drop(f);
    assert_eq!(
        fs::read(&q).unwrap(),
        content,
        "mmap-only writes after munmap+close"
    );

    m.remount();
    assert_eq!(
        fs::read(&p).unwrap(),
        expected,
        "msync'd mmap writes after remount"
    );
    assert_eq!(
        fs::read(&q).unwrap(),
        content,
        "mmap-only writes after remount"
    );
}

#[test]
fn file_larger_than_4gib() {
    let m = Mounted::new();
    let p = m.p("huge.bin");
    let five = 5u64 << 30;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all_at(b"five-gib", five).unwrap();
    let across = pattern(7, 8192);
    f.write_all_at(&across, (4u64 << 30) - 4096).unwrap();
    assert_eq!(f.metadata().unwrap().len(), five + 8);
    assert_eq!(read_at(&f, five, 100), b"five-gib");
    assert_eq!(
        read_at(&f, (4u64 << 30) - 4096, 8192),
        across,
        "write across the 4 GiB boundary"
    );
    drop(f);

    let check_all = |when: &str| {
        let f = File::open(&p).unwrap();
        assert_eq!(f.metadata().unwrap().len(), five + 8, "{when}: size");
        assert_eq!(
            read_at(&f, five - 4, 100),
            b"\0\0\0\0five-gib",
            "{when}: tail"
        );
        assert_eq!(
            read_at(&f, (4u64 << 30) - 4096, 8192),
            across,
            "{when}: middle"
        );
        assert_eq!(
            read_at(&f, 0, 4096),
            vec![0u8; 4096],
            "{when}: hole at start"
        );
        assert_eq!(
            read_at(&f, 3u64 << 30, 4096),
            vec![0u8; 4096],
            "{when}: hole"
        );
    };
    check_all("after close");
    m.remount();
    check_all("after remount");
}

#[test]
fn long_and_non_ascii_names() {
    let m = Mounted::new();
    let n255 = format!("{}.txt", "x".repeat(251));
    assert_eq!(n255.len(), 255);
    fs::write(m.p(&n255), b"long").unwrap();
    assert_eq!(fs::read(m.p(&n255)).unwrap(), b"long");
    let n256 = "y".repeat(256);
    assert_eq!(
        errno(fs::write(m.p(&n256), b"too long")),
        libc::ENAMETOOLONG
    );
    let dir255 = "d".repeat(255);
    fs::create_dir(m.p(&dir255)).unwrap();
    fs::write(m.p(&format!("{dir255}/{n255}")), b"nested long").unwrap();

    let multibyte = "日".repeat(85); // 255 bytes of UTF-8
    assert_eq!(multibyte.len(), 255);
    let names = [
        multibyte.as_str(),
        "café ☕.txt",
        "Привет мир",
        "emoji 🎉🚀.md",
        "e\u{301}", // NFD: distinct from NFC below
        "\u{e9}",
        "spaces  and\ttab",
        "quote\"back\\slash",
        "new\nline",
    ];
    for (i, n) in names.iter().enumerate() {
        fs::write(m.p(n), format!("content {i}")).unwrap_or_else(|e| panic!("create {n:?}: {e}"));
    }
    let check_all = |when: &str| {
        let listed: BTreeSet<Vec<u8>> = fs::read_dir(&m.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().as_bytes().to_vec())
            .collect();
        for (i, n) in names.iter().enumerate() {
            assert!(listed.contains(n.as_bytes()), "{when}: readdir lacks {n:?}");
            assert_eq!(
                fs::read_to_string(m.p(n)).unwrap(),
                format!("content {i}"),
                "{when}: content of {n:?}"
            );
        }
        assert!(
            listed.contains(n255.as_bytes()),
            "{when}: readdir lacks the 255-byte name"
        );
        assert_eq!(
            fs::read(m.p(&format!("{dir255}/{n255}"))).unwrap(),
            b"nested long",
            "{when}"
        );
        assert_eq!(listed.len(), names.len() + 2, "{when}: entries {listed:?}");
    };
    check_all("mounted");
    fs::rename(m.p("café ☕.txt"), m.p("thé 🍵.txt")).unwrap();
    fs::rename(m.p("thé 🍵.txt"), m.p("café ☕.txt")).unwrap();
    m.remount();
    check_all("after remount");
}

#[test]
fn folder_with_100k_entries() {
    let m = Mounted::new();
    const N: usize = 100_000;
    let d = m.p("many");
    fs::create_dir(&d).unwrap();
    let t = Instant::now();
    for i in 0..N {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(d.join(format!("f{i:06}")))
            .unwrap_or_else(|e| panic!("create #{i}: {e}"));
    }
    let created = t.elapsed();
    let t = Instant::now();
    let check_listing = |n: usize, absent: Option<usize>| {
        let mut names: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let expected: Vec<String> = (0..N)
            .filter(|i| Some(*i) != absent)
            .map(|i| format!("f{i:06}"))
            .collect();
        assert_eq!(names.len(), n, "number of entries listed");
        assert!(names == expected, "listing differs from the created names");
    };
    check_listing(N, None);
    let listed = t.elapsed();
    assert_eq!(fs::metadata(d.join("f050000")).unwrap().len(), 0);
    assert_eq!(errno(fs::metadata(d.join("f100000"))), libc::ENOENT);
    fs::remove_file(d.join("f077777")).unwrap();
    eprintln!("100k entries: created in {created:?}, listed in {listed:?}");
    // Unmount and mount again at once, as a script would.
    let t = Instant::now();
    let pid = m.daemon_pid();
    m.latus(&["unmount", m.mnt.to_str().unwrap()]).expect_ok();
    let live = live_threads(pid);
    let out = m.try_mount();
    assert!(
        out.ok(),
        "mount right after `latus unmount` returned failed; the old daemon {pid} still had {live} live thread(s) when unmount returned: {out}"
    );
    eprintln!("100k entries: remounted in {:?}", t.elapsed());
    let t = Instant::now();
    check_listing(N - 1, Some(77_777));
    eprintln!("100k entries: listed after remount in {:?}", t.elapsed());
}

#[test]
fn concurrent_readers_and_writers() {
    let m = Arc::new(Mounted::new());
    let shared = pattern(100, 4 * MIB);
    fs::write(m.p("shared.bin"), &shared).unwrap();
    let shared = Arc::new(shared);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut handles = Vec::new();

    // Writers: each its own files, verified right after close.
    for t in 0..6u64 {
        let m = Arc::clone(&m);
        handles.push(thread::spawn(move || {
            fs::create_dir(m.p(&format!("w{t}"))).unwrap();
            for j in 0..20u64 {
                let seed = t * 1000 + j;
                let data = pattern(seed, 16 * KIB + (seed as usize * 7919) % (200 * KIB));
                let p = m.p(&format!("w{t}/f{j}"));
                fs::write(&p, &data).unwrap();
                assert_eq!(fs::read(&p).unwrap(), data, "writer {t} file {j}");
            }
        }));
    }
    // Readers of one shared file, at random-ish offsets.
    for t in 0..4u64 {
        let m = Arc::clone(&m);
        let shared = Arc::clone(&shared);
        handles.push(thread::spawn(move || {
            let f = File::open(m.p("shared.bin")).unwrap();
            for k in 0..200u64 {
                let off = ((t * 7 + k) * 104_729) as usize % (shared.len() - 70_000);
                let len = 1 + (k as usize * 997) % 65_536;
                assert_eq!(
                    read_at(&f, off as u64, len),
                    &shared[off..off + len],
                    "reader {t} at {off}"
                );
                assert!(Instant::now() < deadline, "readers too slow");
            }
        }));
    }
    // Appenders to one log: every record lands whole.
    for t in 0..2u8 {
        let m = Arc::clone(&m);
        handles.push(thread::spawn(move || {
            let mut f = OpenOptions::new()
                .append(true)
                .create(true)
                .open(m.p("log"))
                .unwrap();
            for k in 0..200u32 {
                let rec = format!("{t}:{k:05}:{}\n", "z".repeat(50));
                f.write_all(rec.as_bytes()).unwrap();
            }
        }));
    }
    for h in handles {
        h.join().expect("worker thread panicked");
    }
    let log = fs::read_to_string(m.p("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 400, "appended records");
    for l in &lines {
        assert_eq!(l.len(), 58, "torn record {l:?}");
    }
    for t in 0..6u64 {
        assert_eq!(fs::read_dir(m.p(&format!("w{t}"))).unwrap().count(), 20);
    }
}

#[test]
fn editor_save_patterns() {
    let m = Mounted::new();
    let doc = m.p("doc.txt");
    fs::write(&doc, b"version 1").unwrap();
    let reader = File::open(&doc).unwrap();

    // Write a temp file, fsync it, rename it over the original.
    let tmp = m.p(".doc.txt.swp");
    let mut f = File::create(&tmp).unwrap();
    f.write_all(b"version 2").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::rename(&tmp, &doc).unwrap();
    assert_eq!(fs::read(&doc).unwrap(), b"version 2");
    assert_eq!(
        read_at(&reader, 0, 100),
        b"version 1",
        "old descriptor keeps the replaced version"
    );
    drop(reader);

    // vim's writebackup: rename original to a backup, write anew, drop the backup.
    fs::rename(&doc, m.p("doc.txt~")).unwrap();
    let mut f = File::create(&doc).unwrap();
    f.write_all(b"version 3").unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::set_permissions(&doc, fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(m.p("doc.txt~")).unwrap();

    // GNU-style temp in the same folder + rename.
    fs::write(m.p("doc.txt.tmp"), b"version 4").unwrap();
    fs::rename(m.p("doc.txt.tmp"), &doc).unwrap();
    assert_eq!(fs::read(&doc).unwrap(), b"version 4");

    let names: Vec<_> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("doc.txt")]);
    m.remount();
    assert_eq!(fs::read(&doc).unwrap(), b"version 4");
}

#[test]
fn o_excl_and_o_creat_modes() {
    let m = Mounted::new();
    let p = m.p("x");
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)
        .unwrap();
    drop(f);
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(m.p("exe"))
        .unwrap();
    drop(f);
    assert_eq!(fs::metadata(m.p("exe")).unwrap().mode() & 0o777, 0o755);
    // O_CREAT on an existing file opens it unchanged.
    fs::write(&p, b"kept").unwrap();
    drop(
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .unwrap(),
    );
    assert_eq!(fs::read(&p).unwrap(), b"kept");
    assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
    // Opening a folder for writing.
    fs::create_dir(m.p("d")).unwrap();
    assert_eq!(
        errno(OpenOptions::new().write(true).open(m.p("d"))),
        libc::EISDIR
    );
}

/// The daemon holds a descriptor per open file, not per file ever written.
#[test]
fn closed_files_hold_no_descriptors_in_the_daemon() {
    let m = Mounted::new();
    let pid = m.daemon_pid();
    let count = || fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    let before = count();
    for i in 0..1500 {
        fs::write(m.p(&format!("f{i}")), b"x").unwrap();
        if i % 500 == 0 {
            let _ = fs::read(m.p(&format!("f{i}"))).unwrap();
        }
    }
    let after = count();
    assert!(
        after < before + 200,
        "daemon descriptors grew from {before} to {after} for 1500 closed files"
    );
}

/// The folder is mounted nosuid and nodev (other nodes write what is in
/// it), and noexec when asked.
#[test]
fn the_folder_is_mounted_nosuid_nodev() {
    let m = Mounted::new();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    let line = mounts
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(m.mnt.to_str().unwrap()))
        .expect("the mount is listed");
    let opts: Vec<&str> = line.split(' ').nth(3).unwrap().split(',').collect();
    assert!(
        opts.contains(&"nosuid") && opts.contains(&"nodev"),
        "{line}"
    );
}
