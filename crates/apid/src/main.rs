//! `apid`: the network-facing gateway of the machine API (mTLS, role check
//! from the client certificate, audit line per call, forwarding to init's
//! unix socket). A supervised service: it may crash and be restarted; PID 1
//! never parses network input. Filled in by the API issue.

fn main() {
    eprintln!("apid: the machine API gateway is not built yet");
    std::process::exit(2);
}
