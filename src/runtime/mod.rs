//! Production driver (filled in below).
