//! The floor for any stdio gateway: a relay that copies bytes between the
//! client and a child server with no parsing at all (one thread per
//! direction). The end-to-end bench runs it beside toolgate, so the cost of
//! an extra process hop is measured rather than guessed.

use std::io::{Read, Write};
use std::process::{Command, Stdio};

fn pump(mut from: impl Read, mut to: impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
                    return;
                }
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut child = Command::new(&args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the server");
    let (cin, cout) = (child.stdin.take().unwrap(), child.stdout.take().unwrap());
    let up = std::thread::spawn(move || pump(std::io::stdin().lock(), cin));
    pump(cout, std::io::stdout().lock());
    let _ = up.join();
    let _ = child.wait();
}
