//! Unit tests of the forwarder: half-close, the per-side timeouts, `tune.bufsize`, buffers
//! held only while bytes are in flight, splicing (`option splice-*`) and kill.

use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (a, b) = tokio::join!(TcpStream::connect(addr), l.accept());
    (a.expect("connect"), b.expect("accept").0)
}

/// client_peer <-> [client | proxy | server] <-> server_peer
async fn setup(t: Timeouts) -> (TcpStream, TcpStream, tokio::task::JoinHandle<Outcome>) {
    setup_with(t, splice::Policy::default()).await
}

async fn setup_with(
    t: Timeouts,
    splice: splice::Policy,
) -> (TcpStream, TcpStream, tokio::task::JoinHandle<Outcome>) {
    let (client_peer, mut client) = pair().await;
    let (mut server, server_peer) = pair().await;
    let task = tokio::spawn(async move {
        forward(
            &mut client,
            &mut server,
            t,
            Counters {
                to_server: &[],
                to_client: &[],
            },
            Flow {
                bufsize: crate::config::DEFAULT_BUFSIZE,
                splice,
                server_nolinger: false,
            },
            std::future::pending(),
        )
        .await
    });
    (client_peer, server_peer, task)
}

#[tokio::test]
async fn half_close_keeps_the_other_direction_flowing() {
    let (mut c, mut s, task) = setup(Timeouts::default()).await;
    c.write_all(b"query").await.expect("write");
    c.shutdown().await.expect("shutdown");
    let mut got = Vec::new();
    s.read_to_end(&mut got).await.expect("read to FIN");
    assert_eq!(got, b"query");
    // The server still answers after the client's FIN.
    s.write_all(b"answer").await.expect("write");
    drop(s);
    let mut back = Vec::new();
    c.read_to_end(&mut back).await.expect("read");
    assert_eq!(back, b"answer");
    let out = task.await.expect("join");
    assert_eq!(out.end, End::Closed);
    assert_eq!((out.bytes_in, out.bytes_out), (5, 6));
}

#[tokio::test]
async fn idle_client_side_hits_timeout_client() {
    let t = Timeouts {
        client: Some(Duration::from_millis(150)),
        server: Some(Duration::from_secs(10)),
        ..Timeouts::default()
    };
    let (_c, _s, task) = setup(t).await;
    let started = std::time::Instant::now();
    let out = task.await.expect("join");
    assert_eq!(out.end, End::ClientTimeout);
    assert!(started.elapsed() >= Duration::from_millis(140));
}

/// A server streams to a client that sends nothing, a byte every 40 ms for 400 ms, with
/// `timeout client` 150 ms: how the session ended and how many bytes the client got.
async fn stream_to_a_silent_client(client_independent: bool) -> (End, usize) {
    let t = Timeouts {
        client: Some(Duration::from_millis(150)),
        server: Some(Duration::from_secs(10)),
        client_independent,
        ..Timeouts::default()
    };
    let (mut c, mut s, task) = setup(t).await;
    let feeder = tokio::spawn(async move {
        for _ in 0..10 {
            if s.write_all(b"x").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        // The stream is over: the server closes.
        let _ = s.shutdown().await;
    });
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got).await;
    // The client closes too once the stream ended.
    drop(c);
    let out = task.await.expect("join");
    feeder.abort();
    (out.end, got.len())
}

#[tokio::test]
async fn writes_to_the_client_keep_its_read_timeout_alive_unless_streams_are_independent() {
    // HAProxy's default: writing to a side refreshes that side's read timeout too.
    let (end, got) = stream_to_a_silent_client(false).await;
    assert_eq!((end, got), (End::Closed, 10));
    // `option independent-streams`: only reads do; the silent client times out.
    let (end, got) = stream_to_a_silent_client(true).await;
    assert_eq!(end, End::ClientTimeout);
    assert!(got < 10, "the client got all {got} bytes");
}

#[tokio::test]
async fn tunnel_timeout_replaces_client_and_server_timeouts() {
    // The gaps below are the test's input, not waits for a condition: each idle gap is
    // twice `timeout client`/`timeout server` and far below `timeout tunnel`, so a loaded
    // machine that stretches a gap cannot reach the tunnel timeout.
    let t = Timeouts {
        client: Some(Duration::from_millis(50)),
        server: Some(Duration::from_millis(50)),
        tunnel: Some(Duration::from_secs(3)),
        ..Timeouts::default()
    };
    let (mut c, mut s, task) = setup(t).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        c.write_all(b"x").await.expect("write");
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.expect("read");
    }
    assert!(!task.is_finished());
    let idle = std::time::Instant::now();
    let out = task.await.expect("join");
    assert_eq!(out.end, End::ClientTimeout);
    assert_eq!(out.bytes_in, 3);
    // Ended by the tunnel timeout: never before it.
    assert!(idle.elapsed() >= Duration::from_millis(2900));
}

#[tokio::test]
async fn client_fin_timeout_applies_once_the_servers_fin_reached_the_client() {
    let t = Timeouts {
        client: Some(Duration::from_secs(10)),
        server: Some(Duration::from_secs(10)),
        client_fin: Some(Duration::from_millis(100)),
        ..Timeouts::default()
    };
    let (_c, mut s, task) = setup(t).await;
    s.shutdown().await.expect("shutdown");
    // A deadline between client-fin (100 ms) and timeout client (10 s), wide enough for
    // a loaded machine.
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("ends by client-fin, long before timeout client")
        .expect("join");
    assert_eq!(out.end, End::ClientTimeout);
}

#[tokio::test]
async fn server_fin_timeout_applies_once_the_clients_fin_reached_the_server() {
    let t = Timeouts {
        client: Some(Duration::from_secs(10)),
        server: Some(Duration::from_secs(10)),
        server_fin: Some(Duration::from_millis(100)),
        ..Timeouts::default()
    };
    let (mut c, _s, task) = setup(t).await;
    c.shutdown().await.expect("shutdown");
    let out = tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("ends by server-fin, long before timeout server")
        .expect("join");
    assert_eq!(out.end, End::ServerTimeout);
}

#[tokio::test]
async fn a_client_that_sent_its_fin_is_not_timed_as_in_haproxy() {
    let t = Timeouts {
        client: Some(Duration::from_millis(100)),
        server: Some(Duration::from_millis(600)),
        ..Timeouts::default()
    };
    let (mut c, _s, task) = setup(t).await;
    c.shutdown().await.expect("shutdown");
    let started = std::time::Instant::now();
    let out = task.await.expect("join");
    // Nothing is read from the client any more: the server side ends it.
    assert_eq!(out.end, End::ServerTimeout);
    assert!(started.elapsed() >= Duration::from_millis(500));
}

/// Records the size of every write it is given.
struct Recorder(Vec<usize>);

impl Sink for Recorder {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

/// Bytes always readable, as many as the buffer takes.
struct Bytes<'a>(std::cell::Cell<&'a [u8]>);

impl Source for Bytes<'_> {
    fn poll_read_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.0.get();
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.0.set(&data[n..]);
        Ok(n)
    }
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

impl AsyncWrite for Recorder {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.0.push(buf.len());
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn a_direction_never_holds_more_than_tune_bufsize() {
    for bufsize in [16, 1008, crate::config::DEFAULT_BUFSIZE] {
        let data = vec![7u8; 100_000];
        let reader = Bytes(std::cell::Cell::new(&data));
        let mut writer = Recorder(Vec::new());
        let (a, b, c, w, s) = (
            AtomicU64::new(0),
            AtomicU64::new(0),
            AtomicU64::new(0),
            Flags::default(),
            AtomicU64::new(0),
        );
        let d = Direction {
            rd_active: &a,
            wr_active: &b,
            flags: &w,
            way: Way::ToClient,
            bytes: &c,
            spliced: &s,
            counters: &[],
        };
        let flow = Flow {
            bufsize,
            splice: splice::Policy::default(),
            server_nolinger: false,
        };
        let end = pump(
            &reader,
            &mut writer,
            d,
            Instant::now(),
            flow,
            SpliceWhen::Never,
        )
        .await;
        assert!(matches!(end, DirEnd::Eof));
        assert_eq!(c.load(Ordering::Relaxed), 100_000);
        assert_eq!(writer.0.iter().max().copied(), Some(bufsize), "{bufsize}");
        assert_eq!(writer.0.len(), 100_000usize.div_ceil(bufsize), "{bufsize}");
    }
}

/// Writes `n` patterned bytes and sends FIN.
async fn send(mut to: TcpStream, n: usize) -> TcpStream {
    let data: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
    to.write_all(&data).await.expect("write");
    to.shutdown().await.expect("shutdown");
    to
}

/// Reads to FIN and checks the pattern [`send`] wrote.
async fn receive(from: &mut TcpStream, n: usize) {
    let mut got = Vec::new();
    from.read_to_end(&mut got).await.expect("read");
    assert_eq!(got.len(), n);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));
}

fn policy(request: SpliceWhen, response: SpliceWhen) -> splice::Policy {
    splice::Policy {
        request,
        response,
        maxpipes: 64,
        pipesize: 0,
    }
}

#[tokio::test]
async fn splice_request_and_response_move_every_byte_through_pipes() {
    let p = policy(SpliceWhen::Always, SpliceWhen::Always);
    let (c, mut s, task) = setup_with(Timeouts::default(), p).await;
    let (mut c, ()) = tokio::join!(send(c, 1_000_000), receive(&mut s, 1_000_000));
    let (_s, ()) = tokio::join!(send(s, 700_000), receive(&mut c, 700_000));
    let out = task.await.expect("join");
    assert_eq!(out.end, End::Closed);
    assert_eq!((out.bytes_in, out.bytes_out), (1_000_000, 700_000));
    assert_eq!(out.spliced, 1_700_000, "every byte went through a pipe");
}

#[tokio::test]
async fn splice_auto_splices_a_bulk_direction_and_not_a_chatty_one() {
    let p = policy(SpliceWhen::Auto, SpliceWhen::Auto);
    let (mut c, mut s, task) = setup_with(Timeouts::default(), p).await;
    // Small exchanges: never three full buffers in a row.
    for _ in 0..20 {
        c.write_all(b"SELECT 1").await.expect("write");
        let mut q = [0u8; 8];
        s.read_exact(&mut q).await.expect("read");
        s.write_all(b"1 row").await.expect("write");
        let mut a = [0u8; 5];
        c.read_exact(&mut a).await.expect("read");
    }
    // Then a bulk answer.
    let (_s, ()) = tokio::join!(send(s, 4_000_000), receive(&mut c, 4_000_000));
    drop(c);
    let out = task.await.expect("join");
    assert_eq!((out.bytes_in, out.bytes_out), (160, 100 + 4_000_000));
    assert!(out.spliced > 0, "the bulk direction spliced");
    assert!(out.spliced <= 4_000_000, "the chatty bytes were copied");
}

#[tokio::test]
async fn without_splice_options_nothing_goes_through_a_pipe() {
    let (c, mut s, task) = setup(Timeouts::default()).await;
    let (_c, ()) = tokio::join!(send(c, 4_000_000), receive(&mut s, 4_000_000));
    drop(s);
    let out = task.await.expect("join");
    assert_eq!((out.bytes_in, out.spliced), (4_000_000, 0));
}

#[tokio::test]
async fn an_idle_session_holds_no_buffer_and_a_blocked_one_holds_one() {
    // The test runtime has one thread: the session's buffers are lent from this one.
    let (mut c, mut s, task) = setup(Timeouts::default()).await;
    c.write_all(b"ping").await.expect("write");
    let mut b = [0u8; 4];
    s.read_exact(&mut b).await.expect("read");
    assert_eq!(super::super::bufpool::lent(), 0, "idle: nothing held");
    // The server reads nothing: once the kernel's buffers are full, the client → server
    // direction holds one buffer while it waits to write, and reads no more.
    let flood = vec![1u8; 64 * 1024];
    let mut sent = 0usize;
    loop {
        let more = tokio::time::timeout(Duration::from_millis(500), c.write_all(&flood)).await;
        if more.is_err() {
            break;
        }
        sent += flood.len();
        assert!(sent < 1 << 30, "the proxy kept reading");
    }
    assert_eq!(super::super::bufpool::lent(), 1, "blocked: one buffer");
    task.abort();
    let _ = task.await;
    assert_eq!(
        super::super::bufpool::lent(),
        0,
        "given back when the session ends"
    );
}

#[tokio::test]
async fn kill_ends_a_session_waiting_for_readability() {
    let (client_peer, mut client) = pair().await;
    let (mut server, _server_peer) = pair().await;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        forward(
            &mut client,
            &mut server,
            Timeouts::default(),
            Counters {
                to_server: &[],
                to_client: &[],
            },
            Flow {
                bufsize: crate::config::DEFAULT_BUFSIZE,
                splice: policy(SpliceWhen::Always, SpliceWhen::Always),
                server_nolinger: false,
            },
            async {
                let _ = rx.await;
            },
        )
        .await
    });
    tokio::task::yield_now().await;
    tx.send(()).expect("send");
    let out = tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("killed at once")
        .expect("join");
    assert_eq!(out.end, End::Killed);
    drop(client_peer);
}

#[tokio::test]
async fn an_idle_session_keeps_a_small_forwarder_future() {
    // Everything an idle session holds lives in its future: the pumps' rounds (buffer, pipe,
    // pending write) are boxed while bytes flow, and no argument is stored twice. The bound
    // is the layout's, the same in every build.
    let (_a, mut client) = pair().await;
    let (mut server, _b) = pair().await;
    let flow = Flow {
        bufsize: crate::config::DEFAULT_BUFSIZE,
        splice: policy(SpliceWhen::Auto, SpliceWhen::Auto),
        server_nolinger: false,
    };
    let (cr, mut cw) = client.split();
    let (a, b, c, w, s) = (
        AtomicU64::new(0),
        AtomicU64::new(0),
        AtomicU64::new(0),
        Flags::default(),
        AtomicU64::new(0),
    );
    let d = Direction {
        rd_active: &a,
        wr_active: &b,
        flags: &w,
        way: Way::ToClient,
        bytes: &c,
        spliced: &s,
        counters: &[],
    };
    let p = pump(&cr, &mut cw, d, Instant::now(), flow, SpliceWhen::Auto);
    assert!(
        std::mem::size_of_val(&p) <= 192,
        "{}",
        std::mem::size_of_val(&p)
    );
    drop(p);
    let f = forward(
        &mut client,
        &mut server,
        Timeouts::default(),
        Counters {
            to_server: &[],
            to_client: &[],
        },
        flow,
        std::future::pending::<()>(),
    );
    assert!(
        std::mem::size_of_val(&f) <= 896,
        "{}",
        std::mem::size_of_val(&f)
    );
}
