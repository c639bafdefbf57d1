//! PROXY protocol header (placeholder until the encoder lands).

use std::net::SocketAddr;

use crate::config::ProxyProtocol;

/// The header announcing `src` → `dst` to the server.
pub fn header(version: ProxyProtocol, src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    let _ = version;
    let fam = if src.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {fam} {} {} {} {}\r\n",
        src.ip(),
        dst.ip(),
        src.port(),
        dst.port()
    )
    .into_bytes()
}
