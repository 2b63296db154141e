use super::*;

fn head(text: &str) -> Head {
    parse_head(&mut BytesMut::from(text))
}

fn refused(text: &str) -> StatusCode {
    match head(text) {
        Head::Refused(status, _) => status,
        Head::Complete { .. } => panic!("accepted: {text:?}"),
        Head::Partial => panic!("partial: {text:?}"),
    }
}

#[test]
fn reads_a_head_and_its_framing() {
    const POST: &str =
        "POST /mcp?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\nMcp-Session-Id: s\r\n\r\nhello";
    let mut buf = BytesMut::from(POST);
    let Head::Complete {
        req,
        framing,
        expect_continue,
        keep_alive,
    } = parse_head(&mut buf)
    else {
        panic!("not complete")
    };
    assert_eq!(req.method(), Method::POST);
    assert_eq!(req.uri().path(), "/mcp");
    assert_eq!(req.uri().query(), Some("x=1"));
    assert_eq!(req.headers()["mcp-session-id"], "s");
    assert_eq!(&buf[..], b"hello", "the head is taken out, the body left");
    assert_eq!(framing, Framing::Length(5));
    assert!(!expect_continue);
    assert!(keep_alive);
    assert!(matches!(
        head("GET / HTTP/1.1\r\nHost: a\r\n"),
        Head::Partial
    ));
    let Head::Complete { keep_alive, .. } = head("GET / HTTP/1.0\r\n\r\n") else {
        panic!()
    };
    assert!(!keep_alive, "HTTP/1.0 closes");
    let Head::Complete { keep_alive, .. } =
        head("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    else {
        panic!()
    };
    assert!(
        !keep_alive,
        "HTTP/1.0 closes, even when asked to keep alive"
    );
    let Head::Complete { keep_alive, .. } = head("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n")
    else {
        panic!()
    };
    assert!(!keep_alive);
    let Head::Complete {
        framing,
        expect_continue,
        ..
    } = head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\nExpect: 100-continue\r\n\r\n")
    else {
        panic!()
    };
    assert_eq!(framing, Framing::Chunked);
    assert!(expect_continue);
}

#[test]
fn refuses_framing_that_reads_two_ways() {
    let bad = StatusCode::BAD_REQUEST;
    assert_eq!(
        refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        bad
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
        bad
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n"),
        bad
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n"),
        bad
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n"),
        bad
    );
    assert_eq!(
        refused("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        bad
    );
    assert_eq!(
        refused(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
        ),
        bad
    );
    assert_eq!(
        refused("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        bad
    );
    assert_eq!(refused("POST / HTTP/1.1\r\nBad Header: x\r\n\r\n"), bad);
    assert_eq!(refused("POST / HTTP/1.1\r\nX: a\r\n b\r\n\r\n"), bad);
    assert_eq!(
        refused("POST / HTTP/1.1\r\nExpect: something\r\n\r\n"),
        StatusCode::EXPECTATION_FAILED
    );
    let many = format!(
        "GET / HTTP/1.1\r\n{}\r\n",
        "X: y\r\n".repeat(MAX_HEADERS + 1)
    );
    assert_eq!(refused(&many), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
}

#[tokio::test(start_paused = true)]
async fn the_budget_bounds_bodies_in_flight_and_wakes_a_waiter() {
    let budget = BodyBudget::new(100);
    let mut a = Held::none(&budget);
    assert!(a.grow_to(60).await);
    assert!(a.grow_to(80).await, "grows by the difference");
    assert_eq!(budget.used(), 80);
    let mut b = Held::none(&budget);
    assert!(!b.grow_to(30).await, "no room within the wait");
    assert!(!Held::none(&budget).grow_to(101).await, "never fits");
    let waiter = tokio::spawn({
        let budget = budget.clone();
        async move {
            let mut c = Held::none(&budget);
            let fitted = c.grow_to(50).await;
            (fitted, c)
        }
    });
    tokio::time::sleep(BUDGET_WAIT / 2).await;
    drop(a);
    let (fitted, c) = waiter.await.unwrap();
    assert!(fitted, "woken when room was given back");
    assert_eq!(budget.used(), 50);
    // A counted body gives its share back when the last copy goes.
    let body = counted(vec![1; 50], c);
    let copy = body.clone();
    drop(body);
    assert_eq!(budget.used(), 50);
    drop(copy);
    assert_eq!(budget.used(), 0);
}

#[allow(clippy::result_large_err)]
fn token_check(req: &Req) -> Result<(), Response<Body>> {
    if req.headers().contains_key("authorization") {
        Ok(())
    } else {
        Err(crate::http::text(StatusCode::UNAUTHORIZED, "no"))
    }
}

/// Serves one connection with a token check on the head, and returns
/// what it answered and how much of the body it read.
async fn serve_one(request: Vec<u8>, body_bytes: usize) -> (String, usize) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let budget = BodyBudget::new(64 << 20);
    let limits = Limits {
        request_read: Duration::from_secs(5),
        max_body: 16 << 20,
        budget: budget.clone(),
    };
    let read = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn({
        let read = read.clone();
        async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (_stop, stopped) = watch::channel(false);
            connection(stream, limits, stopped, token_check, |req: Req, ()| {
                let read = read.clone();
                async move {
                    read.store(req.body().as_ref().map_or(0, |b| b.len()), Ordering::SeqCst);
                    crate::http::text(StatusCode::OK, "yes")
                }
            })
            .await;
        }
    });
    let mut client = TcpStream::connect(addr).await.unwrap();
    client.write_all(&request).await.unwrap();
    // Trickle the body while reading the answer.
    let mut answer = Vec::new();
    let mut sent = 0;
    let mut piece = [0u8; 1024];
    loop {
        tokio::select! {
            n = client.read(&mut piece) => match n {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&piece[..n]),
            },
            _ = tokio::time::sleep(Duration::from_millis(1)), if sent < body_bytes => {
                let n = (body_bytes - sent).min(4096);
                if client.write_all(&vec![b'x'; n]).await.is_err() {
                    break;
                }
                sent += n;
            }
        }
        if answer.windows(4).any(|w| w == b"\r\n\r\n") && sent >= body_bytes {
            break;
        }
    }
    drop(client);
    let _ = server.await;
    assert_eq!(budget.used(), 0, "every body's share given back");
    (
        String::from_utf8_lossy(&answer).into_owned(),
        read.load(Ordering::SeqCst),
    )
}

#[tokio::test]
async fn a_refused_head_is_answered_before_its_body_is_read() {
    let head = b"POST /mcp HTTP/1.1\r\nHost: a\r\nContent-Length: 16000000\r\n\r\n".to_vec();
    let (answer, read) = serve_one(head, 256 << 10).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(read, 0);
    // Admitted: a large body is read whole, from its own allocation.
    let head = b"POST /mcp HTTP/1.1\r\nHost: a\r\nAuthorization: x\r\nContent-Length: 200000\r\nConnection: close\r\n\r\n".to_vec();
    let (answer, read) = serve_one(head, 200_000).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(read, 200_000);
}

fn dechunk(pieces: &[&[u8]], max: usize) -> Result<Option<Vec<u8>>, ChunkError> {
    let mut chunked = Chunked::new(max);
    let mut buf = BytesMut::new();
    let mut last = Ok(None);
    for piece in pieces {
        buf.extend_from_slice(piece);
        last = chunked.step(&mut buf);
        if !matches!(last, Ok(None)) {
            return last;
        }
    }
    last
}

#[test]
fn decodes_chunked_bodies_in_any_pieces() {
    let whole: &[u8] = b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n";
    assert_eq!(dechunk(&[whole], 100), Ok(Some(b"hello world".to_vec())));
    // Byte by byte, the same.
    let pieces: Vec<&[u8]> = whole.chunks(1).collect();
    assert_eq!(dechunk(&pieces, 100), Ok(Some(b"hello world".to_vec())));
    assert_eq!(dechunk(&[b"5\r\nhel"], 100), Ok(None));
    assert_eq!(dechunk(&[b"5\r\nhelloXX"], 100), Err(ChunkError::Malformed));
    assert_eq!(dechunk(&[b"zz\r\n"], 100), Err(ChunkError::Malformed));
    assert_eq!(dechunk(&[b"-1\r\n"], 100), Err(ChunkError::Malformed));
    assert_eq!(dechunk(&[b"\r\n"], 100), Err(ChunkError::Malformed));
    assert_eq!(
        dechunk(&[b"ffffffffffffffffff\r\n"], 100),
        Err(ChunkError::Malformed)
    );
    assert_eq!(dechunk(&[b"65\r\n"], 100), Err(ChunkError::TooLarge));
    assert_eq!(
        dechunk(&[b"40\r\n", &[b'a'; 64], b"\r\n40\r\n"], 100),
        Err(ChunkError::TooLarge)
    );
    assert_eq!(
        dechunk(&[&[b'1'; MAX_CHUNK_LINE + 1]], 100),
        Err(ChunkError::Malformed)
    );
}
