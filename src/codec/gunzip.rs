//! Streaming multi-member gzip decoding fed arbitrary slices: raw deflate behind
//! our own header/trailer parser.

use anyhow::{bail, Result};
use flate2::Status;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum GzState {
    /// Before a member's header: the start, or after a member's trailer.
    Header,
    Body,
    Trailer,
}

/// Multi-member gzip (RFC 1952) as raw deflate behind our own header/trailer parser.
pub(super) struct GzipDecoder {
    state: GzState,
    /// A header split across fed chunks.
    pending: Vec<u8>,
    trailer: [u8; 8],
    trailer_len: usize,
    inflate: flate2::Decompress,
    member_out: u64,
    /// CRC-32 of the member's plain bytes: docker checks it ("crc32 mismatch") even
    /// though sha256 covers the content, so an archive we write must pass it too.
    crc: crc32fast::Hasher,
    members: u64,
}

/// Longer headers (a huge FEXTRA, file name or comment) are refused.
const MAX_GZIP_HEADER: usize = 1 << 20;

/// The length of the gzip member header at the start of `b`, or None if `b` ends first.
fn gzip_header_len(b: &[u8]) -> Result<Option<usize>> {
    if b.len() < 10 {
        if !b.is_empty() && b[0] != 0x1f || b.len() > 1 && b[1] != 0x8b {
            bail!("not a gzip stream (bad magic bytes)");
        }
        return Ok(None);
    }
    if b[0] != 0x1f || b[1] != 0x8b {
        bail!("not a gzip stream (bad magic bytes)");
    }
    if b[2] != 8 {
        bail!("gzip compression method {} is not deflate", b[2]);
    }
    let flags = b[3];
    if flags & 0xe0 != 0 {
        bail!("gzip header has reserved flags set ({flags:#04x})");
    }
    let mut n = 10;
    if flags & 0x04 != 0 {
        // FEXTRA: XLEN then XLEN bytes.
        let Some(x) = b.get(n..n + 2) else {
            return Ok(None);
        };
        n += 2 + u16::from_le_bytes([x[0], x[1]]) as usize;
    }
    for flag in [0x08, 0x10] {
        // FNAME, FCOMMENT: zero-terminated.
        if flags & flag != 0 {
            match b.get(n..).and_then(|s| s.iter().position(|&c| c == 0)) {
                Some(z) => n += z + 1,
                None => return Ok(None),
            }
        }
    }
    if flags & 0x02 != 0 {
        n += 2; // FHCRC
    }
    Ok((n <= b.len()).then_some(n))
}

impl GzipDecoder {
    pub(super) fn new() -> Self {
        GzipDecoder {
            state: GzState::Header,
            pending: Vec::new(),
            trailer: [0; 8],
            trailer_len: 0,
            inflate: flate2::Decompress::new(false),
            member_out: 0,
            crc: crc32fast::Hasher::new(),
            members: 0,
        }
    }

    /// Parses a header from `pending` + `avail`: Some(bytes of `avail` it used),
    /// or None once all of `avail` is kept in `pending` for the next call.
    fn parse_split(
        &mut self,
        avail: &[u8],
        parse: impl Fn(&[u8]) -> Result<Option<usize>>,
    ) -> Result<Option<usize>> {
        let before = self.pending.len();
        let parsed = if before == 0 {
            parse(avail)?
        } else {
            let take = avail.len().min(MAX_GZIP_HEADER + 1 - before);
            self.pending.extend_from_slice(&avail[..take]);
            parse(&self.pending)?
        };
        match parsed {
            Some(n) => {
                self.pending.clear();
                Ok(Some(n - before))
            }
            None => {
                if before == 0 {
                    self.pending
                        .extend_from_slice(&avail[..avail.len().min(MAX_GZIP_HEADER + 1)]);
                }
                if self.pending.len() > MAX_GZIP_HEADER {
                    bail!("gzip header longer than {MAX_GZIP_HEADER} bytes");
                }
                Ok(None)
            }
        }
    }

    pub(super) fn run(&mut self, input: &[u8], out: &mut [u8]) -> Result<(usize, usize)> {
        let mut used = 0;
        loop {
            let avail = &input[used..];
            match self.state {
                GzState::Header | GzState::Trailer if avail.is_empty() => return Ok((used, 0)),
                GzState::Header => match self.parse_split(avail, gzip_header_len)? {
                    Some(n) => {
                        used += n;
                        self.state = GzState::Body;
                    }
                    None => return Ok((input.len(), 0)),
                },
                GzState::Trailer => {
                    let take = (8 - self.trailer_len).min(avail.len());
                    self.trailer[self.trailer_len..self.trailer_len + take]
                        .copy_from_slice(&avail[..take]);
                    self.trailer_len += take;
                    used += take;
                    if self.trailer_len < 8 {
                        return Ok((used, 0));
                    }
                    self.trailer_len = 0;
                    let t = &self.trailer;
                    let crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
                    let actual = std::mem::take(&mut self.crc).finalize();
                    if crc != actual {
                        bail!("gzip trailer CRC-32 is {crc:#010x} but the member's data has {actual:#010x}");
                    }
                    let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
                    if isize != self.member_out as u32 {
                        bail!(
                            "gzip trailer says {isize} bytes (mod 2^32) but the member decompressed to {}",
                            self.member_out
                        );
                    }
                    self.members += 1;
                    self.member_out = 0;
                    self.state = GzState::Header;
                }
                GzState::Body => {
                    let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
                    let st = self
                        .inflate
                        .decompress(avail, out, flate2::FlushDecompress::None)
                        .map_err(|e| anyhow::anyhow!("invalid deflate data in gzip stream: {e}"))?;
                    let c = (self.inflate.total_in() - in0) as usize;
                    let p = (self.inflate.total_out() - out0) as usize;
                    used += c;
                    self.member_out += p as u64;
                    self.crc.update(&out[..p]);
                    if st == Status::StreamEnd {
                        self.state = GzState::Trailer;
                        self.inflate.reset(false);
                    }
                    if p > 0 || self.state == GzState::Body {
                        return Ok((used, p));
                    }
                }
            }
        }
    }

    pub(super) fn check_end(&self) -> Result<()> {
        match self.state {
            GzState::Header if self.pending.is_empty() && self.members > 0 => Ok(()),
            GzState::Header if self.pending.is_empty() => bail!("empty gzip stream"),
            _ => bail!("truncated gzip stream"),
        }
    }
}
