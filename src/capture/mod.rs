//! Reading capture files: legacy pcap (any byte order, micro- or nanosecond), pcapng (one link
//! type and timestamp resolution per interface), either of them gzip-compressed, from a file or
//! standard input. The reader hands out [`Frame`]s that borrow its one bounded buffer, so memory
//! does not depend on the size of the file.

mod link_type;
mod timestamp;
mod warnings;

pub use link_type::LinkType;
pub use timestamp::{Duration, Timestamp};
pub use warnings::{Warning, Warnings};

/// A frame number (1-based, as Wireshark numbers them) with its capture time: where every
/// layer above says something happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    pub frame: u64,
    pub ts: Timestamp,
}

use pcap_parser::pcapng::Block;
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{PcapBlockOwned, PcapError};
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The buffer starts here and doubles when a record does not fit, up to [`MAX_RECORD_BYTES`].
const INITIAL_BUFFER_BYTES: usize = 256 * 1024;
/// No legitimate record is this large (BIG TCP super-frames reach a few hundred KB); a length
/// field that claims more is corrupt, and we refuse to allocate for it.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;
/// A pcapng file that describes more interfaces than this is treated as hostile.
const MAX_INTERFACES: usize = 4096;

/// One captured packet record, numbered as Wireshark numbers it (1-based, every record counts).
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub number: u64,
    pub ts: Timestamp,
    pub link_type: LinkType,
    pub data: &'a [u8],
    /// Length on the wire; larger than `data.len()` when the snaplen cut the packet.
    pub orig_len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("{path}: cannot open: {source}")]
    Open { path: String, source: io::Error },
    #[error("{path}: empty file, nothing to analyze")]
    Empty { path: String },
    #[error("{path}: not a pcap or pcapng file (it starts with bytes {magic})")]
    NotACapture { path: String, magic: String },
    #[error("{path}: {reason}")]
    Unreadable { path: String, reason: String },
}

/// Facts about the file itself, filled in while reading.
#[derive(Debug, Default, Clone)]
pub struct CaptureInfo {
    pub format: &'static str,
    pub compressed: bool,
    pub link_types: Vec<LinkType>,
    /// Set when the file ends in the middle of a record, or reading stopped at damage.
    pub truncated: bool,
}

struct Interface {
    link_type: LinkType,
    units_per_sec: u64,
    offset_secs: i64,
    snaplen: u32,
}

pub struct CaptureReader {
    name: String,
    inner: Box<dyn PcapReaderIterator + Send>,
    interfaces: Vec<Interface>,
    legacy_nanos: bool,
    next_frame_number: u64,
    last_ts: Timestamp,
    capacity: usize,
    pub info: CaptureInfo,
    oversized_caplen_frames: u64,
    invalid_ts_frames: u64,
}

/// Makes every `read` fill the caller's buffer unless the stream ends: pcap-parser probes the
/// format on its first read and treats a short read as a broken header, which gzip and pipes
/// routinely produce.
struct FillingReader<R>(R);

impl<R: Read> Read for FillingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.0.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // Hand over what we have; the error comes back on the next call.
                Err(_) if filled > 0 => break,
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

/// Adds the bytes each read returns to a shared counter, for a progress bar. It sits under the
/// 64 KiB `BufReader`, so the counter moves once per buffer, not per packet, and counts the
/// file's own bytes (compressed ones for a .gz), which is what its size on disk totals.
struct CountingReader<R> {
    inner: R,
    counter: Arc<AtomicU64>,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.counter.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    bytes
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl CaptureReader {
    /// Opens a path, or standard input when the path is `-`.
    pub fn open(path: &Path) -> Result<CaptureReader, CaptureError> {
        Self::open_counted(path, None)
    }

    /// Like [`open`](Self::open), adding every byte read from the file (or standard input) to
    /// `progress` when given.
    pub fn open_counted(
        path: &Path,
        progress: Option<Arc<AtomicU64>>,
    ) -> Result<CaptureReader, CaptureError> {
        let name = path.display().to_string();
        let source: Box<dyn Read + Send> = if name == "-" {
            Box::new(io::stdin())
        } else {
            Box::new(
                std::fs::File::open(path).map_err(|source| CaptureError::Open {
                    path: name.clone(),
                    source,
                })?,
            )
        };
        let source = match progress {
            Some(counter) => Box::new(CountingReader {
                inner: source,
                counter,
            }),
            None => source,
        };
        Self::from_read(name, source)
    }

    /// Reads any byte source; the name is only used in messages and reports.
    pub fn from_read(
        name: String,
        source: Box<dyn Read + Send>,
    ) -> Result<CaptureReader, CaptureError> {
        let mut buffered = BufReader::with_capacity(64 * 1024, source);
        let head = buffered.fill_buf().map_err(|source| CaptureError::Open {
            path: name.clone(),
            source,
        })?;
        if head.is_empty() {
            return Err(CaptureError::Empty { path: name });
        }
        let compressed = head.len() >= 2 && head[0] == 0x1f && head[1] == 0x8b;
        let body: Box<dyn Read + Send> = if compressed {
            Box::new(flate2::read::MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let mut body = FillingReader(body);
        // Sniff the decompressed magic ourselves so the error can name what we saw.
        let mut magic = [0u8; 4];
        let got = body
            .read(&mut magic)
            .map_err(|e| CaptureError::Unreadable {
                path: name.clone(),
                reason: format!("cannot decompress: {e}"),
            })?;
        if got == 0 {
            return Err(CaptureError::Empty { path: name });
        }
        let format = match magic {
            [0x0a, 0x0d, 0x0d, 0x0a] => "pcapng",
            [0xd4, 0xc3, 0xb2, 0xa1] | [0xa1, 0xb2, 0xc3, 0xd4] => "pcap",
            [0x4d, 0x3c, 0xb2, 0xa1] | [0xa1, 0xb2, 0x3c, 0x4d] => "pcap-ns",
            [0x34, 0xcd, 0xb2, 0xa1] | [0xa1, 0xb2, 0xcd, 0x34] => "pcap-modified",
            _ => {
                return Err(CaptureError::NotACapture {
                    path: name,
                    magic: hex_prefix(&magic[..got]),
                });
            }
        };
        let replay = io::Cursor::new(magic[..got].to_vec()).chain(body);
        let inner = pcap_parser::create_reader(INITIAL_BUFFER_BYTES, FillingReader(replay))
            .map_err(|e| CaptureError::Unreadable {
                path: name.clone(),
                reason: match e {
                    PcapError::Eof | PcapError::Incomplete(_) | PcapError::UnexpectedEof => {
                        "the file ends inside its header".to_string()
                    }
                    other => format!("unreadable file header ({other:?})"),
                },
            })?;
        Ok(CaptureReader {
            name,
            inner,
            interfaces: Vec::new(),
            legacy_nanos: false,
            next_frame_number: 1,
            last_ts: Timestamp::default(),
            capacity: INITIAL_BUFFER_BYTES,
            info: CaptureInfo {
                format: if format == "pcapng" { "pcapng" } else { "pcap" },
                compressed,
                ..CaptureInfo::default()
            },
            oversized_caplen_frames: 0,
            invalid_ts_frames: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Frames read so far (the next frame's number minus one).
    /// Numbers this file's frames on from `first`: the file continues a capture whose earlier
    /// part was another file (tcpdump's rotated files, `--join`).
    pub fn number_from(&mut self, first: u64) {
        self.next_frame_number = first;
    }

    /// The time of the file's first frame, for putting the parts of a capture in order.
    pub fn first_timestamp(path: &Path) -> Option<Timestamp> {
        let mut reader = Self::open(path).ok()?;
        let mut first = None;
        reader.visit_frames(&mut Warnings::default(), |f| {
            first = Some(f.ts);
            false
        });
        first
    }

    pub fn frames_read(&self) -> u64 {
        self.next_frame_number - 1
    }

    fn note_link_type(&mut self, lt: LinkType) {
        if !self.info.link_types.contains(&lt) {
            self.info.link_types.push(lt);
        }
    }

    /// Calls `visit` with every frame in file order. Damage is reported in `warnings` and ends
    /// reading at that point; everything before it has been delivered.
    pub fn for_each_frame(&mut self, warnings: &mut Warnings, mut visit: impl FnMut(&Frame<'_>)) {
        self.visit_frames(warnings, |f| {
            visit(f);
            true
        })
    }

    /// Like [`for_each_frame`](Self::for_each_frame), stopping after a frame for which
    /// `visit` returns false.
    pub fn visit_frames(
        &mut self,
        warnings: &mut Warnings,
        mut visit: impl FnMut(&Frame<'_>) -> bool,
    ) {
        loop {
            let offset_before = self.inner.consumed();
            match self.inner.next() {
                Ok((len, block)) => {
                    let frame = match block {
                        PcapBlockOwned::LegacyHeader(header) => {
                            self.legacy_nanos = header.is_nanosecond_precision();
                            // The upper bits carry FCS information, not the link type.
                            let lt = LinkType(header.network.0 as u32 & 0xffff);
                            self.interfaces.push(Interface {
                                link_type: lt,
                                units_per_sec: if self.legacy_nanos {
                                    1_000_000_000
                                } else {
                                    1_000_000
                                },
                                offset_secs: 0,
                                snaplen: header.snaplen,
                            });
                            self.note_link_type(lt);
                            None
                        }
                        PcapBlockOwned::Legacy(record) => {
                            let iface = &self.interfaces[0];
                            if iface.snaplen > 0 && record.caplen > iface.snaplen {
                                self.oversized_caplen_frames += 1;
                                if self.oversized_caplen_frames == 1 {
                                    warnings.push(
                                        Some(self.next_frame_number),
                                        format!(
                                            "frame claims {} captured bytes, more than the file's snaplen of {}",
                                            record.caplen, iface.snaplen
                                        ),
                                    );
                                }
                            }
                            let ts = if (record.ts_usec as u64) < iface.units_per_sec {
                                Timestamp::from_parts(
                                    record.ts_sec as i64,
                                    record.ts_usec as u64,
                                    iface.units_per_sec,
                                )
                            } else {
                                // A fraction of a second that is a second or more: the clock
                                // field is corrupt, so keep time still rather than invent it.
                                self.invalid_ts_frames += 1;
                                if self.invalid_ts_frames == 1 {
                                    warnings.push(
                                        Some(self.next_frame_number),
                                        format!("invalid timestamp (fraction {} is a second or more); the previous frame's time is used", record.ts_usec),
                                    );
                                }
                                self.last_ts
                            };
                            Some(Frame {
                                number: 0,
                                ts,
                                link_type: iface.link_type,
                                data: record.data,
                                orig_len: record.origlen.max(record.data.len() as u32),
                            })
                        }
                        PcapBlockOwned::NG(Block::SectionHeader(_)) => {
                            // Interface ids are numbered per section.
                            self.interfaces.clear();
                            None
                        }
                        PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                            if self.interfaces.len() >= MAX_INTERFACES {
                                warnings.push(
                                    None,
                                    format!(
                                        "more than {MAX_INTERFACES} interfaces described; extra ones ignored"
                                    ),
                                );
                            } else {
                                let units_per_sec = ts_units_per_sec(idb.if_tsresol)
                                    .unwrap_or_else(|| {
                                        warnings.push(None, format!("interface {} has an invalid timestamp resolution ({:#04x}); microseconds assumed", self.interfaces.len(), idb.if_tsresol));
                                        1_000_000
                                    });
                                let lt = LinkType(idb.linktype.0 as u32);
                                self.interfaces.push(Interface {
                                    link_type: lt,
                                    units_per_sec,
                                    offset_secs: idb.if_tsoffset,
                                    snaplen: idb.snaplen,
                                });
                                self.note_link_type(lt);
                            }
                            None
                        }
                        PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                            match self.interfaces.get(epb.if_id as usize) {
                                Some(iface) => {
                                    let raw = ((epb.ts_high as u64) << 32) | epb.ts_low as u64;
                                    let units = iface.units_per_sec;
                                    let data =
                                        &epb.data[..(epb.caplen as usize).min(epb.data.len())];
                                    Some(Frame {
                                        number: 0,
                                        ts: Timestamp::from_parts(
                                            ((raw / units) as i64)
                                                .saturating_add(iface.offset_secs),
                                            raw % units,
                                            units,
                                        ),
                                        link_type: iface.link_type,
                                        data,
                                        orig_len: epb.origlen.max(data.len() as u32),
                                    })
                                }
                                None => {
                                    warnings.push(
                                        Some(self.next_frame_number),
                                        format!(
                                            "packet names interface {} that the file never described; skipped",
                                            epb.if_id
                                        ),
                                    );
                                    self.next_frame_number += 1;
                                    None
                                }
                            }
                        }
                        PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                            match self.interfaces.first() {
                                Some(iface) => {
                                    let data =
                                        &spb.data[..(spb.origlen as usize).min(spb.data.len())];
                                    Some(Frame {
                                        number: 0,
                                        // Simple packet blocks carry no time; keep the clock still.
                                        ts: self.last_ts,
                                        link_type: iface.link_type,
                                        data,
                                        orig_len: spb.origlen.max(data.len() as u32),
                                    })
                                }
                                None => {
                                    self.next_frame_number += 1;
                                    None
                                }
                            }
                        }
                        PcapBlockOwned::NG(_) => None,
                    };
                    if let Some(mut frame) = frame {
                        frame.number = self.next_frame_number;
                        self.next_frame_number += 1;
                        self.last_ts = frame.ts;
                        if !visit(&frame) {
                            self.inner.consume_noshift(len);
                            break;
                        }
                    }
                    // Not `consume`: it moves what is left to the front each time the buffer
                    // is half read, copying half the capture a second time. `refill` moves only
                    // the partial record left when the buffer runs out.
                    self.inner.consume_noshift(len);
                }
                Err(PcapError::Eof) => break,
                Err(PcapError::Incomplete(_)) => {
                    if let Err(e) = self.inner.refill().map_err(|e| format!("{e:?}")) {
                        self.stop(warnings, offset_before, format!("read error ({e})"));
                        break;
                    }
                }
                Err(PcapError::BufferTooSmall) => {
                    if self.capacity >= MAX_RECORD_BYTES {
                        self.stop(
                            warnings,
                            offset_before,
                            format!(
                                "record claims more than {} MiB; its length field is corrupt",
                                MAX_RECORD_BYTES / (1024 * 1024)
                            ),
                        );
                        break;
                    }
                    self.capacity = (self.capacity * 2).min(MAX_RECORD_BYTES);
                    if !self.inner.grow(self.capacity) || self.inner.refill().is_err() {
                        self.stop(warnings, offset_before, "cannot grow read buffer".into());
                        break;
                    }
                }
                Err(PcapError::UnexpectedEof) => {
                    self.stop(
                        warnings,
                        offset_before,
                        "file cut in the middle of a record (truncated capture); analyzed up to the cut".into(),
                    );
                    break;
                }
                Err(PcapError::ReadError) => {
                    self.stop(
                        warnings,
                        offset_before,
                        "read error (corrupt compressed data or I/O failure); analyzed up to here"
                            .into(),
                    );
                    break;
                }
                Err(e) => {
                    let reason = match e {
                        PcapError::HeaderNotRecognized => "unrecognized block".to_string(),
                        PcapError::NomError(_, kind) | PcapError::OwnedNomError(_, kind) => {
                            format!("corrupt block ({kind:?} check failed)")
                        }
                        other => format!("{other:?}"),
                    };
                    self.stop(
                        warnings,
                        offset_before,
                        format!("{reason}; the rest of the file is skipped"),
                    );
                    break;
                }
            }
        }
        if self.invalid_ts_frames > 1 {
            warnings.push(
                None,
                format!("{} frames have invalid timestamps", self.invalid_ts_frames),
            );
        }
        if self.oversized_caplen_frames > 1 {
            warnings.push(
                None,
                format!(
                    "{} frames claim more captured bytes than the snaplen",
                    self.oversized_caplen_frames
                ),
            );
        }
    }

    fn stop(&mut self, warnings: &mut Warnings, offset: usize, reason: String) {
        self.info.truncated = true;
        warnings.push(
            None,
            format!(
                "at byte {offset} (after frame {}): {reason}",
                self.next_frame_number - 1
            ),
        );
    }
}

/// pcapng `if_tsresol`: the high bit picks a power of two, otherwise a power of ten.
fn ts_units_per_sec(tsresol: u8) -> Option<u64> {
    let exp = (tsresol & 0x7f) as u32;
    if tsresol & 0x80 != 0 {
        (exp <= 63).then(|| 1u64 << exp)
    } else {
        10u64.checked_pow(exp)
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn legacy_pcap(nanos: bool, big_endian: bool, records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let u32b = |v: u32| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let u16b = |v: u16| {
            if big_endian {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut out = Vec::new();
        out.extend(u32b(if nanos { 0xa1b23c4d } else { 0xa1b2c3d4 }));
        out.extend(u16b(2));
        out.extend(u16b(4));
        out.extend(u32b(0));
        out.extend(u32b(0));
        out.extend(u32b(65535));
        out.extend(u32b(101)); // raw IP
        for (sec, frac, data) in records {
            out.extend(u32b(*sec));
            out.extend(u32b(*frac));
            out.extend(u32b(data.len() as u32));
            out.extend(u32b(data.len() as u32));
            out.extend(*data);
        }
        out
    }

    fn read_all(bytes: Vec<u8>) -> (Vec<(u64, i64, usize)>, Warnings, CaptureInfo) {
        let mut reader =
            CaptureReader::from_read("t.pcap".into(), Box::new(io::Cursor::new(bytes)))
                .expect("readable");
        let mut warnings = Warnings::default();
        let mut seen = Vec::new();
        reader.for_each_frame(&mut warnings, |f| {
            seen.push((f.number, f.ts.0, f.data.len()))
        });
        (seen, warnings, reader.info.clone())
    }

    #[test]
    fn test_legacy_both_byte_orders_and_resolutions() {
        for big in [false, true] {
            let (frames, w, info) =
                read_all(legacy_pcap(false, big, &[(10, 5, b"abc"), (11, 0, b"")]));
            assert_eq!(frames, vec![(1, 10_000_005_000, 3), (2, 11_000_000_000, 0)]);
            assert!(w.is_empty());
            assert_eq!(info.link_types, vec![LinkType(101)]);
            let (frames, _, _) = read_all(legacy_pcap(true, big, &[(10, 5, b"abc")]));
            assert_eq!(frames[0].1, 10_000_000_005);
        }
    }

    #[test]
    fn test_cut_file_keeps_frames_before_cut_and_warns() {
        let mut bytes = legacy_pcap(false, false, &[(1, 0, b"first"), (2, 0, b"second-record")]);
        bytes.truncate(bytes.len() - 4);
        let (frames, w, info) = read_all(bytes);
        assert_eq!(frames.len(), 1);
        assert!(info.truncated);
        assert!(w.iter().any(|w| w.message.contains("cut")), "{w:?}");
    }

    #[test]
    fn test_absurd_caplen_does_not_allocate_and_stops() {
        let mut bytes = legacy_pcap(false, false, &[(1, 0, b"ok")]);
        bytes.extend(1u32.to_le_bytes());
        bytes.extend(0u32.to_le_bytes());
        bytes.extend(0xffff_fff0u32.to_le_bytes());
        bytes.extend(0xffff_fff0u32.to_le_bytes());
        bytes.extend([0u8; 64]);
        let (frames, w, info) = read_all(bytes);
        assert_eq!(frames.len(), 1);
        assert!(info.truncated);
        assert!(!w.is_empty());
    }

    #[test]
    fn test_gzip_detected_by_magic() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&legacy_pcap(false, false, &[(1, 0, b"zipped")]))
            .unwrap();
        let (frames, _, info) = read_all(enc.finish().unwrap());
        assert_eq!(frames.len(), 1);
        assert!(info.compressed);
    }

    #[test]
    fn test_not_a_capture_and_empty_are_errors() {
        let err = CaptureReader::from_read(
            "x".into(),
            Box::new(io::Cursor::new(b"hello world".to_vec())),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("not a pcap"), "{err}");
        let err = CaptureReader::from_read("x".into(), Box::new(io::Cursor::new(Vec::new())))
            .err()
            .unwrap();
        assert!(err.to_string().contains("empty"), "{err}");
    }

    #[test]
    fn test_ts_units_per_sec() {
        assert_eq!(ts_units_per_sec(6), Some(1_000_000));
        assert_eq!(ts_units_per_sec(9), Some(1_000_000_000));
        assert_eq!(ts_units_per_sec(0x8a), Some(1024));
        assert_eq!(ts_units_per_sec(0x7f), None);
    }

    #[test]
    fn test_open_counted_file_read_counts_its_size() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("captures/refused.pcap");
        let counter = Arc::new(AtomicU64::new(0));
        let mut reader = CaptureReader::open_counted(&path, Some(counter.clone())).unwrap();
        reader.for_each_frame(&mut Warnings::default(), |_| {});
        let size = std::fs::metadata(&path).unwrap().len();
        assert_eq!(counter.load(Ordering::Relaxed), size);
    }
}
