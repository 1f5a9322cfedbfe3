//! The HTTP/1.x head of a detached event stream, encoded by the server itself (hyper no longer
//! writes this response).

use poem::Response;

/// The HTTP/1.x head of a detached response: its status and headers, chunked on HTTP/1.1,
/// and `Connection: close` (the stream ends with the connection).
pub(super) fn encode_head(resp: &Response, chunked: bool) -> Vec<u8> {
    let status = resp.status();
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(if chunked { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
    head.extend_from_slice(status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "date" | "keep-alive"
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
    head.extend_from_slice(b"\r\n");
    if chunked {
        head.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_heads_say_how_the_body_ends() {
        let resp = || {
            Response::builder()
                .content_type("text/event-stream")
                .header("cache-control", "no-cache")
                .header("content-length", "12")
                .header("connection", "keep-alive")
                .body(())
        };
        let head = String::from_utf8(encode_head(&resp(), true)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(
            head.contains("\r\ncontent-type: text/event-stream\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\ncache-control: no-cache\r\n"), "{head}");
        assert!(!head.contains("content-length"), "{head}");
        assert!(!head.contains("keep-alive"), "{head}");
        assert!(head.contains("\r\ndate: "), "{head}");
        assert!(
            head.ends_with("\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
            "{head}"
        );
        let head = String::from_utf8(encode_head(&resp(), false)).unwrap();
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert!(head.ends_with("\r\nconnection: close\r\n\r\n"), "{head}");
    }
}
