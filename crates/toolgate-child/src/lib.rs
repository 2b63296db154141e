//! An MCP server as a child process of the gateway, started one way for
//! `toolgate run` and for `toolgate serve`'s stdio upstreams.
//!
//! Its stdin and stdout are the gateway's pipes to it; its stderr is the
//! gateway's stderr. On Linux the kernel kills it if the gateway dies, even
//! by SIGKILL (`PR_SET_PDEATHSIG`, set by [`die_with_parent`], the one place
//! that does it), so it never outlives the gateway.

use std::process::{Child, Command, Stdio};

/// Why the server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("no server command given (put it after `--`)")]
    NoCommand,
    #[error("cannot start server {command:?}: {source}")]
    Io {
        command: String,
        source: std::io::Error,
    },
}

/// Spawns `command[0]` with `command[1..]`, piped stdin/stdout.
pub fn spawn(command: &[String]) -> Result<Child, SpawnError> {
    let (program, args) = command.split_first().ok_or(SpawnError::NoCommand)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    die_with_parent(&mut cmd);
    cmd.spawn().map_err(|source| SpawnError::Io {
        command: program.clone(),
        source,
    })
}

/// Makes the child `cmd` starts die with this process (Linux).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes async-signal-safe system calls (prctl, getppid, raise).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before prctl took effect.
            if libc::getppid() != parent {
                libc::raise(libc::SIGKILL);
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_cmd: &mut Command) {}

/// Sends `signal` to the process `pid`.
#[allow(unsafe_code)]
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Forwards SIGINT, SIGTERM and SIGHUP received by the gateway to `pid`, from
/// a thread of its own, for the rest of the process's life.
pub fn forward_signals(pid: u32) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("toolgate-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                signal(pid, sig);
            }
        })?;
    Ok(())
}
