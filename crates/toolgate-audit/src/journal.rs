//! The intent journal: an allowed call's decision, on disk before the call is
//! forwarded, so that a `kill -9` cannot leave a call the server ran without
//! a record.
//!
//! Each gateway process has its own journal in a directory shared with
//! others (`<data-dir>/audit-journal/`): one or more segment files
//! `<pid>-<random>-<n>.log`, each held with an exclusive `flock` for as long
//! as the process lives. A segment holds lines of two kinds, each written
//! with one `write(2)` on an `O_APPEND` descriptor:
//!
//! - an intent: `{"record":{...},"intent":N}`, the call's audit record as
//!   it would be written if the call never answered (outcome `interrupted`);
//! - `d N`: intent N's final record is in the trail.
//!
//! The serving thread writes the intent; the audit writer thread closes it
//! once the final record is written. A segment longer than [`EMPTY_AT`]
//! with no intent open is truncated (or, if it is not the one being
//! written, removed); a segment that grows past [`SEGMENT_BYTES`] with
//! intents still open is left for a new one, so a call that never answers
//! does not make the journal grow without bound.
//!
//! [`recover`] takes the segments whose lock nobody holds (their process
//! died), returns the record of every intent not closed, and removes the
//! segments once the caller has put those records in the trail. A segment is
//! created under a `.tmp` name and renamed only once locked, so recovery
//! never takes a live process's segment; a lock taken on a file that was
//! meanwhile removed (by another recovery) is noticed by its inode.
//!
//! Only the kernel's page cache is needed for this: bytes a `write(2)` has
//! returned survive the process's death (not a loss of power: nothing here
//! calls `fsync`). A last line without its newline is a write the process
//! died in; it is ignored (its call was never forwarded: forwarding waits for
//! the write to return).

use serde_json::Value;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The outcome a recovered record carries: the gateway stopped after the
/// call was forwarded and before its answer was recorded; the server may or
/// may not have run it.
pub const INTERRUPTED: &str = "interrupted";

/// A segment this long, with intents still open, is left for a new one.
pub const SEGMENT_BYTES: u64 = 1 << 20;

/// A segment this long is emptied when no intent in it is open.
pub const EMPTY_AT: u64 = 64 << 10;

/// A `.tmp` file (a segment being created) unlocked for this long is left
/// over by a process that died creating it.
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(60);

/// One intent in this process's journal; closed with [`Journal::close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Intent(u64);

/// This process's journal.
pub struct Journal {
    dir: PathBuf,
    /// `<pid>-<random>`: the start of every segment's name.
    name: String,
    segments: Mutex<Segments>,
    /// A write already failed (said once on stderr).
    failed: AtomicBool,
}

struct Segments {
    /// The segment written to, last in the list; older ones still have
    /// intents open.
    list: Vec<Segment>,
    next_intent: u64,
    next_segment: u64,
}

struct Segment {
    /// Shared with the writer thread's `d` lines, written outside the lock.
    file: Arc<File>,
    path: PathBuf,
    /// The first intent written to it.
    first: u64,
    open: u64,
    len: u64,
    /// A write failed part way: the next line starts with a newline, so
    /// that the torn one stays a line of its own (and is ignored).
    torn: bool,
}

impl Journal {
    /// Starts this process's journal in `dir` (made if needed).
    pub fn open(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        let mut random = [0u8; 4];
        getrandom::getrandom(&mut random)
            .map_err(|e| std::io::Error::other(format!("the OS random source: {e}")))?;
        let name = format!("{}-{}", std::process::id(), hex::encode(random));
        let first = new_segment(dir, &name, 0, 1)?;
        Ok(Journal {
            dir: dir.to_path_buf(),
            name,
            segments: Mutex::new(Segments {
                list: vec![first],
                next_intent: 1,
                next_segment: 1,
            }),
            failed: AtomicBool::new(false),
        })
    }

    /// Writes the intent whose record (outcome `interrupted`) `write_record`
    /// writes as JSON, in one `write(2)`. `None` when it could not be
    /// written (said once on stderr; the call goes on, as a record the disk
    /// refused does).
    pub fn intend(&self, write_record: impl FnOnce(&mut Vec<u8>)) -> Option<Intent> {
        // Built outside the lock; only the id and the write are inside.
        let mut line = Vec::with_capacity(512);
        line.extend_from_slice(b"{\"record\":");
        write_record(&mut line);
        line.extend_from_slice(b",\"intent\":");
        let mut guard = self.segments.lock().expect("journal lock");
        let segments = &mut *guard;
        let id = segments.next_intent;
        let _ = writeln!(line, "{id}}}");
        self.rotate_if_long(segments, id);
        let current = segments.list.last_mut().expect("a segment");
        match current.append(&line) {
            Ok(()) => {
                current.open += 1;
                segments.next_intent += 1;
                Some(Intent(id))
            }
            Err(e) => {
                drop(guard);
                self.say_failed(&e);
                None
            }
        }
    }

    /// Closes intents whose final records are in the trail (the audit
    /// writer thread). The `d N` lines are written outside the lock the
    /// serving threads take (appends to one file do not interleave); a
    /// segment is emptied only when no intent is open and it is longer than
    /// [`EMPTY_AT`], so that most calls cost the writer one short write.
    pub fn close(&self, intents: &[Intent]) {
        if intents.is_empty() {
            return;
        }
        let mut writes: Vec<(Arc<File>, String)> = Vec::new();
        let mut removed: Vec<PathBuf> = Vec::new();
        {
            let mut guard = self.segments.lock().expect("journal lock");
            let segments = &mut guard.list;
            let mut i = 0;
            while i < intents.len() {
                // The intents of one segment, written together.
                let at = segments
                    .iter()
                    .rposition(|s| s.first <= intents[i].0)
                    .unwrap_or(0);
                let end = segments.get(at + 1).map_or(u64::MAX, |s| s.first);
                let start = i;
                while i < intents.len() && (segments[at].first..end).contains(&intents[i].0) {
                    i += 1;
                }
                if i == start {
                    i += 1;
                    continue;
                }
                let closing = &intents[start..i];
                let last = at + 1 == segments.len();
                let segment = &mut segments[at];
                segment.open -= (closing.len() as u64).min(segment.open);
                if segment.open == 0 && !last {
                    removed.push(segments.remove(at).path);
                    continue;
                }
                if segment.open == 0 && segment.len >= EMPTY_AT && segment.file.set_len(0).is_ok() {
                    segment.len = 0;
                    segment.torn = false;
                    continue;
                }
                let mut text = String::with_capacity(closing.len() * 12);
                for intent in closing {
                    let _ = writeln!(text, "d {}", intent.0);
                }
                segment.len += text.len() as u64;
                writes.push((segment.file.clone(), text));
            }
        }
        for path in removed {
            let _ = std::fs::remove_file(path);
        }
        for (file, text) in writes {
            if let Err(e) = (&*file).write_all(text.as_bytes()) {
                // A torn `d` line is skipped on recovery: its intents come
                // back as interrupted, never lost.
                self.say_failed(&e);
            }
        }
    }

    /// The directory of the journal.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A long segment with intents open is left for a new one (it is removed
    /// when they close); a long one with none open starts again, empty.
    fn rotate_if_long(&self, segments: &mut Segments, id: u64) {
        let current = segments.list.last_mut().expect("a segment");
        if current.len < SEGMENT_BYTES {
            return;
        }
        if current.open == 0 && current.file.set_len(0).is_ok() {
            current.len = 0;
            return;
        }
        match new_segment(&self.dir, &self.name, segments.next_segment, id) {
            Ok(segment) => {
                segments.next_segment += 1;
                segments.list.push(segment);
            }
            // The current one goes on growing.
            Err(e) => self.say_failed(&e),
        }
    }

    fn say_failed(&self, e: &std::io::Error) {
        if !self.failed.swap(true, Ordering::Relaxed) {
            let _ = writeln!(
                std::io::stderr(),
                "toolgate: cannot write the audit journal in {}: {e} (calls go on; a crash now may leave calls without a record)",
                self.dir.display()
            );
        }
    }
}

impl Segment {
    fn append(&mut self, line: &[u8]) -> std::io::Result<()> {
        let result = if self.torn {
            let mut fixed = Vec::with_capacity(line.len() + 1);
            fixed.push(b'\n');
            fixed.extend_from_slice(line);
            let r = (&*self.file).write_all(&fixed);
            if r.is_ok() {
                self.len += 1;
            }
            r
        } else {
            (&*self.file).write_all(line)
        };
        match result {
            Ok(()) => {
                self.torn = false;
                self.len += line.len() as u64;
                Ok(())
            }
            Err(e) => {
                self.torn = true;
                Err(e)
            }
        }
    }
}

/// Creates segment `n` of journal `name`: made and locked under a `.tmp`
/// name, then renamed, so that no recovery ever sees it unlocked.
fn new_segment(dir: &Path, name: &str, n: u64, first: u64) -> std::io::Result<Segment> {
    let tmp = dir.join(format!("{name}-{n}.tmp"));
    let path = dir.join(format!("{name}-{n}.log"));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&tmp)?;
    file.try_lock().map_err(std::io::Error::from)?;
    std::fs::rename(&tmp, &path)?;
    Ok(Segment {
        file: Arc::new(file),
        path,
        first,
        open: 0,
        len: 0,
        torn: false,
    })
}

/// The segments of dead processes found in a journal directory, locked: the
/// records of their open intents, to put in the trail before [`Recovered::finish`]
/// removes the segments.
pub struct Recovered {
    /// The records (JSON objects as the trail keeps them), oldest first per
    /// segment.
    pub records: Vec<Value>,
    /// Lines that were neither an intent nor a close (an edit, or a write
    /// torn by a full disk), by segment.
    pub unreadable: Vec<(PathBuf, usize)>,
    taken: Vec<(PathBuf, File)>,
}

impl Recovered {
    /// How many dead segments were found.
    #[cfg(test)]
    pub fn segments(&self) -> usize {
        self.taken.len()
    }

    /// Removes the segments (their records are in the trail now).
    pub fn finish(self) {
        for (path, _lock) in self.taken {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Takes the segments in `dir` whose process died (their lock is free); a
/// directory that does not exist has none. Segments of live processes are
/// never opened for writing nor read.
pub fn recover(dir: &Path) -> std::io::Result<Recovered> {
    let mut found = Recovered {
        records: Vec::new(),
        unreadable: Vec::new(),
        taken: Vec::new(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        match path.extension().and_then(|e| e.to_str()) {
            Some("log") => {
                if let Some((text, file)) = take(&path)? {
                    let (records, bad) = open_intents(&text);
                    found.records.extend(records);
                    if bad > 0 {
                        found.unreadable.push((path.clone(), bad));
                    }
                    found.taken.push((path, file));
                }
            }
            Some("tmp") => remove_stale_tmp(&path),
            _ => {}
        }
    }
    Ok(found)
}

/// The text of a segment nobody holds, locked by us now; `None` when it is
/// held (its process lives) or was removed meanwhile.
fn take(path: &Path) -> std::io::Result<Option<(Vec<u8>, File)>> {
    let mut file = match OpenOptions::new().read(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    // Another recovery may have finished with this file between our open and
    // our lock: then the name is gone or names another file.
    let same = std::fs::metadata(path)
        .map(|m| m.ino() == file.metadata().map(|f| f.ino()).unwrap_or(0))
        .unwrap_or(false);
    if !same {
        return Ok(None);
    }
    let mut text = Vec::new();
    file.read_to_end(&mut text)?;
    Ok(Some((text, file)))
}

fn remove_stale_tmp(path: &Path) {
    let Ok(file) = File::open(path) else { return };
    let old = file
        .metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > STALE_TMP);
    if old && file.try_lock().is_ok() {
        let _ = std::fs::remove_file(path);
    }
}

/// The records of the intents in a segment's text that no `d N` closes,
/// and how many lines could not be read. A last line without its newline is
/// a write its process died in, and is skipped without counting.
fn open_intents(text: &[u8]) -> (Vec<Value>, usize) {
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(end) => &text[..=end],
        None => &[][..],
    };
    let mut intents: Vec<(u64, Value)> = Vec::new();
    let mut closed = std::collections::HashSet::new();
    let mut bad = 0;
    for line in complete.split(|&b| b == b'\n') {
        if line.is_empty() {
            continue;
        }
        if let Some(id) = line.strip_prefix(b"d ") {
            match std::str::from_utf8(id)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            {
                Some(id) => {
                    closed.insert(id);
                }
                None => bad += 1,
            }
            continue;
        }
        let parsed = serde_json::from_slice::<Value>(line).ok().and_then(|v| {
            let id = v.get("intent")?.as_u64()?;
            let record = v.get("record").filter(|r| r.is_object())?.clone();
            Some((id, record))
        });
        match parsed {
            Some(intent) => intents.push(intent),
            None => bad += 1,
        }
    }
    let records = intents
        .into_iter()
        .filter(|(id, _)| !closed.contains(id))
        .map(|(_, record)| record)
        .collect();
    (records, bad)
}

/// A fresh directory for one test of the crate.
#[cfg(test)]
pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "toolgate-audit-{name}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn intend(journal: &Journal, tool: &str) -> Intent {
        journal
            .intend(|out| {
                serde_json::to_writer(out, &json!({"tool": tool, "outcome": INTERRUPTED})).unwrap()
            })
            .unwrap()
    }

    fn segments(dir: &Path) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let path = e.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read_to_string(&path).unwrap())
            })
            .collect();
        found.sort();
        found
    }

    fn tools(records: &[Value]) -> Vec<&str> {
        records
            .iter()
            .map(|r| r["tool"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn an_intent_is_one_line_and_a_close_another() {
        let dir = temp_dir("lines");
        let journal = Journal::open(&dir).unwrap();
        let a = intend(&journal, "a");
        let b = intend(&journal, "b");
        let [(name, text)] = &segments(&dir)[..] else {
            panic!("one segment: {:?}", segments(&dir))
        };
        assert!(name.starts_with(&format!("{}-", std::process::id())) && name.ends_with("-0.log"));
        assert_eq!(
            text,
            "{\"record\":{\"tool\":\"a\",\"outcome\":\"interrupted\"},\"intent\":1}\n\
             {\"record\":{\"tool\":\"b\",\"outcome\":\"interrupted\"},\"intent\":2}\n"
        );
        journal.close(&[a, b]);
        assert!(segments(&dir)[0].1.ends_with("}\nd 1\nd 2\n"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_long_segment_with_nothing_open_is_emptied() {
        let dir = temp_dir("empty");
        let journal = Journal::open(&dir).unwrap();
        let big = "x".repeat(4096);
        let mut open = Vec::new();
        while (segments(&dir)[0].1.len() as u64) < EMPTY_AT {
            open.push(intend(&journal, &big));
        }
        let last = open.pop().unwrap();
        journal.close(&open);
        assert!(
            segments(&dir)[0].1.len() as u64 > EMPTY_AT,
            "one still open"
        );
        journal.close(&[last]);
        assert_eq!(segments(&dir)[0].1, "", "nothing open: emptied");
        // It is written again from the start.
        intend(&journal, "c");
        assert!(segments(&dir)[0]
            .1
            .starts_with("{\"record\":{\"tool\":\"c\""));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_live_journal_is_left_alone() {
        let dir = temp_dir("live");
        let journal = Journal::open(&dir).unwrap();
        intend(&journal, "a");
        let found = recover(&dir).unwrap();
        assert_eq!((found.segments(), found.records.len()), (0, 0));
        found.finish();
        assert_eq!(segments(&dir).len(), 1, "still there");
        // The live process goes on writing it.
        intend(&journal, "b");
        assert_eq!(segments(&dir)[0].1.lines().count(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_dead_journal_gives_its_open_intents_and_is_removed() {
        let dir = temp_dir("dead");
        let journal = Journal::open(&dir).unwrap();
        let a = intend(&journal, "a");
        intend(&journal, "b");
        intend(&journal, "c");
        journal.close(&[a]);
        // The process dies: its locks go with its files.
        drop(journal);
        let found = recover(&dir).unwrap();
        assert_eq!(found.segments(), 1);
        assert_eq!(tools(&found.records), ["b", "c"]);
        assert_eq!(found.records[0]["outcome"], INTERRUPTED);
        // A second recovery while the first holds the segments takes nothing.
        let second = recover(&dir).unwrap();
        assert_eq!(second.segments(), 0);
        found.finish();
        assert!(segments(&dir).is_empty());
        assert_eq!(recover(&dir).unwrap().records.len(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_line_and_garbage_are_skipped() {
        let dir = temp_dir("torn");
        let path = dir.join("1-00000000-0.log");
        std::fs::write(
            &path,
            "{\"intent\":1,\"record\":{\"tool\":\"a\"}}\n\
             not a line of ours\n\
             d x\n\
             {\"intent\":2,\"record\":{\"tool\":\"b\"}}\n\
             d 2\n\
             {\"intent\":3,\"record\":{\"tool\":\"c\"}}\n\
             {\"intent\":4,\"rec",
        )
        .unwrap();
        let found = recover(&dir).unwrap();
        assert_eq!(tools(&found.records), ["a", "c"]);
        assert_eq!(found.unreadable, [(path, 2)]);
        found.finish();
        assert!(segments(&dir).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_directory_has_nothing_to_recover() {
        let dir = temp_dir("none").join("absent");
        let found = recover(&dir).unwrap();
        assert_eq!((found.segments(), found.records.len()), (0, 0));
        assert!(!dir.exists());
    }

    #[test]
    fn a_long_segment_with_intents_open_is_left_for_a_new_one() {
        let dir = temp_dir("rotate");
        let journal = Journal::open(&dir).unwrap();
        let pinned = intend(&journal, "never answered");
        let big = "x".repeat(4096);
        let mut closing = Vec::new();
        while segments(&dir).len() < 2 {
            closing.push(intend(&journal, &big));
        }
        let next = intend(&journal, "next");
        let files = segments(&dir);
        assert!(files[0].0.ends_with("-0.log") && files[1].0.ends_with("-1.log"));
        assert!(files[1].1.contains("\"next\""));
        // Closing all but the pinned one leaves the first segment.
        journal.close(&closing);
        journal.close(&[next]);
        let files = segments(&dir);
        assert_eq!(files.len(), 2, "the first still has an intent open");
        assert!(files[1].1.ends_with(&format!("d {}\n", next.0)));
        // The last intent of the old segment closes: it goes.
        journal.close(&[pinned]);
        let files = segments(&dir);
        assert_eq!(files.len(), 1);
        assert!(files[0].0.ends_with("-1.log"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
