//! The wire protocol between the host and the agent, one request per
//! unix-socket connection.
//!
//! A frame is one type byte, a big-endian `u32` payload length and the
//! payload. The client sends `H` (head, JSON), then any number of `I` (stdin
//! bytes) and one `E` (end of stdin). The agent answers with `S` (http mode:
//! status and headers, JSON), `O`/`R` (stdout/stderr bytes) and, last, `X`
//! (exit report, JSON). Closing the connection before `X` means the caller
//! is gone: the agent then stops the request. So a client keeps its side
//! open after `E` (no half-close) until it has read `X`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, Encoder};

/// The largest payload a frame may carry. Data frames are split well below
/// it; the limit bounds what one peer can make the other buffer.
pub const MAX_PAYLOAD: usize = 1024 * 1024;

/// Data read from a pipe or a body is sent in chunks of at most this size,
/// so a frame is never near [`MAX_PAYLOAD`] and buffers stay small.
pub const CHUNK: usize = 32 * 1024;

const HEADER_LEN: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// `H`: the request head, JSON [`RequestHead`].
    Head,
    /// `I`: stdin bytes.
    Stdin,
    /// `E`: end of stdin, empty payload.
    StdinEnd,
    /// `S`: http mode's response status and headers, JSON [`HttpHead`].
    Http,
    /// `O`: stdout bytes (or the response body in http mode).
    Stdout,
    /// `R`: stderr bytes.
    Stderr,
    /// `X`: the exit report, JSON [`ExitReport`]; always the last frame.
    Exit,
}

impl FrameKind {
    pub fn byte(self) -> u8 {
        match self {
            FrameKind::Head => b'H',
            FrameKind::Stdin => b'I',
            FrameKind::StdinEnd => b'E',
            FrameKind::Http => b'S',
            FrameKind::Stdout => b'O',
            FrameKind::Stderr => b'R',
            FrameKind::Exit => b'X',
        }
    }

    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            b'H' => FrameKind::Head,
            b'I' => FrameKind::Stdin,
            b'E' => FrameKind::StdinEnd,
            b'S' => FrameKind::Http,
            b'O' => FrameKind::Stdout,
            b'R' => FrameKind::Stderr,
            b'X' => FrameKind::Exit,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

impl Frame {
    pub fn new(kind: FrameKind, payload: impl Into<Bytes>) -> Self {
        Frame {
            kind,
            payload: payload.into(),
        }
    }

    /// A frame whose payload is `value` as JSON.
    pub fn json<T: Serialize>(kind: FrameKind, value: &T) -> Result<Self, ProtocolError> {
        let payload = serde_json::to_vec(value).map_err(ProtocolError::Json)?;
        Ok(Frame::new(kind, payload))
    }

    /// The payload read as JSON.
    pub fn parse<T: for<'de> Deserialize<'de>>(&self) -> Result<T, ProtocolError> {
        serde_json::from_slice(&self.payload).map_err(ProtocolError::Json)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("frame payload of {0} bytes exceeds the limit of {MAX_PAYLOAD}")]
    TooLarge(usize),
    #[error("unknown frame type 0x{0:02x}")]
    UnknownKind(u8),
    #[error("unexpected {0:?} frame")]
    Unexpected(FrameKind),
    #[error("malformed JSON payload: {0}")]
    Json(#[source] serde_json::Error),
    #[error("connection closed before the {0} frame")]
    Closed(&'static str),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Decodes and encodes [`Frame`]s; the same codec serves both ends.
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        if src.len() < HEADER_LEN {
            return Ok(None);
        }
        let kind = FrameKind::from_byte(src[0]).ok_or(ProtocolError::UnknownKind(src[0]))?;
        let len = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        if src.len() < HEADER_LEN + len {
            // Reserving the rest up front avoids repeated regrowth while a
            // large frame trickles in; `len` is bounded above.
            src.reserve(HEADER_LEN + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER_LEN);
        let payload = src.split_to(len).freeze();
        Ok(Some(Frame { kind, payload }))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = ProtocolError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        let len = frame.payload.len();
        if len > MAX_PAYLOAD {
            return Err(ProtocolError::TooLarge(len));
        }
        dst.reserve(HEADER_LEN + len);
        dst.put_u8(frame.kind.byte());
        // Fits: len <= MAX_PAYLOAD < u32::MAX.
        dst.put_u32(len as u32);
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

/// The first frame of a request: everything the agent needs to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestHead {
    /// Per-request environment (CGI variables, task id), added to the
    /// agent's own environment; the request's value wins. Exec mode only.
    pub env: Vec<(String, String)>,
    pub method: String,
    pub path: String,
    pub query: String,
    /// End-to-end request headers; http mode forwards them.
    pub headers: Vec<(String, String)>,
    /// The request is stopped and reported `timed_out` after this long.
    pub timeout_ms: u64,
}

/// The response head of a function's HTTP server (http mode).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

/// How a request ended, with what it consumed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitReport {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    pub timed_out: bool,
    pub cpu_ms: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    /// Set when the agent could not run or proxy the request at all.
    pub error: Option<String>,
}

impl ExitReport {
    pub fn failed(message: impl Into<String>) -> Self {
        ExitReport {
            error: Some(message.into()),
            ..ExitReport::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(frame: Frame) -> Frame {
        let mut buf = BytesMut::new();
        FrameCodec.encode(frame, &mut buf).unwrap();
        FrameCodec.decode(&mut buf).unwrap().unwrap()
    }

    #[test]
    fn frames_roundtrip() {
        let frame = Frame::new(FrameKind::Stdin, &b"hello"[..]);
        assert_eq!(roundtrip(frame.clone()), frame);
        let empty = Frame::new(FrameKind::StdinEnd, Bytes::new());
        assert_eq!(roundtrip(empty.clone()), empty);
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut buf = BytesMut::new();
        FrameCodec
            .encode(Frame::new(FrameKind::Stdout, &b"abcdef"[..]), &mut buf)
            .unwrap();
        let mut partial = buf.split_to(7);
        assert!(FrameCodec.decode(&mut partial).unwrap().is_none());
        partial.unsplit(buf);
        let frame = FrameCodec.decode(&mut partial).unwrap().unwrap();
        assert_eq!(&frame.payload[..], b"abcdef");
        assert!(partial.is_empty());
    }

    #[test]
    fn oversized_and_unknown_frames_are_errors() {
        let mut buf = BytesMut::from(&[b'I', 0x00, 0x10, 0x00, 0x01][..]);
        assert!(matches!(
            FrameCodec.decode(&mut buf),
            Err(ProtocolError::TooLarge(_))
        ));
        let mut buf = BytesMut::from(&[b'Z', 0, 0, 0, 0][..]);
        assert!(matches!(
            FrameCodec.decode(&mut buf),
            Err(ProtocolError::UnknownKind(b'Z'))
        ));
        let big = Frame::new(FrameKind::Stdout, vec![0u8; MAX_PAYLOAD + 1]);
        assert!(FrameCodec.encode(big, &mut BytesMut::new()).is_err());
    }

    #[test]
    fn json_payloads_roundtrip() {
        let head = RequestHead {
            env: vec![("REQUEST_METHOD".into(), "POST".into())],
            method: "POST".into(),
            path: "/".into(),
            query: "a=1".into(),
            headers: vec![("content-type".into(), "text/plain".into())],
            timeout_ms: 1000,
        };
        let frame = Frame::json(FrameKind::Head, &head).unwrap();
        assert_eq!(roundtrip(frame).parse::<RequestHead>().unwrap(), head);
    }
}
