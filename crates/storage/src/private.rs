//! The storage tree is private to the gateway's user: prompts and answers live in it. Its
//! directories are 0700 and its files 0600 whatever the umask, a storage path that is a
//! symbolic link or that others may write to is refused (another local user could swap what
//! it points at), and the demo's directory is made fresh under a random name, as `mkdtemp`
//! does, instead of at a name another user could predict and plant first.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates `path` (and missing parents) as a private directory, or checks and tightens an
/// existing one: refused when it is a symbolic link, not a directory, or writable by group or
/// others.
pub fn ensure_dir(path: &Path) -> io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => check_existing(path, &meta)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let mut b = std::fs::DirBuilder::new();
            b.recursive(true);
            #[cfg(unix)]
            b.mode(0o700);
            b.create(path)?;
        }
        Err(e) => return Err(e),
    }
    tighten(path, 0o700)
}

fn check_existing(path: &Path, meta: &std::fs::Metadata) -> io::Result<()> {
    if meta.file_type().is_symlink() {
        return Err(refused(
            path,
            "is a symbolic link; give the real directory's path",
        ));
    }
    if !meta.is_dir() {
        return Err(refused(path, "is not a directory"));
    }
    #[cfg(unix)]
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(refused(
            path,
            "may be written by other users; make it private (chmod 700) or choose another path",
        ));
    }
    Ok(())
}

fn refused(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!("storage path {} {why}", path.display()),
    )
}

/// Sets `mode` on `path` when it is looser (a tree made by an older version, or a file SQLite
/// created under a permissive umask).
fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        let meta = std::fs::metadata(path)?;
        if meta.permissions().mode() & 0o777 != mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

/// Creates a new file readable and writable by its owner only; never follows or reuses an
/// existing name.
pub fn create_file(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    o.mode(0o600).custom_flags(libc_nofollow());
    o.open(path)
}

/// `O_NOFOLLOW` on Linux and the BSDs; `create_new` already refuses an existing name,
/// symbolic links included, so this is a second guard only.
#[cfg(unix)]
const fn libc_nofollow() -> i32 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        0o400000
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        0x0100
    }
}

/// Makes sure the database file and its WAL companions exist as 0600 before SQLite opens them:
/// SQLite creates the WAL and shared-memory files with the database file's permissions.
pub fn prepare_db_file(path: &Path) -> io::Result<()> {
    match create_file(path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path)?.file_type().is_symlink() {
                return Err(refused(path, "is a symbolic link"));
            }
        }
        Err(e) => return Err(e),
    }
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = PathBuf::from(p);
        if p.exists() {
            tighten(&p, 0o600)?;
        }
    }
    Ok(())
}

/// A new private directory under the system's temporary directory, named `PREFIX-` and 16
/// random characters from the OS's random source, created atomically (it fails rather than
/// reuse a name that exists, a planted symbolic link included).
pub fn fresh_temp_dir(prefix: &str) -> io::Result<PathBuf> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let path = base.join(format!("{prefix}-{}", crate::new_id("")[..16].to_owned()));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        b.mode(0o700);
        match b.create(&path) {
            Ok(()) => {
                tighten(&path, 0o700)?;
                return Ok(path);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("could not make a fresh directory in {}", base.display()),
    ))
}
