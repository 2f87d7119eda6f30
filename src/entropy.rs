//! Randomness from the operating system, for what must never repeat across
//! processes and restarts: session-open nonces and RNG seeds. (Time xor
//! pid repeats across containers started together.)

/// A random u64 from the OS (getrandom(2) on Linux).
pub fn random_u64() -> Result<u64, getrandom::Error> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}
