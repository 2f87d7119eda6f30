//! Length-prefixed postcard frames: `len: u32 BE | postcard(T)`.
//!
//! Decoding never trusts the peer: a length over `FRAME_BYTES_MAX` is an
//! error before any allocation, and every decoding failure is a typed error,
//! never a panic (`fuzz/` holds a target that checks exactly that).

use serde::{de::DeserializeOwned, Serialize};
use thiserror::Error;

pub const FRAME_HEADER_BYTES: usize = 4;
/// Largest frame body accepted from a peer.
pub const FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed frame body: {0}")]
    Malformed(#[from] postcard::Error),
    #[error("{extra} unexpected bytes after the frame body")]
    TrailingBytes { extra: usize },
}

pub fn encode_frame<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    encode_frame_max(value, FRAME_BYTES_MAX)
}

/// `encode_frame` with a body limit of `max` bytes (a client connection's
/// frames are bounded tighter than a peer's).
pub fn encode_frame_max<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = postcard::to_extend(value, vec![0u8; FRAME_HEADER_BYTES])?;
    let len = out.len() - FRAME_HEADER_BYTES;
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    out[..FRAME_HEADER_BYTES].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes one frame from the front of `bytes`. Ok(None): need more bytes.
/// On success returns the value and the number of bytes consumed.
pub fn decode_frame<T: DeserializeOwned>(bytes: &[u8]) -> Result<Option<(T, usize)>, CodecError> {
    decode_frame_max(bytes, FRAME_BYTES_MAX)
}

/// `decode_frame` with a body limit of `max` bytes.
pub fn decode_frame_max<T: DeserializeOwned>(
    bytes: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, CodecError> {
    let Some(header) = bytes.get(..FRAME_HEADER_BYTES) else {
        return Ok(None);
    };
    let mut len_bytes = [0u8; FRAME_HEADER_BYTES];
    len_bytes.copy_from_slice(header);
    let len = u32::from_be_bytes(len_bytes) as usize;
    if len > max {
        return Err(CodecError::TooLarge { len, max });
    }
    let Some(body) = bytes.get(FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len) else {
        return Ok(None);
    };
    let (value, rest) = postcard::take_from_bytes(body)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes { extra: rest.len() });
    }
    Ok(Some((value, FRAME_HEADER_BYTES + len)))
}

/// Accumulates bytes from a stream and yields whole frames.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`: frames are consumed by moving
    /// it, and the consumed front is dropped only once it is most of the
    /// buffer (a read holding hundreds of small frames costs no memmoves).
    start: usize,
    max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::with_limit(FRAME_BYTES_MAX)
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Frames of at most `max` bytes; a longer one is an error as soon as
    /// its header is in.
    pub fn with_limit(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            start: 0,
            max,
        }
    }

    /// Changes the limit for the frames to come (a connection's first
    /// frame, before it is authenticated, is held to less).
    pub fn set_limit(&mut self, max: usize) {
        self.max = max;
    }

    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one is buffered. After an error the
    /// stream is out of sync and the connection should be dropped.
    pub fn next_frame<T: DeserializeOwned>(&mut self) -> Result<Option<T>, CodecError> {
        match decode_frame_max(&self.buf[self.start..], self.max)? {
            Some((value, used)) => {
                self.start += used;
                if self.start == self.buf.len() {
                    self.buf.clear();
                    self.start = 0;
                }
                Ok(Some(value))
            }
            None => Ok(None),
        }
    }
}

/// The property the `peer_frame` fuzz target and the corpus replay test
/// check on arbitrary bytes: decoding returns a value, "need more", or a
/// typed error, never a panic; a decoded frame re-encodes to a frame that
/// decodes to the same value and is no longer than the input (postcard
/// accepts overlong varints, so the bytes themselves may differ: harmless,
/// since nothing hashes or signs frame bytes); and the streaming decoder
/// agrees with one-shot decoding.
pub fn check_peer_frame_bytes(data: &[u8]) {
    use crate::raft::Envelope;
    let whole = decode_frame::<Envelope>(data);
    if let Ok(Some((envelope, used))) = &whole {
        let again = match encode_frame(envelope) {
            Ok(bytes) => bytes,
            Err(e) => panic!("a decoded frame does not re-encode: {e}"),
        };
        assert!(
            again.len() <= *used,
            "the canonical encoding is longer than the input"
        );
        match decode_frame::<Envelope>(&again) {
            Ok(Some((back, n))) => assert!(
                back == *envelope && n == again.len(),
                "round trip changed the frame"
            ),
            other => panic!("a re-encoded frame does not decode: {other:?}"),
        }
    }
    let mut streaming = FrameDecoder::new();
    for chunk in data.chunks(7) {
        streaming.extend(chunk);
    }
    let streamed = streaming.next_frame::<Envelope>();
    match (&whole, &streamed) {
        (Ok(Some((a, _))), Ok(Some(b))) => assert_eq!(a, b),
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => {}
        _ => panic!("streaming and one-shot decoding disagree"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::message::VoteResponse;
    use crate::raft::{Envelope, Message};

    struct VoteResponseFixture;
    impl VoteResponseFixture {
        fn envelope() -> Envelope {
            Envelope {
                from: 1,
                to: 2,
                msg: Message::VoteResponse(VoteResponse {
                    term: 7,
                    granted: true,
                }),
            }
        }
    }

    #[test]
    fn round_trip_and_partial_input() {
        let env = VoteResponseFixture::envelope();
        let bytes = encode_frame(&env).unwrap();
        for cut in 0..bytes.len() {
            assert_eq!(
                decode_frame::<Envelope>(&bytes[..cut]).unwrap(),
                None,
                "cut {cut}"
            );
        }
        let (back, used) = decode_frame::<Envelope>(&bytes).unwrap().unwrap();
        assert_eq!(back, env);
        assert_eq!(used, bytes.len());
    }

    #[test]
    fn streaming_decoder_splits_frames() {
        let env = VoteResponseFixture::envelope();
        let mut stream = encode_frame(&env).unwrap();
        stream.extend(encode_frame(&env).unwrap());
        let mut dec = FrameDecoder::new();
        let mut got = Vec::new();
        for chunk in stream.chunks(3) {
            dec.extend(chunk);
            while let Some(m) = dec.next_frame::<Envelope>().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![env.clone(), env]);
    }

    #[test]
    fn hostile_frames_are_errors() {
        let huge = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes();
        assert_eq!(
            decode_frame::<Envelope>(&huge),
            Err(CodecError::TooLarge {
                len: FRAME_BYTES_MAX + 1,
                max: FRAME_BYTES_MAX,
            })
        );
        let garbage = [0, 0, 0, 2, 0xff, 0xff];
        assert!(matches!(
            decode_frame::<Envelope>(&garbage),
            Err(CodecError::Malformed(_))
        ));
        let mut trailing = encode_frame(&Message::VoteResponse(VoteResponse {
            term: 1,
            granted: true,
        }))
        .unwrap();
        trailing.push(0);
        trailing[3] += 1;
        assert!(matches!(
            decode_frame::<Message>(&trailing),
            Err(CodecError::TrailingBytes { extra: 1 })
        ));
    }
}
