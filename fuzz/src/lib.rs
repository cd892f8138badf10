//! Shared parts of s3dock's fuzz targets (see `scripts/fuzz.sh`):
//!
//! - [`CheckingSink`], a [`LayerSink`] that consumes every layer through push's own
//!   `transfer::ingest` (compression detection, hashing, the diff_id on the decompressing
//!   threads with the bomb bound and the gzip/zstd checks) into a discarding sink;
//! - [`read_and_check`], which runs the real archive reader over some bytes and
//!   checks what it returns;
//! - [`build_layout`], which turns the text form of an archive (`@@` parts with
//!   `$NN`/`%NN` digest tokens) into a tar whose digests all match, so mutated
//!   manifests, configs and indexes reach the reader's resolution logic instead of
//!   failing the digest checks.

use anyhow::Result;
use s3dock::archive::{read_archive, LayerEntry, LayerSink, SunkLayer};
use s3dock::codec::{decompressing_reader, detect, Compression, Detected};
use s3dock::model::digest::Digest;
use s3dock::model::image::{build_manifest, layer_compression, parse_document, Document, Layer};
use s3dock::model::reference::Reference;
use s3dock::transfer::ingest;
use std::io::Read;

/// Consumes layers with `push`'s own ingest, minus the store.
#[derive(Default)]
pub struct CheckingSink {
    pub layers: usize,
    pub bytes: u64,
}

impl LayerSink for CheckingSink {
    type Out = Layer;

    fn layer(&mut self, entry: &LayerEntry, data: &mut dyn Read) -> Result<SunkLayer<Layer>> {
        self.layers += 1;
        let (kind, data) = ingest::sniff(entry.size, data)?;
        let got = ingest::ingest(
            entry.path,
            kind,
            data,
            Compression::None,
            0,
            &mut std::io::sink(),
        )?;
        // The reader promises the sink exactly `size` bytes (or an error).
        assert_eq!(
            got.file_size, entry.size,
            "sink got {} bytes for {:?} of {} bytes",
            got.file_size, entry.path, entry.size
        );
        self.bytes += got.file_size;
        Ok(SunkLayer {
            file_digest: got.file_digest,
            diff_id: got.layer.diff_id,
            out: got.layer,
        })
    }
}

/// Runs the archive reader over `data` and checks every promise of a successful read.
/// Errors are fine (hostile input); panics and broken promises are not.
pub fn read_and_check(data: &[u8], platform: &str) -> Result<usize> {
    let mut sink = CheckingSink::default();
    let images = read_archive(data, &mut sink, platform);
    // A compressed archive may expand 200:1 past 256 MiB, no more (decompression bombs),
    // plus one read's worth of slack.
    let bound = (256u64 << 20).max(data.len() as u64 * 200) + (8 << 20);
    assert!(
        sink.bytes <= bound,
        "{} input bytes made {} bytes of layers",
        data.len(),
        sink.bytes
    );
    let images = images?;
    assert!(!images.is_empty(), "a successful read returns an image");
    for img in &images {
        let cfg = &img.config;
        assert_eq!(cfg.digest, Digest::of(&cfg.bytes), "config digest");
        assert_eq!(cfg.diff_ids.len(), img.layers.len(), "layers vs diff_ids");
        for (l, d) in img.layers.iter().zip(&cfg.diff_ids) {
            assert_eq!(l.diff_id, *d, "layer diff_id vs config");
            assert_eq!(l.out.diff_id, *d);
            assert_eq!(l.file_digest, l.out.digest);
        }
        if let Some(m) = &img.manifest {
            assert!(
                matches!(parse_document(m), Ok(Document::Manifest(_))),
                "the kept producer manifest is a manifest"
            );
        }
        // What push does next with the result: names → references, a manifest of our own.
        for n in img.names.iter().chain(&img.ref_names) {
            check_reference(n);
        }
        let layers: Vec<Layer> = img.layers.iter().map(|l| l.out.clone()).collect();
        let built = build_manifest(cfg, &layers).expect("a manifest for a read image");
        let Ok(Document::Manifest(m)) = parse_document(&built) else {
            panic!("our own manifest does not parse back");
        };
        assert_eq!(m.layers().len(), layers.len());
        for (d, l) in m.layers().iter().zip(&layers) {
            assert_eq!(d.size(), l.size);
            assert_eq!(
                layer_compression(d.media_type().as_ref()).ok(),
                Some(l.compression)
            );
        }
    }
    Ok(images.len())
}

/// A reference that parses prints as something that parses to the same reference.
pub fn check_reference(s: &str) {
    if let Ok(r) = Reference::parse(s) {
        let printed = r.to_string();
        let again = Reference::parse(&printed)
            .unwrap_or_else(|e| panic!("{s:?} parsed, printed as {printed:?}, then failed: {e}"));
        assert_eq!(again, r, "{s:?} → {printed:?} does not round-trip");
        assert!(r.tag_or_latest().is_some() || r.digest.is_some());
    }
}

/// One file of the text form.
struct Part {
    kind: u8,
    name: Vec<u8>,
    body: Vec<u8>,
}

/// Most parts a layout may have (token indexes are two digits).
const MAX_PARTS: usize = 100;

/// Parses the text form:
///
/// ```text
/// [gz|zst]            optional first line: wrap the whole archive
/// @@ <kind> <name>    kind f (file), l (symlink), h (hard link), d (directory)
/// <content>           for links, the target
/// @@ f <name>
/// ...
/// ```
///
/// In names and contents, `$NN` stands for the hex sha256 of part NN's content and
/// `%NN` for its diff_id (sha256 after gzip/zstd decompression), both resolved after
/// the part's own tokens: so blobs can be named by, and refer to, their digests.
fn parse_parts(input: &[u8]) -> (Option<Detected>, Vec<Part>) {
    let (wrap, rest) = if let Some(r) = input.strip_prefix(b"gz\n") {
        (Some(Detected::Gzip), r)
    } else if let Some(r) = input.strip_prefix(b"zst\n") {
        (Some(Detected::Zstd), r)
    } else {
        (None, input)
    };
    let mut parts = Vec::new();
    let Some(rest) = rest.strip_prefix(b"@@ ") else {
        return (wrap, parts);
    };
    for chunk in split(rest, b"\n@@ ") {
        if parts.len() == MAX_PARTS {
            break;
        }
        let (head, body) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (&chunk[..i], &chunk[i + 1..]),
            None => (chunk, &[][..]),
        };
        let (kind, name) = match head {
            [k, b' ', name @ ..] => (*k, name),
            [k] => (*k, &[][..]),
            _ => (b'f', head),
        };
        parts.push(Part {
            kind,
            name: name.to_vec(),
            body: body.to_vec(),
        });
    }
    (wrap, parts)
}

fn split<'a>(mut s: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    while let Some(i) = s.windows(sep.len()).position(|w| w == sep) {
        out.push(&s[..i]);
        s = &s[i + sep.len()..];
    }
    out.push(s);
    out
}

/// Digests of parts, resolved on demand; a reference cycle resolves to zeros.
struct Resolver<'a> {
    parts: &'a [Part],
    body: Vec<Option<Vec<u8>>>,
    busy: Vec<bool>,
}

impl Resolver<'_> {
    fn body(&mut self, i: usize) -> Option<&[u8]> {
        if self.body[i].is_none() {
            if self.busy[i] {
                return None;
            }
            self.busy[i] = true;
            let parts = self.parts;
            let b = self.substitute(&parts[i].body);
            self.busy[i] = false;
            self.body[i] = Some(b);
        }
        self.body[i].as_deref()
    }

    fn token(&mut self, sigil: u8, i: usize) -> String {
        if i >= self.parts.len() {
            return "0".repeat(64);
        }
        let Some(b) = self.body(i) else {
            return "0".repeat(64);
        };
        if sigil == b'$' {
            return Digest::of(b).hex();
        }
        // diff_id: sha256 of the decompressed content (bounded: these are small seeds).
        let plain = match decompressing_reader(detect(b), b) {
            Ok(r) => {
                let mut out = Vec::new();
                match r.take(16 << 20).read_to_end(&mut out) {
                    Ok(_) => out,
                    Err(_) => b.to_vec(),
                }
            }
            Err(_) => b.to_vec(),
        };
        Digest::of(&plain).hex()
    }

    fn substitute(&mut self, s: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(s.len());
        let mut i = 0;
        while i < s.len() {
            let c = s[i];
            if (c == b'$' || c == b'%')
                && i + 2 < s.len()
                && s[i + 1].is_ascii_digit()
                && s[i + 2].is_ascii_digit()
            {
                let n = ((s[i + 1] - b'0') * 10 + (s[i + 2] - b'0')) as usize;
                out.extend_from_slice(self.token(c, n).as_bytes());
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        }
        out
    }
}

/// Appends one tar header (with a GNU long-name entry first when a name does not fit).
fn header(out: &mut Vec<u8>, kind: u8, name: &[u8], link: &[u8], size: u64) {
    if name.len() > 100 {
        header(out, b'L', b"././@LongLink", b"", name.len() as u64 + 1);
        data(out, &[name, b"\0"].concat());
    }
    if link.len() > 100 {
        header(out, b'K', b"././@LongLink", b"", link.len() as u64 + 1);
        data(out, &[link, b"\0"].concat());
    }
    let mut h = [0u8; 512];
    let put = |h: &mut [u8; 512], at: usize, len: usize, v: &[u8]| {
        let n = v.len().min(len);
        h[at..at + n].copy_from_slice(&v[..n]);
    };
    put(&mut h, 0, 100, name);
    let mode: &[u8] = if kind == b'5' {
        b"0000755\0"
    } else {
        b"0000644\0"
    };
    put(&mut h, 100, 8, mode);
    put(&mut h, 108, 8, b"0000000\0");
    put(&mut h, 116, 8, b"0000000\0");
    put(&mut h, 124, 12, format!("{size:011o}\0").as_bytes());
    put(&mut h, 136, 12, b"14524471520\0");
    h[156] = kind;
    put(&mut h, 157, 100, link);
    put(&mut h, 257, 8, b"ustar\x0000");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    put(&mut h, 148, 8, format!("{sum:06o}\0 ").as_bytes());
    out.extend_from_slice(&h);
}

fn data(out: &mut Vec<u8>, d: &[u8]) {
    out.extend_from_slice(d);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// Builds the archive the text form describes (see [`parse_parts`]).
pub fn build_layout(input: &[u8]) -> Vec<u8> {
    let (wrap, parts) = parse_parts(input);
    let mut r = Resolver {
        parts: &parts,
        body: vec![None; parts.len()],
        busy: vec![false; parts.len()],
    };
    let mut tar = Vec::new();
    for i in 0..parts.len() {
        let name = r.substitute(&parts[i].name);
        let body = r.body(i).unwrap_or_default().to_vec();
        match parts[i].kind {
            b'l' => header(&mut tar, b'2', &name, &body, 0),
            b'h' => header(&mut tar, b'1', &name, &body, 0),
            b'd' => header(&mut tar, b'5', &name, b"", 0),
            _ => {
                header(&mut tar, b'0', &name, b"", body.len() as u64);
                data(&mut tar, &body);
            }
        }
    }
    tar.extend_from_slice(&[0u8; 1024]);
    match wrap {
        Some(Detected::Gzip) => {
            let mut out = Vec::new();
            s3dock::codec::gzip_parallel(
                &tar[..],
                1,
                2,
                |_| {},
                |b| {
                    out.extend_from_slice(b);
                    Ok(())
                },
            )
            .expect("gzip into memory");
            out
        }
        Some(_) => {
            let mut out = Vec::new();
            s3dock::codec::zstd_stream(
                &tar[..],
                s3dock::codec::Level::Fixed(1),
                1,
                |_| {},
                &mut out,
            )
            .expect("zstd into memory");
            out
        }
        None => tar,
    }
}

/// Platforms the targets ask for (the reader's and `select_platform`'s argument).
pub const PLATFORMS: [&str; 4] = ["linux/amd64", "linux/arm64/v8", "windows/amd64", ""];

/// Every parser of documents and strings that come from archives, stores or users.
pub fn check_documents(data: &[u8]) {
    // A manifest or index, as stored or found in an OCI archive.
    match parse_document(data) {
        Ok(Document::Index(index)) => {
            for p in PLATFORMS {
                if let Ok(d) = s3dock::model::image::select_platform(&index, p) {
                    let _ = s3dock::model::image::our_digest(d.digest());
                }
            }
            for d in index.manifests() {
                let _ = s3dock::model::image::our_digest(d.digest());
            }
        }
        Ok(Document::Manifest(m)) => {
            let _ = s3dock::model::image::our_digest(m.config().digest());
            for l in m.layers() {
                let _ = s3dock::model::image::our_digest(l.digest());
                let _ = layer_compression(l.media_type().as_ref());
            }
        }
        Err(_) => {}
    }
    // An image config.
    if let Ok(cfg) = s3dock::model::image::Config::parse(bytes::Bytes::copy_from_slice(data)) {
        assert_eq!(cfg.digest, Digest::of(data));
        let _ = build_manifest(&cfg, &[]).expect("a manifest for any parsed config");
    }
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    // References, digests and media types.
    check_reference(s);
    if let Ok(d) = s.parse::<Digest>() {
        assert_eq!(d.to_string(), s, "digests are canonical");
    }
    if let Ok(d) = Digest::from_hex(s) {
        assert_eq!(d.hex(), s);
    }
    let _ = layer_compression(s);
    let _ = s3dock::model::reference::validate_name(s);
    // Command-line values.
    let _ = s3dock::model::units::parse_duration(s);
    let _ = s3dock::model::units::parse_size(s);
    if let Ok((v, prefixed)) = s3dock::release::records::parse_version(s) {
        assert_eq!(prefixed, s.starts_with('v'));
        assert!(s.ends_with(&v.to_string()) || !v.build.is_empty());
    }
    let _ = s3dock::release::records::check_env_name(s);
    let _ = s3dock::release::records::stamp_commit(s);
}

/// Prints what the reader made of an input (for `S3DOCK_FUZZ_DEBUG=1` and seed checks).
pub fn debug(what: &str, r: &Result<usize>) {
    if std::env::var_os("S3DOCK_FUZZ_DEBUG").is_some() {
        match r {
            Ok(n) => eprintln!("{what}: OK, {n} image(s)"),
            Err(e) => eprintln!("{what}: refused: {e:#}"),
        }
    }
}
