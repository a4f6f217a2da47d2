//! Just enough HTTP/1.1 for Docker's plugin client: POST requests with a Content-Length body on
//! a unix socket, answered with JSON; connections kept open between requests (Go's client
//! reuses them).

use std::io::{self, BufRead, BufReader, Read, Write};

/// The largest request body accepted (Docker's requests are a few kilobytes).
const MAX_BODY: usize = 1 << 20;
const MAX_HEAD_LINE: usize = 8192;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// The client asked to close the connection after this request.
    pub close: bool,
}

/// Reads one request; None at a clean end of the connection (before a request line).
pub fn read_request<R: BufRead>(r: &mut R) -> io::Result<Option<Request>> {
    let Some(line) = read_line(r)? else { return Ok(None) };
    let mut parts = line.split_whitespace();
    let (Some(method), Some(path), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(bad(format!("malformed request line {line:?}")));
    };
    let mut len = 0usize;
    let mut close = version == "HTTP/1.0";
    loop {
        let Some(h) = read_line(r)? else { return Err(bad("connection closed inside the headers".into())) };
        if h.is_empty() {
            break;
        }
        let Some((name, value)) = h.split_once(':') else { return Err(bad(format!("malformed header {h:?}"))) };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                len = value.parse().map_err(|_| bad(format!("Content-Length {value:?} is not a number")))?;
            }
            "transfer-encoding" if !value.eq_ignore_ascii_case("identity") => {
                return Err(bad(format!("Transfer-Encoding {value} is not supported; send a Content-Length")));
            }
            "connection" => close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    if len > MAX_BODY {
        return Err(bad(format!("a body of {len} bytes is over the {MAX_BODY} accepted")));
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    Ok(Some(Request { method: method.into(), path: path.into(), body, close }))
}

fn read_line<R: BufRead>(r: &mut R) -> io::Result<Option<String>> {
    let mut buf = vec![];
    let n = r.by_ref().take(MAX_HEAD_LINE as u64).read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() != Some(&b'\n') {
        return Err(bad("a request line or header is too long or unterminated".into()));
    }
    let text = String::from_utf8(buf).map_err(|_| bad("a request line or header is not UTF-8".into()))?;
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// Writes one response with a JSON body.
pub fn write_response<W: Write>(w: &mut W, status: u16, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Internal Server Error",
    };
    write!(
        w,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.docker.plugins.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    w.flush()
}

/// Serves one connection: each request's answer from `handle` (status, JSON body), until the
/// client closes it or sends something that is not HTTP (answered 400, then closed).
pub fn serve_connection<S: Read + Write>(
    stream: S,
    mut handle: impl FnMut(&Request) -> (u16, String),
) -> io::Result<()> {
    let mut r = BufReader::new(stream);
    loop {
        let req = match read_request(&mut r) {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                let body = serde_json::json!({ "Err": e.to_string() }).to_string();
                return write_response(r.get_mut(), 400, &body);
            }
            Err(e) => return Err(e),
        };
        let (status, body) = handle(&req);
        write_response(r.get_mut(), status, &body)?;
        if req.close {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_as_go_sends_them_kept_alive() {
        let wire =
            "POST /Plugin.Activate HTTP/1.1\r\nHost: \r\nUser-Agent: Go-http-client/1.1\r\nContent-Length: 0\r\n\
                    Accept: application/vnd.docker.plugins.v1.2+json\r\n\r\n\
                    POST /NetworkDriver.Leave HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
        let mut r = std::io::Cursor::new(wire.as_bytes());
        let a = read_request(&mut r).unwrap().unwrap();
        assert_eq!((a.method.as_str(), a.path.as_str(), a.body.len(), a.close), ("POST", "/Plugin.Activate", 0, false));
        let b = read_request(&mut r).unwrap().unwrap();
        assert_eq!((b.path.as_str(), b.body.as_slice()), ("/NetworkDriver.Leave", b"{}".as_slice()));
        assert_eq!(read_request(&mut r).unwrap(), None);
    }

    #[test]
    fn what_is_not_understood_is_refused() {
        for wire in [
            "garbage\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
        ] {
            let e = read_request(&mut std::io::Cursor::new(wire.as_bytes())).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{wire}");
        }
        // Cut short inside the body: an I/O error, not a request.
        assert!(read_request(&mut std::io::Cursor::new(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\n{}".as_slice()))
            .is_err());
    }

    #[test]
    fn a_response_has_its_length() {
        let mut out = vec![];
        write_response(&mut out, 200, "{}").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\n")
                && text.contains("Content-Length: 2\r\n")
                && text.ends_with("\r\n\r\n{}")
        );
    }
}
