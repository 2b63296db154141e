//! The web dashboard's hosts (toolgate-console): what `toolgate serve`
//! and `toolgate run` show on their admin listener, and what `toolgate ui`
//! (the dashboard on its own, [`crate::ui`]) shows.
//!
//! [`Reloads`] is how a save waits for the reload: the dashboard pokes the
//! gateway's policy watcher and waits until the watcher reports the next
//! reload (or its failure).

use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use toolgate_console::{
    BoxFuture, Catalogue, ConsoleBackend, PolicyFile, Reload, Scope, Server, ServerStatus, Tool,
};
use toolgate_serve::Gateway;

/// How long a save waits for the gateway to confirm its reload.
const RELOAD_WAIT: Duration = Duration::from_secs(5);

/// Between the dashboard (which saved a file) and a policy watcher.
pub struct Reloads {
    poke: tokio::sync::Notify,
    /// Reloads begun so far (each one's number).
    started: std::sync::atomic::AtomicU64,
    /// The number of the last reload finished, and its error.
    done: tokio::sync::watch::Sender<(u64, Option<String>)>,
}

impl Reloads {
    pub fn new() -> Arc<Reloads> {
        Arc::new(Reloads {
            poke: tokio::sync::Notify::new(),
            started: std::sync::atomic::AtomicU64::new(0),
            done: tokio::sync::watch::channel((0, None)).0,
        })
    }

    /// For the watcher: waits `poll`, or less when poked; true when poked.
    pub async fn wait(&self, poll: Duration) -> bool {
        tokio::select! {
            () = self.poke.notified() => true,
            () = tokio::time::sleep(poll) => false,
        }
    }

    /// For the watcher: a reload begins (before it reads any file); its number.
    pub fn begin(&self) -> u64 {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// For the watcher: reload `number` finished (`error`: it was refused).
    pub fn finished(&self, number: u64, error: Option<String>) {
        self.done.send_replace((number, error));
    }

    /// For the dashboard, after writing a file: asks for a reload and waits
    /// for one that began after the write (so it read the new file).
    pub async fn request(&self) -> Reload {
        let mut rx = self.done.subscribe();
        let written = self.started.load(std::sync::atomic::Ordering::SeqCst);
        self.poke.notify_one();
        let waited =
            tokio::time::timeout(RELOAD_WAIT, rx.wait_for(|(number, _)| *number > written))
                .await
                .map(|done| done.map(|d| d.1.clone()));
        match waited {
            Ok(Ok(None)) => Reload::Reloaded,
            Ok(Ok(Some(error))) => Reload::Failed(format!(
                "{error}\nthe gateway refused the saved file; the previous policy stays in force"
            )),
            _ => Reload::Failed(format!(
                "the gateway did not confirm a reload within {} s; it reloads the file when it sees the change",
                RELOAD_WAIT.as_secs()
            )),
        }
    }
}

/// The policy files of a config, with what each governs.
pub fn config_policy_files(config: &toolgate_config::Config) -> Vec<PolicyFile> {
    let mut files: Vec<PolicyFile> = Vec::new();
    let mut add = |path: &Path, scope: Scope| {
        if !files.iter().any(|f| f.path == path) {
            files.push(PolicyFile {
                path: path.to_path_buf(),
                scope,
            });
        }
    };
    if let Some(p) = &config.policy {
        add(&p.path, Scope::Gateway);
    }
    for s in &config.servers {
        if let Some(p) = &s.policy {
            add(&p.path, Scope::Server(s.name.clone()));
        }
    }
    for g in &config.grants {
        if let Some(p) = &g.policy {
            add(&p.path, Scope::Grant(g.name.clone()));
        }
    }
    files
}

/// `toolgate serve`: the live gateway's catalogue (set once it started).
pub struct ServeConsole {
    pub gateway: OnceLock<Arc<Gateway>>,
    pub servers: Vec<String>,
    pub reloads: Arc<Reloads>,
}

impl ConsoleBackend for ServeConsole {
    fn mode(&self) -> &'static str {
        "serve"
    }

    fn catalogue(&self) -> Catalogue {
        let Some(gateway) = self.gateway.get() else {
            return Catalogue {
                servers: self
                    .servers
                    .iter()
                    .map(|name| Server {
                        name: name.clone(),
                        status: ServerStatus::Scanning,
                        tools: Vec::new(),
                    })
                    .collect(),
            };
        };
        let catalog = gateway.catalog();
        let mut servers: Vec<Server> = gateway
            .server_status()
            .into_iter()
            .map(|(name, ready)| Server {
                name,
                status: if ready {
                    ServerStatus::Ready
                } else {
                    ServerStatus::Down
                },
                tools: Vec::new(),
            })
            .collect();
        for entry in &catalog.tools {
            if let Some(server) = servers.get_mut(entry.server) {
                server.tools.push(Tool {
                    name: entry
                        .value
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or(&entry.original)
                        .to_string(),
                    original: entry.original.clone(),
                    definition: entry.value.clone(),
                });
            }
        }
        Catalogue { servers }
    }

    fn reload<'a>(&'a self, _path: &'a Path) -> BoxFuture<'a, Reload> {
        Box::pin(self.reloads.request())
    }
}

/// `toolgate run`: its one policy, and its server's tools as the gateway
/// last listed them to the client (recorded in the pin store; tools the
/// policy hides are never listed, so they are not there).
pub struct RunConsole {
    pub server: String,
    pub pins: Arc<dyn toolgate_pins::PinStore>,
}

impl ConsoleBackend for RunConsole {
    fn mode(&self) -> &'static str {
        "run"
    }

    fn catalogue(&self) -> Catalogue {
        let (status, tools) = match self.pins.list() {
            Ok(pins) => {
                let tools: Vec<Tool> = pins
                    .into_iter()
                    .filter(|p| p.server == self.server)
                    .map(|p| Tool {
                        name: p.tool.clone(),
                        original: p.tool,
                        // The definition last seen.
                        definition: p.changed.unwrap_or(p.pinned),
                    })
                    .collect();
                let status = if tools.is_empty() {
                    ServerStatus::Unlisted(
                        "no tools yet: they appear once the agent has listed them (tools/list); `toolgate ui --policy FILE -- COMMAND` lists them all".into(),
                    )
                } else {
                    ServerStatus::Ready
                };
                (status, tools)
            }
            Err(e) => (
                ServerStatus::Failed(format!("cannot read the pin store: {e}")),
                Vec::new(),
            ),
        };
        Catalogue {
            servers: vec![Server {
                name: self.server.clone(),
                status,
                tools,
            }],
        }
    }

    fn reload<'a>(&'a self, _path: &'a Path) -> BoxFuture<'a, Reload> {
        Box::pin(async {
            Reload::Pending(
                "toolgate run watches its policy file and puts a valid edit in force within a second"
                    .into(),
            )
        })
    }
}

/// `toolgate ui`: servers scanned at start; nothing to reload in-process.
pub struct UiConsole {
    pub servers: Mutex<Vec<Server>>,
}

impl ConsoleBackend for UiConsole {
    fn mode(&self) -> &'static str {
        "ui"
    }

    fn catalogue(&self) -> Catalogue {
        Catalogue {
            servers: self.servers.lock().expect("servers lock").clone(),
        }
    }

    fn reload<'a>(&'a self, _path: &'a Path) -> BoxFuture<'a, Reload> {
        Box::pin(async {
            Reload::Pending(
                "no gateway runs in this process: a toolgate serve or run using this file puts it in force within a second"
                    .into(),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_save_waits_for_a_reload_that_began_after_the_write() {
        let reloads = Reloads::new();
        // A reload that read the files before the dashboard wrote.
        let stale = reloads.begin();
        let r = reloads.clone();
        let waiter = tokio::spawn(async move { r.request().await });
        assert!(
            reloads.wait(Duration::from_secs(60)).await,
            "the save pokes the watcher"
        );
        reloads.finished(stale, None);
        tokio::task::yield_now().await;
        assert!(
            !waiter.is_finished(),
            "the stale reload does not answer the save"
        );
        let fresh = reloads.begin();
        reloads.finished(fresh, Some("policy.json:2:12: default: unknown".into()));
        match waiter.await.unwrap() {
            Reload::Failed(why) => assert!(why.starts_with("policy.json:2:12"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
