//! Byte-level checks for the containers whose cut copies FFmpeg reads without
//! complaint: a WAV file is sized by the file itself, and an MPEG-TS file
//! declares no duration at all. What they do declare (a WAV's data-chunk
//! size, the TS packet size) tells a cut copy from a whole one.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// MPEG-TS packet layouts: (size, offset of the 0x47 sync byte) for plain
/// packets, M2TS/Blu-ray (a 4-byte timecode first) and DVB with Reed-Solomon
/// parity.
const TS_PACKETS: [(u64, u64); 3] = [(188, 0), (192, 4), (204, 0)];
/// Whole packets at the end whose sync bytes must be in place.
const TS_TAIL_PACKETS: u64 = 3;

/// A WAV data chunk whose size is not known when the header is written
/// (streamed to a pipe) carries one of these; nothing can be checked then.
const WAV_UNKNOWN_SIZES: [u32; 2] = [0, u32::MAX];

/// Checks `path`, read by FFmpeg's `demuxer`, for a cut: `Err` with the
/// reason when the file ends before what its own layout declares. Containers
/// other than WAV and MPEG-TS pass (the packet-level checks cover them).
pub fn check(path: &Path, demuxer: &str) -> Result<(), String> {
    let names = |n: &str| demuxer.split(',').any(|d| d == n);
    if names("wav") {
        check_wav(path)
    } else if names("mpegts") {
        check_ts(path)
    } else {
        Ok(())
    }
}

/// The file and its length in bytes.
fn open_sized(path: &Path) -> Result<(File, u64), String> {
    let f = File::open(path).map_err(|e| format!("cannot read it: {e}"))?;
    let len = f
        .metadata()
        .map_err(|e| format!("cannot read its size: {e}"))?
        .len();
    Ok((f, len))
}

/// A whole transport stream ends on a packet boundary: counted back from its
/// end, the last packets' sync bytes are where they belong (a file that
/// starts mid-packet, as captures do, still passes).
fn check_ts(path: &Path) -> Result<(), String> {
    let (mut f, len) = open_sized(path)?;
    let mut sync_at = |at: u64| -> bool {
        let mut b = [0u8; 1];
        f.seek(SeekFrom::Start(at)).is_ok() && f.read_exact(&mut b).is_ok() && b[0] == 0x47
    };
    let whole = TS_PACKETS.iter().any(|&(size, offset)| {
        len >= size
            && (1..=TS_TAIL_PACKETS)
                .take_while(|k| k * size <= len)
                .all(|k| sync_at(len - k * size + offset))
    });
    if whole {
        return Ok(());
    }
    Err(format!(
        "truncated: the file ends inside an MPEG-TS packet (no whole 188-, 192- or 204-byte \
         packets at its end of {len} bytes)"
    ))
}

fn check_wav(path: &Path) -> Result<(), String> {
    let (mut f, len) = open_sized(path)?;
    let mut riff = [0u8; 12];
    if f.read_exact(&mut riff).is_err() || &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        // RF64, Wave64 and the like: FFmpeg's checks are all there is.
        return Ok(());
    }
    // Walk the chunks to `data`; each is an 8-byte header and a body padded
    // to an even length.
    let mut at = 12u64;
    loop {
        let mut header = [0u8; 8];
        if f.seek(SeekFrom::Start(at)).is_err() || f.read_exact(&mut header).is_err() {
            return Err(format!(
                "truncated: the WAV file ends at byte {len} before its data chunk"
            ));
        }
        let size = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        let body = at + 8;
        if &header[0..4] == b"data" {
            if WAV_UNKNOWN_SIZES.contains(&size) {
                return Ok(());
            }
            let held = len.saturating_sub(body);
            if held < u64::from(size) {
                return Err(format!(
                    "truncated: the WAV data chunk declares {size} bytes, the file holds {held}"
                ));
            }
            return Ok(());
        }
        at = body + u64::from(size) + u64::from(size & 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(data_declared: u32, data_held: usize, extra_chunk: bool) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"RIFF");
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(b"WAVE");
        b.extend_from_slice(b"fmt ");
        b.extend_from_slice(&16u32.to_le_bytes());
        b.extend_from_slice(&[0u8; 16]);
        if extra_chunk {
            // An odd-sized chunk: its pad byte must be skipped.
            b.extend_from_slice(b"LIST");
            b.extend_from_slice(&3u32.to_le_bytes());
            b.extend_from_slice(&[1, 2, 3, 0]);
        }
        b.extend_from_slice(b"data");
        b.extend_from_slice(&data_declared.to_le_bytes());
        b.extend(std::iter::repeat_n(0u8, data_held));
        b
    }

    fn check_bytes(name: &str, bytes: &[u8], demuxer: &str) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        check(&p, demuxer)
    }

    #[test]
    fn a_wav_holding_its_declared_data_passes_and_a_cut_one_does_not() {
        check_bytes("a.wav", &wav(1000, 1000, false), "wav").unwrap();
        check_bytes("a.wav", &wav(1000, 1000, true), "wav").unwrap();
        let e = check_bytes("a.wav", &wav(1000, 999, true), "wav").unwrap_err();
        assert!(e.contains("declares 1000 bytes, the file holds 999"), "{e}");
        // Streamed WAVs declare no size; a cut inside the headers is a cut.
        check_bytes("a.wav", &wav(u32::MAX, 10, false), "wav").unwrap();
        let head = wav(1000, 0, true);
        let e = check_bytes("a.wav", &head[..30], "wav").unwrap_err();
        assert!(e.contains("before its data chunk"), "{e}");
    }

    /// `n` packets of `size` bytes with the sync byte at `offset`, the
    /// rest of each packet zero.
    fn ts(size: usize, offset: usize, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; size * n];
        for k in 0..n {
            b[k * size + offset] = 0x47;
        }
        b
    }

    #[test]
    fn a_transport_stream_must_end_with_whole_packets() {
        for (size, offset) in TS_PACKETS {
            let (size, offset) = (size as usize, offset as usize);
            check_bytes("a.ts", &ts(size, offset, 5), "mpegts").unwrap();
            // Starting mid-packet is fine; ending mid-packet is not.
            check_bytes("a.ts", &ts(size, offset, 5)[100..], "mpegts").unwrap();
            let cut = ts(size, offset, 5);
            let e = check_bytes("a.ts", &cut[..cut.len() - 100], "mpegts").unwrap_err();
            assert!(e.contains("inside an MPEG-TS packet"), "{e}");
        }
        let e = check_bytes("a.ts", &[0u8; 100], "mpegts").unwrap_err();
        assert!(e.contains("inside an MPEG-TS packet"), "{e}");
        // Other demuxers are not judged by these rules.
        check_bytes("a.mp4", &[0; 100], "mov,mp4,m4a,3gp,3g2,mj2").unwrap();
    }
}
