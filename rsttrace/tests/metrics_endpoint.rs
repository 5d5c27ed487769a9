//! The `--metrics` endpoint under hostile local clients: thousands of idle
//! connections and a slowloris must not keep a scrape out, exhaust our
//! descriptors or spin the CPU. Runs the real server (no kernel needed) in
//! its own process, so the descriptor limit set here touches nothing else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rsttrace::output::metrics::{Metrics, serve};

const IDLE_CONNECTIONS: usize = 2000;

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is valid; getrusage fills it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is writable.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) }, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text)
}

#[test]
fn idle_and_slow_clients_do_not_keep_a_scrape_out() {
    // Room for our 2,000 client ends plus a server that kept one descriptor
    // per accepted connection: it would run out (EMFILE) partway.
    let limit = libc::rlimit {
        rlim_cur: 3000,
        rlim_max: 3000,
    };
    // SAFETY: a valid rlimit; lowering our own limit needs no privilege.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0);

    let (addr_tx, addr_rx) = mpsc::channel();
    let (cpu_tx, cpu_rx) = mpsc::channel::<mpsc::Sender<Duration>>();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let shared = std::sync::Arc::new(std::sync::Mutex::new(Metrics::new(5)));
            let addr = serve("127.0.0.1:0".parse().unwrap(), shared).await.unwrap();
            addr_tx.send(addr).unwrap();
            // Answers CPU-time questions from this (the server's) thread.
            loop {
                match cpu_rx.try_recv() {
                    Ok(reply) => reply.send(thread_cpu()).unwrap(),
                    Err(mpsc::TryRecvError::Empty) => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(mpsc::TryRecvError::Disconnected) => break,
                }
            }
        });
    });
    let server_cpu = || {
        let (tx, rx) = mpsc::channel();
        cpu_tx.send(tx).unwrap();
        rx.recv_timeout(Duration::from_secs(10))
            .expect("server thread answers")
    };
    let addr = addr_rx.recv().unwrap();

    let mut idle = Vec::new();
    for _ in 0..IDLE_CONNECTIONS {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => idle.push(s),
            // A full backlog drops SYNs: that client simply waits.
            Err(_) => continue,
        }
    }
    // A slowloris: one header byte at a time, never finishing.
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\n").unwrap();
    let slow_thread = std::thread::spawn(move || {
        for _ in 0..40 {
            if slow.write_all(b"X").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });

    let cpu_before = server_cpu();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let text = scrape(addr).expect("a scrape gets through");
    let took = started.elapsed() - Duration::from_secs(1);
    assert!(
        text.starts_with("HTTP/1.1 200") && text.contains("rsttrace_lost_events_total 0"),
        "{text}"
    );
    assert!(took < Duration::from_secs(2), "scrape took {took:?}");
    let busy = server_cpu() - cpu_before;
    let wall = started.elapsed();
    // An accept loop spinning on EMFILE burns the whole window.
    assert!(
        busy < wall / 4,
        "server thread used {busy:?} of CPU in {wall:?}"
    );
    drop(idle);
    slow_thread.join().unwrap();
}

#[test]
fn unknown_paths_get_404_and_oversized_headers_are_refused() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let shared = std::sync::Arc::new(std::sync::Mutex::new(Metrics::new(5)));
    let addr = rt
        .block_on(serve("127.0.0.1:0".parse().unwrap(), shared))
        .unwrap();
    std::thread::spawn(move || rt.block_on(std::future::pending::<()>()));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let _ = s.write_all(huge.as_bytes());
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    assert!(!text.starts_with("HTTP/1.1 200"), "{text}");
}
