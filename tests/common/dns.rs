//! A tiny DNS server on loopback UDP for re-resolution tests: it answers
//! `A` queries for any name with the addresses a test sets (or `SERVFAIL`
//! while set to fail), and `AAAA` queries with no records.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Answers {
    addresses: Mutex<Vec<Ipv4Addr>>,
    failing: AtomicBool,
    stop: AtomicBool,
}

/// The DNS server; stops when dropped.
pub struct Dns {
    addr: SocketAddr,
    answers: Arc<Answers>,
}

impl Dns {
    pub fn start(addresses: &[Ipv4Addr]) -> Dns {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind the DNS server");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let addr = socket.local_addr().unwrap();
        let answers = Arc::new(Answers::default());
        *answers.addresses.lock().unwrap() = addresses.to_vec();
        let serving = answers.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !serving.stop.load(Ordering::SeqCst) {
                let Ok((n, from)) = socket.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..n], &serving) {
                    let _ = socket.send_to(&reply, from);
                }
            }
        });
        Dns { addr, answers }
    }

    /// `ip:port`, for `upstream.resolvers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers every name with these addresses from now on.
    pub fn set(&self, addresses: &[Ipv4Addr]) {
        *self.answers.addresses.lock().unwrap() = addresses.to_vec();
    }

    /// Answers `SERVFAIL` while `failing`.
    pub fn fail(&self, failing: bool) {
        self.answers.failing.store(failing, Ordering::SeqCst);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.answers.stop.store(true, Ordering::SeqCst);
    }
}

/// The reply to one query: its question, and an `A` record per address.
fn answer(query: &[u8], answers: &Answers) -> Option<Vec<u8>> {
    // Header (12 bytes), then one question: a name of labels, type, class.
    let mut end = 12;
    while *query.get(end)? != 0 {
        end += 1 + usize::from(query[end]);
    }
    let question = query.get(12..end + 5)?;
    let qtype = u16::from_be_bytes([query[end + 1], query[end + 2]]);
    let failing = answers.failing.load(Ordering::SeqCst);
    let addresses = if qtype == 1 && !failing {
        answers.addresses.lock().unwrap().clone()
    } else {
        Vec::new()
    };
    let mut reply = Vec::with_capacity(512);
    reply.extend_from_slice(&query[..2]);
    reply.extend_from_slice(if failing {
        &[0x81, 0x82]
    } else {
        &[0x81, 0x80]
    });
    reply.extend_from_slice(&[0, 1]);
    reply.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    reply.extend_from_slice(&[0, 0, 0, 0]);
    reply.extend_from_slice(question);
    for address in addresses {
        // A pointer to the question's name, type A, class IN, TTL 1 s.
        reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 1, 0, 4]);
        reply.extend_from_slice(&address.octets());
    }
    Some(reply)
}
