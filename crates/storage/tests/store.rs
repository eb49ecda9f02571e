//! The same checks on both engines behind [`Store`]: SQLite in a temporary directory and a real
//! PostgreSQL (see `pg/`). Whatever the Batch API relies on holds on either.

#![allow(clippy::unwrap_used)]

mod pg;

use std::io::Read;
use std::time::Duration;

/// Files up to 4 MiB: more than one PostgreSQL content chunk (1 MiB).
const MAX: usize = 4 << 20;

use laneway_storage::{BatchStatus, Error, Item, ItemResult, NewBatch, Postgres, Storage, Store};

fn sqlite() -> (Storage, PathGuard) {
    let dir = std::env::temp_dir().join(format!(
        "laneway-store-test-{}-{}",
        std::process::id(),
        laneway_storage::new_id("")
    ));
    (Storage::open(&dir, MAX).unwrap(), PathGuard(dir))
}

struct PathGuard(std::path::PathBuf);
impl Drop for PathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn postgres(server: &pg::Pg, spool: &PathGuard) -> Postgres {
    Postgres::open(&server.url, MAX, spool.0.join("spool")).unwrap()
}

fn upload(s: &dyn Store, text: &str) -> laneway_storage::FileObject {
    let mut up = s.begin_upload().unwrap();
    up.write(text.as_bytes()).unwrap();
    s.keep_upload(up, "team", "in.jsonl", "batch").unwrap()
}

fn items(n: u64) -> Vec<Item> {
    (1..=n)
        .map(|i| Item {
            line: i,
            custom_id: format!("c{i}"),
            body: format!("{{\"model\":\"m\",\"n\":{i}}}"),
        })
        .collect()
}

fn result(it: &Item) -> ItemResult {
    ItemResult {
        line: it.line,
        custom_id: it.custom_id.clone(),
        ok: it.line % 2 == 1,
        output: format!("{{\"custom_id\":\"{}\"}}", it.custom_id),
    }
}

/// Files: all or nothing, owned, read back whole, deleted.
fn files(s: &dyn Store) {
    // About 2.9 MB: three content chunks in PostgreSQL.
    let text: String = (0..300_000).map(|i| format!("line {i}\n")).collect();
    let f = upload(s, &text);
    assert_eq!(f.bytes, text.len() as u64);
    let mut back = String::new();
    s.content(&f).unwrap().read_to_string(&mut back).unwrap();
    assert_eq!(back, text);
    assert_eq!(s.file(&f.id, Some("team")).unwrap(), f);
    assert!(s.file(&f.id, Some("other")).is_err(), "another key's file");
    assert_eq!(
        s.list_files(Some("team"), Some("batch")).unwrap(),
        vec![f.clone()]
    );
    let mut big = s.begin_upload().unwrap();
    assert!(
        big.write(&vec![b'x'; MAX + 1]).is_err(),
        "over max_file_size"
    );
    drop(big);
    s.delete_file(&f.id, Some("team")).unwrap();
    assert!(s.file(&f.id, None).is_err());
    assert!(
        s.list_files(None, None).unwrap().is_empty(),
        "nothing half-kept"
    );
}

/// Items: leased to one holder at a time, taken over when the lease ran out, recorded once,
/// and the batch ended once.
fn batches(s: &dyn Store) {
    let f = upload(s, "{}\n");
    let b = s
        .create_batch(&NewBatch {
            owner: "team",
            endpoint: "/v1/chat/completions",
            input_file_id: &f.id,
            window_secs: 3600,
            window: "1h",
            metadata: None,
        })
        .unwrap();
    assert_eq!(b.status, BatchStatus::Validating);
    let all = items(10);
    assert!(s.start(&b.id, &mut all.clone().into_iter()).unwrap());
    assert!(
        !s.start(&b.id, &mut all.clone().into_iter()).unwrap(),
        "a second start (another replica) changes nothing"
    );
    assert_eq!(s.batch(&b.id, None).unwrap().counts.total, 10);
    let long = Duration::from_secs(60);
    let a = s.claim(&b.id, "a", 4, long).unwrap();
    let bb = s.claim(&b.id, "b", 4, long).unwrap();
    assert_eq!(a, all[..4].to_vec(), "in input order");
    assert_eq!(bb, all[4..8].to_vec(), "never an item another holds");
    // c's claim lapses at once: d takes them over.
    let c = s.claim(&b.id, "c", 10, Duration::ZERO).unwrap();
    assert_eq!(c, all[8..].to_vec());
    assert_eq!(s.claim(&b.id, "d", 10, long).unwrap(), all[8..].to_vec());
    assert!(s.claim(&b.id, "e", 10, long).unwrap().is_empty());
    s.renew("a", long).unwrap();
    s.release("b").unwrap();
    assert_eq!(s.claim(&b.id, "e", 10, long).unwrap(), all[4..8].to_vec());
    for it in &all {
        assert!(s.record(&b.id, &result(it)).unwrap());
        assert!(!s.record(&b.id, &result(it)).unwrap(), "recorded once");
    }
    assert_eq!(s.remaining(&b.id).unwrap(), 0);
    let counts = s.batch(&b.id, None).unwrap().counts;
    assert_eq!((counts.completed, counts.failed), (5, 5));
    assert!(s
        .transition(&b.id, &[BatchStatus::InProgress], BatchStatus::Finalizing)
        .unwrap());
    let done = s.finalize(&b.id, BatchStatus::Completed).unwrap();
    let again = s.finalize(&b.id, BatchStatus::Completed).unwrap();
    assert_eq!(done.status, BatchStatus::Completed);
    assert_eq!(again.output_file_id, done.output_file_id, "ended once");
    let out = s
        .file(done.output_file_id.as_deref().unwrap(), Some("team"))
        .unwrap();
    let mut text = String::new();
    s.content(&out).unwrap().read_to_string(&mut text).unwrap();
    let ids: Vec<&str> = text.lines().collect();
    assert_eq!(ids.len(), 5);
    assert!(
        ids[0].contains("\"c1\"") && ids[4].contains("\"c9\""),
        "{text}"
    );
    assert_eq!(
        s.list_files(Some("team"), Some("batch_output"))
            .unwrap()
            .len(),
        2
    );
    assert!(
        matches!(s.cancel(&b.id, Some("team")), Err(Error::Invalid(_))),
        "an ended batch cannot be cancelled"
    );
    cancelled(s, &f.id);
}

fn cancelled(s: &dyn Store, input: &str) {
    let b = s
        .create_batch(&NewBatch {
            owner: "team",
            endpoint: "/v1/chat/completions",
            input_file_id: input,
            window_secs: 3600,
            window: "1h",
            metadata: None,
        })
        .unwrap();
    assert!(
        s.cancel(&b.id, Some("other")).is_err(),
        "another key's batch is not found"
    );
    assert_eq!(
        s.cancel(&b.id, Some("team")).unwrap().status,
        BatchStatus::Cancelling
    );
}

fn responses(s: &dyn Store) {
    s.record_response("resp_1", "lane-a", "team").unwrap();
    assert_eq!(
        s.response_lane("resp_1").unwrap(),
        Some(("lane-a".into(), "team".into()))
    );
    s.forget_response("resp_1").unwrap();
    assert_eq!(s.response_lane("resp_1").unwrap(), None);
}

#[test]
fn sqlite_keeps_the_contract() {
    let (s, _dir) = sqlite();
    files(&s);
    batches(&s);
    responses(&s);
    assert!(s.describe().contains("SQLite"));
}

#[test]
fn postgres_keeps_the_contract() {
    let server = pg::Pg::start();
    let spool = sqlite().1;
    let s = postgres(&server, &spool);
    files(&s);
    batches(&s);
    responses(&s);
    assert!(s.describe().contains("schema 1"), "{}", s.describe());
    assert!(!s.describe().contains("password"));
}

#[test]
fn postgres_migrations_apply_once_and_refuse_a_newer_schema() {
    let server = pg::Pg::start();
    assert_eq!(Postgres::probe(&server.url).unwrap(), None, "no schema yet");
    let spool = sqlite().1;
    drop(postgres(&server, &spool));
    drop(postgres(&server, &spool));
    assert_eq!(server.sql("SELECT count(*) FROM laneway_schema"), "1");
    assert_eq!(Postgres::probe(&server.url).unwrap(), Some(1));
    server.sql("INSERT INTO laneway_schema VALUES (99, 0)");
    let refused = Postgres::open(&server.url, MAX, spool.0.join("spool"));
    let e = refused
        .err()
        .expect("a newer schema is refused")
        .to_string();
    assert!(e.contains("version 99") && e.contains("newer"), "{e}");
}

#[test]
fn postgres_down_is_unavailable_and_back_is_served() {
    let mut server = pg::Pg::start();
    let spool = sqlite().1;
    let s = postgres(&server, &spool);
    let f = upload(&s, "{}\n");
    server.kill();
    let e = s.file(&f.id, None).unwrap_err();
    assert!(matches!(e, laneway_storage::Error::Unavailable(_)), "{e}");
    // Failing fast while it is down: no call waits for a connection.
    let e = s.list_files(None, None).unwrap_err();
    assert!(matches!(e, laneway_storage::Error::Unavailable(_)), "{e}");
    server.resume();
    // Within the back-off the store still says unavailable; then it connects again.
    let mut back = None;
    for _ in 0..300 {
        match s.file(&f.id, None) {
            Ok(f) => {
                back = Some(f);
                break;
            }
            Err(laneway_storage::Error::Unavailable(_)) => {
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("{e}"),
        }
    }
    let back = back.expect("back within 30s");
    assert_eq!(back, f, "nothing lost");
}
