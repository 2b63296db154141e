//! One file watcher for every hot reload of `toolgate serve`: the files a
//! value was read from are looked at every [`POLL`]; when one changes (or
//! the dashboard pokes after a save, see [`Reloads`]) the value is read
//! again and, when it is valid, applied with the one it replaces (so the
//! caller compares the two values, field by field); an invalid edit is
//! refused and the previous value stays in force.

use crate::console::Reloads;
use std::fmt::Display;
use std::path::PathBuf;
use std::sync::Arc;
use toolgate_gateway::reload::{stamp, POLL};

/// What a watcher needs to know of its value.
pub struct Watch<T, E, R, F, A, X>
where
    R: FnMut() -> Result<T, E>,
    F: Fn(&T) -> Vec<PathBuf>,
    A: FnMut(&T, &T),
    X: FnMut(&E),
{
    /// Reads and validates the value from its files.
    pub read: R,
    /// The files the value depends on.
    pub files: F,
    /// Puts a new valid value in force: `(previous, new)`.
    pub apply: A,
    /// An edit that does not read or validate.
    pub refused: X,
}

/// Watches `current`'s files forever (run it in a task of its own).
pub async fn watch<T, E, R, F, A, X>(
    mut current: T,
    reloads: Arc<Reloads>,
    mut w: Watch<T, E, R, F, A, X>,
) where
    E: Display,
    R: FnMut() -> Result<T, E>,
    F: Fn(&T) -> Vec<PathBuf>,
    A: FnMut(&T, &T),
    X: FnMut(&E),
{
    let stamps = |files: &[PathBuf]| files.iter().map(|f| stamp(f)).collect::<Vec<_>>();
    let mut files = (w.files)(&current);
    let mut last = stamps(&files);
    loop {
        // A save in the dashboard pokes: reload now, whatever the stamps say.
        let poked = reloads.wait(POLL).await;
        let now = stamps(&files);
        if now == last && !poked {
            continue;
        }
        last = now;
        let reload = reloads.begin();
        match (w.read)() {
            Ok(value) => {
                (w.apply)(&current, &value);
                files = (w.files)(&value);
                last = stamps(&files);
                current = value;
                reloads.finished(reload, None);
            }
            Err(e) => {
                (w.refused)(&e);
                reloads.finished(reload, Some(e.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn a_poke_reads_applies_the_valid_and_refuses_the_invalid() {
        let dir = std::env::temp_dir().join(format!("toolgate-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("n.txt");
        std::fs::write(&file, "1").unwrap();
        let applied = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let reloads = Reloads::new();
        let (a, r, path) = (applied.clone(), refused.clone(), file.clone());
        tokio::spawn(watch(
            1u32,
            reloads.clone(),
            Watch {
                read: move || {
                    let text = std::fs::read_to_string(&path).map_err(|e| e.to_string())?;
                    text.trim()
                        .parse::<u32>()
                        .map_err(|e| format!("{text}: {e}"))
                },
                files: move |_: &u32| vec![file.clone()],
                apply: move |old: &u32, new: &u32| a.lock().unwrap().push((*old, *new)),
                refused: move |e: &String| r.lock().unwrap().push(e.clone()),
            },
        ));
        std::fs::write(dir.join("n.txt"), "2").unwrap();
        assert!(matches!(
            reloads.request().await,
            toolgate_console::Reload::Reloaded
        ));
        std::fs::write(dir.join("n.txt"), "x").unwrap();
        assert!(matches!(
            reloads.request().await,
            toolgate_console::Reload::Failed(_)
        ));
        assert_eq!(*applied.lock().unwrap(), [(1, 2)]);
        assert_eq!(refused.lock().unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
