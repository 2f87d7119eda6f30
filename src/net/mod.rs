//! Framing shared by every transport: length-prefixed postcard frames.

pub mod codec;

pub use codec::{decode_frame, encode_frame, CodecError, FrameDecoder, FRAME_BYTES_MAX};
