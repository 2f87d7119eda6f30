//! The native protocol's frames (docs/NATIVE.md): what the client library
//! and a node say to each other on one persistent connection (inside the
//! API's TLS). Frames are `codec`'s: a 4-byte big-endian length, then a
//! postcard body, `ClientFrame` one way and `ServerFrame` the other.
//!
//! A connection opens with `Hello` (version and credential) answered by
//! `Welcome` (or `Goodbye` and the end). Then the client numbers its calls;
//! many are in flight at once and answers come back in any order, each
//! carrying its call's id. A `Wait` is answered when its grant is applied:
//! the grant is pushed, not polled. `Watch` asks for one push when a
//! session ends (expired or closed), so a client learns it lost its locks
//! at the commit that took them, not at its next renewal.

use crate::actor::NodeId;
use crate::lock::SessionId;
use crate::session::WaitFor;
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks (in `Hello` and `Welcome`).
pub const NATIVE_VERSION: u16 = 1;
/// Largest frame a client may send: a proposal as large as the HTTP API's
/// largest body (1 MiB), plus the frame's own fields.
pub const NATIVE_CALL_FRAME_BYTES_MAX: usize = (1 << 20) + 4096;
/// Largest frame a node sends (an answer as large as the HTTP client
/// reads: a file, a page of sessions).
pub const NATIVE_ANSWER_FRAME_BYTES_MAX: usize = 16 << 20;

/// What a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientFrame {
    /// First, and only first: the version spoken and the bearer string
    /// (`rlk_...`); none with a client certificate or on an insecure node.
    Hello {
        version: u16,
        credential: Option<String>,
    },
    /// A call; `id` is the client's, unique among its calls in flight.
    Call { id: u64, call: NativeCall },
    /// The client no longer wants call `id`'s answer (a wait it gave up):
    /// the node stops working on it. Unknown ids are ignored.
    Cancel { id: u64 },
    /// Push `Ended` once when `session` ends (a session the caller owns;
    /// others are ignored). The connection's oldest watch is dropped past
    /// the node's bound.
    Watch { session: SessionId },
}

/// One call: what `session::ToNode` carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NativeCall {
    /// A postcard `lock::Command`, proposed (the caller's own session
    /// commands only).
    Propose(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A postcard `lock::Query`, read through ReadIndex.
    Read(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A queued acquire's wait for its grant: answered at the grant, or
    /// "not yet" after its `timeout_ms`.
    Wait(WaitFor),
}

/// What a node sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerFrame {
    /// The `Hello` is accepted: this node's id, and the version it speaks.
    Welcome { version: u16, node: NodeId },
    /// The connection ends after this frame: a refused `Hello`, or a
    /// frame that breaks the protocol.
    Goodbye { why: String },
    /// Call `id`'s answer.
    Answer { id: u64, reply: NativeReply },
    /// A watched session ended at log index `index`.
    Ended {
        session: SessionId,
        index: u64,
        expired: bool,
    },
}

/// A node's answer to one call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NativeReply {
    /// The state machine's output: a `Response` or a `QueryAnswer`.
    Output(#[serde(with = "serde_bytes")] Vec<u8>),
    NotLeader(Option<u64>),
    /// Retry, maybe elsewhere; for a proposal the outcome is unknown.
    Unavailable(String),
    /// Refused for good, wherever it is sent (too large, not allowed):
    /// retrying cannot help, and nothing was appended.
    Refused(String),
}

/// Reads whole frames from a stream, with a limit on a frame that may
/// change as a connection goes on (a node holds a connection's first frame
/// to less). Cancel-safe: bytes read are in the decoder before the next
/// await, so `next` may sit in a `select!`.
#[cfg(not(madsim))]
pub struct FrameReader {
    decoder: super::FrameDecoder,
    buf: Vec<u8>,
}

#[cfg(not(madsim))]
#[derive(Debug, thiserror::Error)]
pub enum FrameReadError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(#[from] super::CodecError),
}

#[cfg(not(madsim))]
impl FrameReader {
    /// Frames of at most `frame_bytes_max`, read `read_bytes` at a time.
    pub fn new(frame_bytes_max: usize, read_bytes: usize) -> FrameReader {
        FrameReader {
            decoder: super::FrameDecoder::with_limit(frame_bytes_max),
            buf: vec![0; read_bytes],
        }
    }

    /// New limits for the frames to come.
    pub fn resize(&mut self, frame_bytes_max: usize, read_bytes: usize) {
        self.decoder.set_limit(frame_bytes_max);
        self.buf.resize(read_bytes, 0);
    }

    /// The next frame; None at the end of the stream.
    pub async fn next<T, R>(&mut self, rd: &mut R) -> Result<Option<T>, FrameReadError>
    where
        T: serde::de::DeserializeOwned,
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(Some(frame));
            }
            let n = rd.read(&mut self.buf).await?;
            if n == 0 {
                return Ok(None);
            }
            self.decoder.extend(&self.buf[..n]);
        }
    }
}

/// The property the `native_frame` fuzz target and the corpus replay check
/// on arbitrary bytes, read as a stream of frames from either side: the
/// decoder never panics, stops at the first error, and every frame it
/// yields re-encodes to one that decodes to the same value.
pub fn check_native_frames(data: &[u8]) {
    fn stream<T>(data: &[u8], max: usize)
    where
        T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut decoder = super::FrameDecoder::with_limit(max);
        decoder.extend(data);
        while let Ok(Some(frame)) = decoder.next_frame::<T>() {
            let again = super::encode_frame_max(&frame, max)
                .unwrap_or_else(|e| panic!("{frame:?} does not re-encode: {e}"));
            match super::decode_frame_max::<T>(&again, max) {
                Ok(Some((back, used))) => {
                    assert_eq!(back, frame, "round trip changed the frame");
                    assert_eq!(used, again.len());
                }
                other => panic!("{frame:?} re-encodes to something undecodable: {other:?}"),
            }
        }
    }
    stream::<ClientFrame>(data, NATIVE_CALL_FRAME_BYTES_MAX);
    stream::<ServerFrame>(data, NATIVE_ANSWER_FRAME_BYTES_MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{encode_frame_max, CodecError, FrameDecoder};

    /// One of each frame, as the seed corpus holds them.
    pub(crate) fn samples() -> (Vec<ClientFrame>, Vec<ServerFrame>) {
        let wait = WaitFor {
            session: 7,
            seq: 3,
            lock: "orders".into(),
            timeout_ms: 30_000,
        };
        let client = vec![
            ClientFrame::Hello {
                version: NATIVE_VERSION,
                credential: Some("rlk_0000000000000001_secret".into()),
            },
            ClientFrame::Call {
                id: 1,
                call: NativeCall::Propose(vec![1, 2, 3]),
            },
            ClientFrame::Call {
                id: 2,
                call: NativeCall::Read(vec![4]),
            },
            ClientFrame::Call {
                id: u64::MAX,
                call: NativeCall::Wait(wait),
            },
            ClientFrame::Cancel { id: 2 },
            ClientFrame::Watch { session: 7 },
        ];
        let server = vec![
            ServerFrame::Welcome {
                version: NATIVE_VERSION,
                node: 2,
            },
            ServerFrame::Goodbye { why: "bye".into() },
            ServerFrame::Answer {
                id: 1,
                reply: NativeReply::Output(vec![0, 1]),
            },
            ServerFrame::Answer {
                id: 2,
                reply: NativeReply::NotLeader(Some(3)),
            },
            ServerFrame::Answer {
                id: 3,
                reply: NativeReply::Unavailable("no leader".into()),
            },
            ServerFrame::Answer {
                id: 4,
                reply: NativeReply::Refused("too large".into()),
            },
            ServerFrame::Ended {
                session: 7,
                index: 99,
                expired: true,
            },
        ];
        (client, server)
    }

    #[test]
    fn every_frame_survives_a_stream_split_anywhere() {
        let (client, server) = samples();
        let mut bytes = Vec::new();
        for f in &client {
            bytes.extend(encode_frame_max(f, NATIVE_CALL_FRAME_BYTES_MAX).unwrap());
        }
        for cut in [1, 3, 7, bytes.len()] {
            let mut decoder = FrameDecoder::with_limit(NATIVE_CALL_FRAME_BYTES_MAX);
            let mut got = Vec::new();
            for chunk in bytes.chunks(cut) {
                decoder.extend(chunk);
                while let Some(f) = decoder.next_frame::<ClientFrame>().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, client, "chunks of {cut}");
        }
        for f in &server {
            let bytes = encode_frame_max(f, NATIVE_ANSWER_FRAME_BYTES_MAX).unwrap();
            check_native_frames(&bytes);
        }
    }

    #[test]
    fn a_call_frame_over_the_limit_is_refused_before_its_body_arrives() {
        let len = (NATIVE_CALL_FRAME_BYTES_MAX + 1) as u32;
        let mut decoder = FrameDecoder::with_limit(NATIVE_CALL_FRAME_BYTES_MAX);
        decoder.extend(&len.to_be_bytes());
        assert_eq!(
            decoder.next_frame::<ClientFrame>().unwrap_err(),
            CodecError::TooLarge {
                len: NATIVE_CALL_FRAME_BYTES_MAX + 1,
                max: NATIVE_CALL_FRAME_BYTES_MAX
            }
        );
        let big = ClientFrame::Call {
            id: 1,
            call: NativeCall::Propose(vec![0; NATIVE_CALL_FRAME_BYTES_MAX]),
        };
        assert!(matches!(
            encode_frame_max(&big, NATIVE_CALL_FRAME_BYTES_MAX),
            Err(CodecError::TooLarge { .. })
        ));
    }
}
