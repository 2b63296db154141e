//! The gateway's own stdin and stdout as async streams.
//!
//! Tokio's `stdin()`/`stdout()` run every read and write on a blocking
//! thread, which costs a thread hand-off per message. When the client gave us
//! pipes or sockets (as MCP clients do), they are put in non-blocking mode and
//! driven by the event loop instead; anything else (a terminal, a file) falls
//! back to tokio's blocking streams.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};

pub type Reader = Pin<Box<dyn AsyncRead + Send>>;
pub type Writer = Pin<Box<dyn AsyncWrite + Send>>;

/// The process's stdin and stdout. Must be called inside a Tokio runtime.
pub fn stdio() -> (Reader, Writer) {
    let input = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .and_then(|fd| reader(fd).ok())
        .unwrap_or_else(|| Box::pin(tokio::io::stdin()));
    // Non-blocking mode belongs to the open file, not the descriptor: if
    // stdout and stderr are one file, stderr would turn non-blocking too.
    let output = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ok()
        .filter(|fd| !same_file(fd, std::io::stderr().as_fd()))
        .and_then(|fd| writer(fd).ok())
        .unwrap_or_else(|| Box::pin(tokio::io::stdout()));
    (input, output)
}

fn same_file(a: &OwnedFd, b: std::os::fd::BorrowedFd<'_>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let meta = |fd: std::io::Result<OwnedFd>| fd.and_then(|fd| File::from(fd).metadata());
    match (meta(a.try_clone()), meta(b.try_clone_to_owned())) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => true,
    }
}

enum Kind {
    Fifo,
    Socket,
    Other,
}

fn kind(fd: &OwnedFd) -> std::io::Result<Kind> {
    let file = File::from(fd.try_clone()?);
    let t = file.metadata()?.file_type();
    Ok(if t.is_fifo() {
        Kind::Fifo
    } else if t.is_socket() {
        Kind::Socket
    } else {
        Kind::Other
    })
}

fn reader(fd: OwnedFd) -> std::io::Result<Reader> {
    match kind(&fd)? {
        Kind::Fifo => Ok(Box::pin(tokio::net::unix::pipe::Receiver::from_owned_fd(
            fd,
        )?)),
        Kind::Socket => Ok(Box::pin(socket(fd)?)),
        Kind::Other => Err(std::io::Error::other("not a pipe or socket")),
    }
}

fn writer(fd: OwnedFd) -> std::io::Result<Writer> {
    match kind(&fd)? {
        Kind::Fifo => Ok(Box::pin(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?)),
        Kind::Socket => Ok(Box::pin(socket(fd)?)),
        Kind::Other => Err(std::io::Error::other("not a pipe or socket")),
    }
}

fn socket(fd: OwnedFd) -> std::io::Result<tokio::net::UnixStream> {
    let std = std::os::unix::net::UnixStream::from(fd);
    std.set_nonblocking(true)?;
    tokio::net::UnixStream::from_std(std)
}
