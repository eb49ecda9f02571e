//! A real PostgreSQL server of a test's own (Debian's `postgresql` package): a fresh cluster in
//! a temporary directory, reachable only through a Unix socket in that directory (no TCP port),
//! run as `nobody` when the tests run as root (PostgreSQL refuses root). Killed and removed on
//! drop. Shared by the storage tests and the gateway's integration tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub struct Pg {
    child: Option<Child>,
    bin: PathBuf,
    dir: PathBuf,
    /// `postgres://…` naming this server's `postgres` database through its socket.
    pub url: String,
}

/// The newest installed server's programs.
fn bin() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL is installed (Debian package postgresql; .ci/run installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL with initdb")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0\n"))
        .unwrap_or(false)
}

/// `program args…`, as `nobody` when this process is root.
fn command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]);
        c.arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Pg {
    pub fn start() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "laneway-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        if is_root() {
            std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        }
        let bin = bin();
        let out = command(&bin.join("initdb"))
            .args(["-D"])
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "laneway", "-E", "UTF8", "--no-sync"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = format!(
            "postgres://laneway@localhost/postgres?host={}",
            dir.display()
        );
        let mut pg = Self {
            child: None,
            bin,
            dir,
            url,
        };
        pg.resume();
        pg
    }

    /// Starts the server on the cluster (again), and waits until it takes connections.
    pub fn resume(&mut self) {
        let child = command(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .args([
                "-c",
                "listen_addresses=",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=40",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres starts");
        self.child = Some(child);
        // Up to a minute, in steps of 50 ms.
        for _ in 0..1200 {
            let ready = Command::new(self.bin.join("pg_isready"))
                .arg("-h")
                .arg(&self.dir)
                .args(["-U", "laneway", "-d", "postgres", "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("PostgreSQL never took connections");
    }

    /// Kills the server at once (SIGKILL, its backends first): connections break, nothing
    /// is answered until [`Pg::resume`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &c.id().to_string()])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        // A killed server leaves its lock files; no process of it is left to need them.
        let _ = std::fs::remove_file(self.dir.join(".s.PGSQL.5432.lock"));
        let _ = std::fs::remove_file(self.dir.join("data/postmaster.pid"));
    }

    /// Runs one SQL statement with `psql`, returning what it printed (unaligned, tuples only).
    pub fn sql(&self, statement: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.dir)
            .args(["-U", "laneway", "-d", "postgres", "-At", "-c", statement])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
