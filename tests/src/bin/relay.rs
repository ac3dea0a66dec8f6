//! `keelson-relay PORT`: the guestfwd relay. QEMU's user-mode network runs
//! one relay per guest connection (`guestfwd=tcp:IP:PORT-cmd:keelson-relay
//! HOSTPORT`) with stdin and stdout connected to that guest connection; the
//! relay connects to `127.0.0.1:HOSTPORT` and copies bytes both ways until
//! both directions are closed. It never writes diagnostics to stdout or
//! stderr (both may be the guest's socket): failure is its exit status.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(port) = std::env::args().nth(1).and_then(|p| p.parse::<u16>().ok()) else {
        return ExitCode::from(2);
    };
    let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
        return ExitCode::from(1);
    };
    let Ok(mut to_upstream) = upstream.try_clone() else {
        return ExitCode::from(1);
    };
    let guest_to_host = std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let _ = pump(&mut stdin, &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let mut from_upstream = upstream;
    let mut stdout = std::io::stdout().lock();
    let _ = pump(&mut from_upstream, &mut stdout);
    // The host side closed: the guest connection ends with this process
    // (its stdin reader may still block, so do not wait for it).
    drop(guest_to_host);
    ExitCode::SUCCESS
}

/// Copies until end of input, flushing after every chunk (TLS is
/// interactive: nothing may sit in a buffer).
fn pump(from: &mut impl Read, to: &mut impl Write) -> std::io::Result<()> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        to.flush()?;
    }
}
