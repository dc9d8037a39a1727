//! The userspace port forwarder of `microvm up` for hypervisors without a user network: a
//! host port's connections (TCP) or datagrams (UDP) are carried to the guest's address on the
//! VM's own tap. No firewall rule is made, so nothing is left behind when the process ends.

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// One forward: what the host listens on, and where in the guest it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forward {
    pub listen: SocketAddr,
    pub target: SocketAddr,
    pub udp: bool,
}

/// How long a connection to the guest may take; the guest may still be booting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the forward's host side now (so a port in use is an error here) and serves it on
/// threads for as long as the process lives.
pub fn spawn(forward: Forward) -> io::Result<()> {
    if forward.udp {
        let socket = UdpSocket::bind(forward.listen)?;
        thread::spawn(move || serve_udp(socket, forward.target));
    } else {
        let listener = TcpListener::bind(forward.listen)?;
        thread::spawn(move || serve_tcp(listener, forward.target));
    }
    Ok(())
}

fn serve_tcp(listener: TcpListener, target: SocketAddr) {
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        thread::spawn(move || {
            // A guest that does not answer closes the client's connection: what a closed
            // port would do.
            let Ok(guest) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = guest.set_nodelay(true);
            let (Ok(client_read), Ok(guest_read)) = (client.try_clone(), guest.try_clone()) else {
                return;
            };
            let upstream = thread::spawn(move || pipe(client_read, guest));
            pipe(guest_read, client);
            let _ = upstream.join();
        });
    }
}

/// Copies until `from` ends, then ends `to`'s writing half, so each direction closes on its own
/// (an HTTP/1.0 client half-closes after its request).
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Each host client gets its own socket towards the guest, whose replies go back to it.
fn serve_udp(socket: UdpSocket, target: SocketAddr) {
    let clients: Arc<Mutex<HashMap<SocketAddr, UdpSocket>>> = Arc::default();
    let mut buffer = vec![0u8; 65536];
    loop {
        let Ok((length, client)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        let mut known = clients.lock().expect("not poisoned");
        let upstream = match known.entry(client) {
            std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::hash_map::Entry::Vacant(entry) => {
                let Some(upstream) = open_upstream(&socket, &clients, client, target) else {
                    continue;
                };
                entry.insert(upstream)
            }
        };
        let _ = upstream.send(&buffer[..length]);
    }
}

/// A socket towards the guest for one host client, with a thread carrying the guest's replies
/// back to that client.
fn open_upstream(
    socket: &UdpSocket,
    clients: &Arc<Mutex<HashMap<SocketAddr, UdpSocket>>>,
    client: SocketAddr,
    target: SocketAddr,
) -> Option<UdpSocket> {
    let unspecified: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let upstream = UdpSocket::bind(unspecified).ok()?;
    upstream.connect(target).ok()?;
    let replies = upstream.try_clone().ok()?;
    let back = socket.try_clone().ok()?;
    let clients = Arc::clone(clients);
    thread::spawn(move || {
        let mut buffer = vec![0u8; 65536];
        // A client quiet for two minutes is forgotten, as conntrack would.
        let _ = replies.set_read_timeout(Some(Duration::from_secs(120)));
        while let Ok(length) = replies.recv(&mut buffer) {
            let _ = back.send_to(&buffer[..length], client);
        }
        clients.lock().expect("not poisoned").remove(&client);
    });
    Some(upstream)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    #[test]
    fn tcp_connections_reach_the_target_both_ways_with_half_close() {
        let guest = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = guest.local_addr().unwrap();
        thread::spawn(move || {
            for stream in guest.incoming() {
                let mut stream = stream.unwrap();
                let mut request = String::new();
                stream.read_to_string(&mut request).unwrap();
                stream
                    .write_all(format!("echo {request}").as_bytes())
                    .unwrap();
            }
        });
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        spawn(Forward {
            listen,
            target,
            udp: false,
        })
        .unwrap();
        for n in 0..3 {
            let mut client = TcpStream::connect(listen).unwrap();
            client.write_all(format!("hello {n}").as_bytes()).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            let mut reply = String::new();
            client.read_to_string(&mut reply).unwrap();
            assert_eq!(reply, format!("echo hello {n}"));
        }
        // A second forward of the same port is refused at once.
        assert!(
            spawn(Forward {
                listen,
                target,
                udp: false
            })
            .is_err()
        );
    }

    #[test]
    fn a_closed_guest_port_closes_the_clients_connection() {
        let target: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        spawn(Forward {
            listen,
            target,
            udp: false,
        })
        .unwrap();
        let mut client = TcpStream::connect(listen).unwrap();
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut reply = Vec::new();
        assert_eq!(client.read_to_end(&mut reply).unwrap(), 0);
    }

    #[test]
    fn udp_datagrams_and_replies_go_to_each_client() {
        let guest = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = guest.local_addr().unwrap();
        thread::spawn(move || {
            let mut buffer = [0u8; 1500];
            loop {
                let (length, from) = guest.recv_from(&mut buffer).unwrap();
                let mut reply = b"re: ".to_vec();
                reply.extend_from_slice(&buffer[..length]);
                guest.send_to(&reply, from).unwrap();
            }
        });
        let listen: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        spawn(Forward {
            listen,
            target,
            udp: true,
        })
        .unwrap();
        for name in ["a", "b"] {
            let client = UdpSocket::bind("127.0.0.1:0").unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            client.send_to(name.as_bytes(), listen).unwrap();
            let mut buffer = [0u8; 64];
            let length = client.recv(&mut buffer).unwrap();
            assert_eq!(&buffer[..length], format!("re: {name}").as_bytes());
        }
    }
}
