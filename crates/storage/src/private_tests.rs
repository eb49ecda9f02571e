//! The storage tree is private whatever the umask; planted links and shared directories are
//! refused.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::{private, Storage};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

struct Dir(std::path::PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn directories_are_0700_and_files_0600_under_a_permissive_umask() {
    let d = Dir(private::fresh_temp_dir("laneway-private-test").unwrap());
    // What the process's umask gives a file made the ordinary way: under 0022 it is 0644, so
    // the modes below are Laneway's doing, not the umask's.
    let plain = d.0.join("plain");
    std::fs::write(&plain, "x").unwrap();
    let umask_gives = mode(&plain);
    let root = d.0.join("store/nested");
    let s = Storage::open(&root, 1 << 20).unwrap();
    let mut up = s.begin_upload().unwrap();
    up.write(b"{}\n").unwrap();
    let f = up.finish(&s, "k", "in.jsonl", "batch").unwrap();
    // A write makes SQLite create its WAL and shared-memory files.
    assert!(s.file(&f.id, Some("k")).is_ok());
    assert_eq!(mode(&root), 0o700);
    assert_eq!(mode(&root.join("files")), 0o700);
    assert_eq!(
        mode(&s.content_path(&f)),
        0o600,
        "umask gave {umask_gives:o}"
    );
    for name in ["laneway.db", "laneway.db-wal", "laneway.db-shm"] {
        let p = root.join(name);
        if name == "laneway.db" || p.exists() {
            assert_eq!(mode(&p), 0o600, "{name}; umask gave {umask_gives:o}");
        }
    }
    assert!(
        root.join("laneway.db-wal").exists(),
        "WAL mode keeps a -wal file"
    );
}

#[test]
fn a_symlink_or_a_directory_others_may_write_is_refused() {
    let d = Dir(private::fresh_temp_dir("laneway-private-test").unwrap());
    let real = d.0.join("real");
    std::fs::create_dir(&real).unwrap();
    let link = d.0.join("planted");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let err = Storage::open(&link, 1 << 20)
        .err()
        .expect("a symlink is refused");
    assert!(err.to_string().contains("symbolic link"), "{err}");
    assert_eq!(
        std::fs::read_dir(&real).unwrap().count(),
        0,
        "nothing written through it"
    );

    let shared = d.0.join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = Storage::open(&shared, 1 << 20)
        .err()
        .expect("a shared dir is refused");
    assert!(err.to_string().contains("written by other users"), "{err}");

    // A planted database link inside a private directory is refused too.
    let own = d.0.join("own");
    private::ensure_dir(&own).unwrap();
    std::os::unix::fs::symlink(real.join("stolen.db"), own.join("laneway.db")).unwrap();
    assert!(Storage::open(&own, 1 << 20).is_err());
    assert!(!real.join("stolen.db").exists());
}

#[test]
fn fresh_directories_are_new_private_and_unpredictable() {
    let a = Dir(private::fresh_temp_dir("laneway-private-test").unwrap());
    let b = Dir(private::fresh_temp_dir("laneway-private-test").unwrap());
    assert_ne!(a.0, b.0);
    assert_eq!(mode(&a.0), 0o700);
    let name = a.0.file_name().unwrap().to_string_lossy().into_owned();
    let tail = name.strip_prefix("laneway-private-test-").unwrap();
    assert_eq!(tail.len(), 16);
    assert!(!tail.contains(&std::process::id().to_string()));
}
