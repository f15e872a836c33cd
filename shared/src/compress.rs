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

/// zstd level for deltas: the gain of a delta is in matching the base, which long-distance
/// matching finds at any level; a high level buys little more and costs time on big models.
pub const DELTA_LEVEL: i32 = 9;

/// The window log that lets a frame reach back over `span` bytes (base and target), within
/// zstd's limits (2^10 to 2^31).
pub fn window_log_for(span: u64) -> u32 {
    let bits = 64 - span.saturating_sub(1).leading_zeros();
    bits.clamp(10, 31)
}

/// Compresses `target` with `base` as zstd's reference prefix (as `zstd --patch-from`): the
/// result is a zstd frame that only a decoder given the same base can read, and that is small
/// when `target` shares most of its bytes with `base` (a fine-tuned model and its parent).
pub fn delta_compress(base: &[u8], target: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::write::Encoder::with_ref_prefix(Vec::new(), level, base)?;
    encoder.window_log(window_log_for(base.len() as u64 + target.len() as u64))?;
    encoder.long_distance_matching(true)?;
    encoder.set_pledged_src_size(Some(target.len() as u64))?;
    encoder.include_contentsize(true)?;
    encoder.write_all(target)?;
    encoder.finish()
}

/// Decompresses a delta made by [`delta_compress`] against `base`, capped like
/// [`decompress_capped`]; the decoder's window is bounded by `base` and `cap`, so a delta cannot
/// make it allocate more than the declared sizes need.
pub fn delta_decompress_capped(
    input: impl Read,
    base: &[u8],
    cap: u64,
    out: impl Write,
) -> Result<u64, DecompressError> {
    let mut decoder = zstd::stream::read::Decoder::with_ref_prefix(io::BufReader::new(input), base)
        .map_err(DecompressError::Corrupt)?;
    decoder.window_log_max(window_log_for(base.len() as u64 + cap)).map_err(DecompressError::Corrupt)?;
    copy_capped(decoder, cap, out)
}

/// Decompresses a zstd stream into `out`, failing as soon as the output would pass `cap` bytes.
/// Returns the number of bytes written.
pub fn decompress_capped(input: impl Read, cap: u64, out: impl Write) -> Result<u64, DecompressError> {
    let decoder = zstd::stream::read::Decoder::new(input).map_err(DecompressError::Corrupt)?;
    copy_capped(decoder, cap, out)
}

fn copy_capped(decoder: impl Read, cap: u64, mut out: impl Write) -> Result<u64, DecompressError> {
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

/// Decompresses in memory, capped at `cap` bytes. One frame that states its size (as
/// [`compress`] writes them) is decompressed in one call into a buffer of exactly that size, with
/// a decompression context this thread keeps (telemetry decodes thousands of small frames a
/// second); anything else streams.
pub fn decompress_to_vec(input: &[u8], cap: u64) -> Result<Vec<u8>, DecompressError> {
    use zstd::zstd_safe;
    let one_frame = zstd_safe::find_frame_compressed_size(input).is_ok_and(|n| n == input.len());
    if let (true, Ok(Some(size))) = (one_frame, zstd_safe::get_frame_content_size(input)) {
        if size > cap {
            return Err(DecompressError::TooLarge { cap });
        }
        thread_local! {
            static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        let mut out = Vec::with_capacity(size as usize);
        CONTEXT.with_borrow_mut(|context| {
            let decompressor = match context {
                Some(d) => d,
                None => context.insert(zstd::bulk::Decompressor::new().map_err(DecompressError::Corrupt)?),
            };
            decompressor.decompress_to_buffer(input, &mut out).map_err(DecompressError::Corrupt)
        })?;
        if out.len() as u64 != size {
            return Err(DecompressError::Corrupt(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the frame states {size} bytes but holds {}", out.len()),
            )));
        }
        return Ok(out);
    }
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

    /// Bytes like a model's weights: a base, a copy with its last tenth changed, and an
    /// unrelated one of the same size.
    fn weights(seed: u32, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).max(1);
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn a_delta_of_a_changed_tail_is_small_and_restores_the_target_exactly() {
        let base = weights(1, 400_000);
        let mut tuned = base.clone();
        tuned[360_000..].copy_from_slice(&weights(2, 40_000));
        let full = compress(&tuned, DEFAULT_LEVEL).expect("full");
        let delta = delta_compress(&base, &tuned, DELTA_LEVEL).expect("delta");
        assert!(delta.len() * 5 < full.len(), "delta {} vs full {}", delta.len(), full.len());
        let mut out = Vec::new();
        delta_decompress_capped(&delta[..], &base, tuned.len() as u64, &mut out).expect("apply");
        assert_eq!(out, tuned);
    }

    #[test]
    fn a_delta_needs_its_base_and_respects_the_cap() {
        let base = weights(1, 100_000);
        let mut tuned = base.clone();
        tuned[..1000].fill(7);
        let delta = delta_compress(&base, &tuned, DELTA_LEVEL).expect("delta");
        let other = weights(3, 100_000);
        let mut out = Vec::new();
        match delta_decompress_capped(&delta[..], &other, tuned.len() as u64, &mut out) {
            Ok(_) => assert_ne!(out, tuned, "another base cannot give the target"),
            Err(e) => assert!(matches!(e, DecompressError::Corrupt(_)), "{e}"),
        }
        let err = delta_decompress_capped(&delta[..], &base, 50_000, std::io::sink()).expect_err("cap");
        assert!(matches!(err, DecompressError::TooLarge { cap: 50_000 }));
        assert!(delta_decompress_capped(&b"garbage"[..], &base, 1000, std::io::sink()).is_err());
        assert_eq!(window_log_for(0), 10);
        assert_eq!(window_log_for(1 << 20), 20);
        assert_eq!(window_log_for((1 << 20) + 1), 21);
        assert_eq!(window_log_for(u64::MAX), 31);
    }

    #[test]
    fn streamed_and_concatenated_frames_take_the_capped_stream() {
        let data: Vec<u8> = (0..50_000u32).flat_map(|i| (i % 97).to_le_bytes()).collect();
        let mut streamed = Vec::new();
        compress_stream(&data[..], &mut streamed, 3).expect("stream");
        assert_eq!(zstd::zstd_safe::get_frame_content_size(&streamed).ok().flatten(), None, "no size stated");
        assert_eq!(decompress_to_vec(&streamed, data.len() as u64).expect("streamed"), data);
        assert!(matches!(decompress_to_vec(&streamed, 1000), Err(DecompressError::TooLarge { cap: 1000 })));
        let mut two = compress(&data, 1).expect("one");
        two.extend(compress(&data, 1).expect("two"));
        let both = decompress_to_vec(&two, 2 * data.len() as u64).expect("two frames");
        assert_eq!(both.len(), 2 * data.len());
        assert!(matches!(decompress_to_vec(&two, data.len() as u64), Err(DecompressError::TooLarge { .. })));
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
