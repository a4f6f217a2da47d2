//! A packet's addresses and ports as one chain saw them, read from the headers in a trace event.

use crate::nft::expr;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A packet's addresses and ports as one chain saw them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Headers {
    /// Transport protocol number (6 tcp, 17 udp, 1 icmp, 58 icmpv6, ...).
    pub protocol: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    /// TCP flags (SYN 0x02, ACK 0x10, FIN 0x01, RST 0x04, PSH 0x08).
    pub tcp_flags: Option<u8>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
}

impl Headers {
    /// Decodes an IPv4 or IPv6 header and the transport header after it.
    pub fn decode(network: &[u8], transport: Option<&[u8]>) -> Option<Headers> {
        let (protocol, src, dst) = match network.first()? >> 4 {
            4 if network.len() >= 20 => (
                network[9],
                IpAddr::from(<[u8; 4]>::try_from(&network[12..16]).ok()?),
                IpAddr::from(<[u8; 4]>::try_from(&network[16..20]).ok()?),
            ),
            6 if network.len() >= 40 => (
                network[6],
                IpAddr::from(<[u8; 16]>::try_from(&network[8..24]).ok()?),
                IpAddr::from(<[u8; 16]>::try_from(&network[24..40]).ok()?),
            ),
            _ => return None,
        };
        let th = transport.unwrap_or(&[]);
        let port = |at: usize| th.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
        let ported = matches!(protocol, 6 | 17 | 33 | 132 | 136);
        Some(Headers {
            protocol,
            src,
            dst,
            sport: if ported { port(0) } else { None },
            dport: if ported { port(2) } else { None },
            tcp_flags: if protocol == 6 { th.get(13).copied() } else { None },
            icmp: if matches!(protocol, 1 | 58) { th.get(..2).map(|b| (b[0], b[1])) } else { None },
        })
    }

    fn endpoint(ip: IpAddr, port: Option<u16>) -> String {
        match port {
            Some(p) => SocketAddr::new(ip, p).to_string(),
            None => ip.to_string(),
        }
    }
    pub fn source(&self) -> String {
        Self::endpoint(self.src, self.sport)
    }
    pub fn destination(&self) -> String {
        Self::endpoint(self.dst, self.dport)
    }
}

impl fmt::Display for Headers {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{} {} > {}", expr::proto_name(self.protocol), self.source(), self.destination())?;
        if let Some(fl) = self.tcp_flags {
            let names: Vec<&str> = [(0x02, "SYN"), (0x10, "ACK"), (0x01, "FIN"), (0x04, "RST"), (0x08, "PSH")]
                .iter()
                .filter(|(b, _)| fl & b != 0)
                .map(|(_, n)| *n)
                .collect();
            write!(f, " [{}]", names.join(","))?;
        }
        if let Some((t, c)) = self.icmp {
            write!(f, " [type {t} code {c}]")?;
        }
        Ok(())
    }
}
