//! zstd compression, and decompression that can never produce more than it was told to expect.
//!
//! Every decompression of untrusted bytes in edgefleet goes through [`decompress_capped`]: a
//! tiny input must not be able to expand into gigabytes (a "zip bomb"). The cap is the size the
//! signed deployment document declares, so anything beyond it is an attack or corruption.

use std::io::{self, Read, Write};

/// Default zstd level for artifacts: a good ratio at a speed the controller does not notice.
pub const DEFAULT_LEVEL: i32 = 9;

/// Why capped decompression failed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    /// The stream would decompress to more than `cap` bytes.
    #[error("decompressed data exceeds the declared {cap} bytes")]
    TooLarge {
        /// The cap.
        cap: u64,
    },
    /// The input is not a valid zstd stream.
    #[error("corrupt zstd stream: {0}")]
    Corrupt(io::Error),
    /// Writing the output failed.
    #[error("cannot write decompressed data: {0}")]
    Write(io::Error),
}

/// Compresses `bytes` with zstd at `level`.
pub fn compress(bytes: &[u8], level: i32) -> io::Result<Vec<u8>> {
    zstd::bulk::compress(bytes, level)
}

/// Compresses a stream into `out`; returns the compressed size.
pub fn compress_stream(input: impl Read, out: impl Write, level: i32) -> io::Result<u64> {
    let mut counting = CountingWriter { inner: out, written: 0 };
    zstd::stream::copy_encode(input, &mut counting, level)?;
    Ok(counting.written)
}

/// Decompresses a zstd stream into `out`, failing as soon as the output would pass `cap` bytes.
/// Returns the number of bytes written.
pub fn decompress_capped(input: impl Read, cap: u64, mut out: impl Write) -> Result<u64, DecompressError> {
    let decoder = zstd::stream::read::Decoder::new(input).map_err(DecompressError::Corrupt)?;
    // Reading one byte past the cap tells "exactly cap" from "more than cap".
    let mut limited = decoder.take(cap.saturating_add(1));
    let mut buf = vec![0u8; 64 * 1024];
    let mut total: u64 = 0;
    loop {
        let n = match limited.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DecompressError::Corrupt(e)),
        };
        total += n as u64;
        if total > cap {
            return Err(DecompressError::TooLarge { cap });
        }
        out.write_all(&buf[..n]).map_err(DecompressError::Write)?;
    }
}

/// Decompresses in memory, capped at `cap` bytes.
pub fn decompress_to_vec(input: &[u8], cap: u64) -> Result<Vec<u8>, DecompressError> {
    let mut out = Vec::new();
    decompress_capped(input, cap, &mut out)?;
    Ok(out)
}

struct CountingWriter<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip_within_cap() {
        let data: Vec<u8> = (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let packed = compress(&data, DEFAULT_LEVEL).expect("compress");
        assert!(packed.len() < data.len() / 4);
        assert_eq!(decompress_to_vec(&packed, data.len() as u64).expect("exact cap"), data);
    }

    #[test]
    fn bomb_beyond_cap_is_refused() {
        let bomb = compress(&vec![0u8; 50 * 1024 * 1024], 19).expect("compress");
        assert!(bomb.len() < 10_000, "50 MiB of zeros packs small: {}", bomb.len());
        let err = decompress_to_vec(&bomb, 1024 * 1024).expect_err("over cap");
        assert!(matches!(err, DecompressError::TooLarge { cap: 1_048_576 }));
    }

    #[test]
    fn garbage_is_corrupt() {
        assert!(matches!(decompress_to_vec(b"not zstd at all", 1000), Err(DecompressError::Corrupt(_))));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), cap in 0u64..100_000) {
            let _ = decompress_to_vec(&bytes, cap);
        }

        #[test]
        fn output_never_exceeds_cap(data in proptest::collection::vec(any::<u8>(), 0..20_000), cap in 0u64..30_000) {
            let packed = compress(&data, 1).expect("compress");
            match decompress_to_vec(&packed, cap) {
                Ok(out) => { prop_assert!(out.len() as u64 <= cap); prop_assert_eq!(out, data); }
                Err(DecompressError::TooLarge { .. }) => prop_assert!(data.len() as u64 > cap),
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
