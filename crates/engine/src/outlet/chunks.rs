//! HTTP/1.1 chunk framing of a detached stream's frames: each frame one chunk, its size line
//! written without an allocation.

use bytes::Bytes;

/// The size lines of a body's frames, when they go as chunks; one without an allocation.
pub enum SizeLines {
    None,
    One([SizeLine; 1]),
    Many(Vec<SizeLine>),
}

impl SizeLines {
    pub fn of(frames: &[Bytes], chunked: bool) -> Self {
        match frames {
            _ if !chunked => Self::None,
            [frame] => Self::One([SizeLine::new(frame.len())]),
            frames => Self::Many(frames.iter().map(|f| SizeLine::new(f.len())).collect()),
        }
    }

    fn get(&self, i: usize) -> &[u8] {
        match self {
            Self::None => b"",
            Self::One(one) => one[i].as_bytes(),
            Self::Many(many) => many[i].as_bytes(),
        }
    }
}

/// `frames` as the pieces that go on the wire: each one a chunk on HTTP/1.1.
pub fn wire_pieces<'a>(
    frames: &'a [Bytes],
    sizes: &'a SizeLines,
    chunked: bool,
) -> impl Iterator<Item = &'a [u8]> + Clone {
    frames.iter().enumerate().flat_map(move |(i, frame)| {
        let crlf: &[u8] = if chunked { b"\r\n" } else { b"" };
        [sizes.get(i), &frame[..], crlf]
            .into_iter()
            .filter(|piece| !piece.is_empty())
    })
}

/// A chunk's size line, `<len in hex>\r\n`.
pub struct SizeLine {
    bytes: [u8; 18],
    len: usize,
}

impl SizeLine {
    pub fn new(mut n: usize) -> Self {
        let mut digits = [0u8; 16];
        let mut at = digits.len();
        loop {
            at -= 1;
            digits[at] = b"0123456789abcdef"[n & 0xf];
            n >>= 4;
            if n == 0 {
                break;
            }
        }
        let hex = &digits[at..];
        let mut bytes = [0u8; 18];
        bytes[..hex.len()].copy_from_slice(hex);
        bytes[hex.len()..hex.len() + 2].copy_from_slice(b"\r\n");
        Self {
            bytes,
            len: hex.len() + 2,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_lines_are_lowercase_hex() {
        for n in [0usize, 1, 9, 10, 15, 16, 255, 4096, 0xdead_beef, usize::MAX] {
            assert_eq!(SizeLine::new(n).as_bytes(), format!("{n:x}\r\n").as_bytes());
        }
    }
}
