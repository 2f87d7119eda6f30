//! The HTTP API (actix-web, JSON), served by every node: locks, sessions,
//! fenced files, cluster status and health. Routes follow kgantsov/dlock's
//! (`/API/v1/locks/{name}`) and extend them. Any node answers any request:
//! writes are forwarded to the leader inside Raft, reads use ReadIndex.
//! See docs/API.md.

mod acquire;
mod api;
pub mod auth;
pub mod client;
mod error;
mod gateway_task;
mod metrics;
mod native;
pub mod openapi;
mod peer;
mod responses;
mod stream;

pub use crate::gateway::{NATIVE_WAIT_MS_MAX, TTL_MS_DEFAULT, WAIT_MS_MAX};
pub use api::{
    check_request_body, serve, serve_with_native, HttpConfig, BODY_BYTES_MAX, HTTP_WORKERS,
};
pub use error::{ApiError, RETRY_AFTER_S};
pub use native::NativeReply;
pub use stream::{
    StreamError, NATIVE_CALLS_PER_CONNECTION_MAX, NATIVE_CONNECTIONS_MAX, NATIVE_HELLO_TIMEOUT_MS,
    NATIVE_WATCHES_PER_CONNECTION_MAX,
};
