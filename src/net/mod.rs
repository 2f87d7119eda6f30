//! Framing shared by every transport: length-prefixed postcard frames.

pub mod codec;
pub mod native;

pub use codec::{
    decode_frame, decode_frame_max, encode_frame, encode_frame_max, CodecError, FrameDecoder,
    FRAME_BYTES_MAX,
};
