use std::path::{Path, PathBuf};

use crate::store::Store;
use crate::{validate, BatchStatus, Error, ItemResult, Storage};

/// A directory of its own, removed when the test ends.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("laneway-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn upload(s: &Storage, owner: &str, text: &str) -> crate::FileObject {
    let mut up = s.begin_upload().unwrap();
    for chunk in text.as_bytes().chunks(7) {
        up.write(chunk).unwrap();
    }
    up.finish(s, owner, "in.jsonl", "batch").unwrap()
}

fn entries(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn an_upload_over_the_limit_leaves_nothing_behind() {
    let d = Dir::new("limit");
    let s = Storage::open(&d.0, 10).unwrap();
    let mut up = s.begin_upload().unwrap();
    up.write(b"0123456789").unwrap();
    assert!(matches!(up.write(b"x"), Err(Error::TooLarge(10))));
    drop(up);
    assert!(entries(&d.0).is_empty());
    assert!(s.list_files(None, None).unwrap().is_empty());
}

#[test]
fn files_are_seen_by_their_owner_and_the_admin_only() {
    let d = Dir::new("owners");
    let s = Storage::open(&d.0, 1 << 20).unwrap();
    let f = upload(&s, "alice", "hello\n");
    assert_eq!(f.bytes, 6);
    assert_eq!(s.file(&f.id, Some("alice")).unwrap(), f);
    assert!(matches!(
        s.file(&f.id, Some("bob")),
        Err(Error::NotFound(_))
    ));
    assert_eq!(s.list_files(None, Some("batch")).unwrap().len(), 1);
    assert!(s.list_files(Some("bob"), None).unwrap().is_empty());
    assert_eq!(
        std::fs::read_to_string(s.content_path(&f)).unwrap(),
        "hello\n"
    );
    assert!(matches!(
        s.delete_file(&f.id, Some("bob")),
        Err(Error::NotFound(_))
    ));
    s.delete_file(&f.id, Some("alice")).unwrap();
    assert!(entries(&d.0).is_empty());
}

#[test]
fn leftovers_of_a_killed_process_are_removed_at_open() {
    let d = Dir::new("orphans");
    let kept = {
        let s = Storage::open(&d.0, 1 << 20).unwrap();
        let kept = upload(&s, "k", "x\n");
        std::fs::write(d.0.join("files/file-half.part"), "partial").unwrap();
        std::fs::write(d.0.join("files/file-unrecorded"), "moved, never committed").unwrap();
        kept
    };
    let _s = Storage::open(&d.0, 1 << 20).unwrap();
    assert_eq!(entries(&d.0), [kept.id]);
}

fn result(line: u64, id: &str, ok: bool) -> ItemResult {
    ItemResult {
        line,
        custom_id: id.into(),
        ok,
        output: format!("{{\"custom_id\":\"{id}\"}}"),
    }
}

#[test]
fn each_item_is_recorded_once_and_written_in_input_order() {
    let d = Dir::new("record");
    let s = Storage::open(&d.0, 1 << 20).unwrap();
    let f = upload(&s, "k", "{}\n");
    let b = s
        .create_batch("k", "/v1/chat/completions", &f.id, 60, "1m", None)
        .unwrap();
    // Not running yet: nothing is recorded.
    assert!(!s.record(&b.id, &result(1, "a", true)).unwrap());
    assert!(s.start(&b.id, 3).unwrap());
    assert!(s.record(&b.id, &result(3, "c", true)).unwrap());
    assert!(s.record(&b.id, &result(1, "a", true)).unwrap());
    assert!(s.record(&b.id, &result(2, "b", false)).unwrap());
    // The same item again (run twice around a crash) is ignored.
    assert!(!s.record(&b.id, &result(1, "a", true)).unwrap());
    assert_eq!(s.recorded(&b.id).unwrap().len(), 3);
    let b = s.batch(&b.id, None).unwrap();
    assert_eq!(
        (b.counts.total, b.counts.completed, b.counts.failed),
        (3, 2, 1)
    );
    assert!(s
        .transition(&b.id, &[BatchStatus::InProgress], BatchStatus::Finalizing)
        .unwrap());
    let b = s.finalize(&b.id, BatchStatus::Completed).unwrap();
    assert_eq!(b.status, BatchStatus::Completed);
    let read = |id: &Option<String>| {
        let f = s.file(id.as_deref().unwrap(), Some("k")).unwrap();
        std::fs::read_to_string(s.content_path(&f)).unwrap()
    };
    assert_eq!(
        read(&b.output_file_id),
        "{\"custom_id\":\"a\"}\n{\"custom_id\":\"c\"}\n"
    );
    assert_eq!(read(&b.error_file_id), "{\"custom_id\":\"b\"}\n");
    // Ended: late results are dropped and it cannot be cancelled.
    assert!(!s.record(&b.id, &result(4, "d", true)).unwrap());
    assert!(matches!(s.cancel(&b.id, Some("k")), Err(Error::Invalid(_))));
    let json = b.to_json();
    assert_eq!(json["request_counts"]["total"], 3);
    assert!(json["completed_at"].is_i64() && json["finalizing_at"].is_i64());
}

#[test]
fn batches_list_newest_first_in_pages() {
    let d = Dir::new("pages");
    let s = Storage::open(&d.0, 1 << 20).unwrap();
    let f = upload(&s, "k", "{}\n");
    let ids: Vec<String> = (0..5)
        .map(|_| {
            s.create_batch("k", "/v1/embeddings", &f.id, 60, "1m", None)
                .unwrap()
                .id
        })
        .collect();
    let (page, more) = s.list_batches(Some("k"), None, 2).unwrap();
    assert!(more);
    assert_eq!(
        [page[0].id.as_str(), page[1].id.as_str()],
        [ids[4].as_str(), ids[3].as_str()]
    );
    let (page, more) = s.list_batches(Some("k"), Some(&ids[3]), 10).unwrap();
    assert!(!more);
    assert_eq!(page.len(), 3);
    assert!(s
        .list_batches(Some("other"), None, 10)
        .unwrap()
        .0
        .is_empty());
    assert_eq!(s.unfinished().unwrap().len(), 5);
}

#[test]
fn validation_names_the_line_of_every_problem() {
    let d = Dir::new("validate");
    std::fs::create_dir_all(&d.0).unwrap();
    let p = d.0.join("in.jsonl");
    let ok = r#"{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m-1","messages":[]}}"#;
    let lines = [
        ok,
        "not json",
        r#"{"method":"POST","url":"/v1/chat/completions","body":{"model":"m-1"}}"#,
        ok,
        "",
        r#"{"custom_id":"e","url":"/v1/embeddings","body":{"model":"m-1"}}"#,
        r#"{"custom_id":"f","url":"/v1/chat/completions","body":{"model":"other"}}"#,
        r#"{"custom_id":"g","url":"/v1/chat/completions","body":{"messages":[]}}"#,
        r#"{"custom_id":"h","method":"GET","url":"/v1/chat/completions","body":{"model":"m-1"}}"#,
        r#"{"custom_id":"i","url":"/v1/chat/completions","body":{"model":"m-1","stream":true}}"#,
        r#"{"custom_id":"j","url":"/v1/chat/completions","body":{"model":"secret"}}"#,
    ];
    std::fs::write(&p, lines.join("\n")).unwrap();
    let models = |m: &str| {
        if m.starts_with("m-") {
            Ok(())
        } else if m == "secret" {
            Err(("model_not_allowed", format!("the key may not use `{m}`")))
        } else {
            Err(("model_not_found", format!("no route serves `{m}`")))
        }
    };
    let problems = validate::check(&p, "/v1/chat/completions", models)
        .unwrap()
        .unwrap_err();
    let got: Vec<(u64, &str)> = problems.iter().map(|p| (p.line, p.code)).collect();
    assert_eq!(
        got,
        [
            (2, "invalid_json"),
            (3, "missing_custom_id"),
            (4, "duplicate_custom_id"),
            (6, "invalid_url"),
            (7, "model_not_found"),
            (8, "missing_model"),
            (9, "invalid_method"),
            (10, "invalid_stream"),
            (11, "model_not_allowed"),
        ]
    );
    std::fs::write(&p, format!("{ok}\n\n")).unwrap();
    assert_eq!(
        validate::check(&p, "/v1/chat/completions", models).unwrap(),
        Ok(1)
    );
    let items: Vec<_> = validate::requests(&p).unwrap().collect();
    assert_eq!(items.len(), 1);
    assert_eq!((items[0].0, items[0].1.as_str()), (1, "a"));
    std::fs::write(&p, "\n \n").unwrap();
    let empty = validate::check(&p, "/v1/chat/completions", models)
        .unwrap()
        .unwrap_err();
    assert_eq!(empty[0].code, "empty_file");
}
